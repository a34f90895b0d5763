"""The liveness service's gRPC servicer: samples (sent along, or read by key) in, the engine's findings out.

The servicer only translates: protobuf in, plain functions (``inspection``, ``liveness``)
on a model worker, protobuf out. Expected outcomes (no face, not live, challenge not met)
are results in the reply; gRPC errors are for faults (storage down, overload).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import grpc

from bws import images, logs
from bws.faces import Face, FaceAnalysis, FaceDetector, FaceLandmarker, FaceMesh, align_face
from bws.metrics import LIVENESS_DECISIONS
from bws.recent import RecentSamples
from bws.service import EnginePool, SharedAnalyses, guarded, rpc_context, serve
from bws.settings import LivenessSettings, redacted
from bws.storage import ObjectStore, analysis_key
from bws.v1 import common_pb2, liveness_pb2, liveness_pb2_grpc
from liveness_service import inspection, liveness, video

log = logging.getLogger(__name__)


@dataclass
class LivenessEngine:
    """The models one worker uses."""

    detector: FaceDetector
    landmarker: FaceLandmarker

    @classmethod
    def load(cls) -> LivenessEngine:
        return cls(FaceDetector(), FaceLandmarker())

    def close(self) -> None:
        self.landmarker.close()


def _error(code: str, message: str) -> common_pb2.JobError:
    return common_pb2.JobError(error_code=code, message=message)


def _face_box(face: Face) -> common_pb2.FaceBox:
    x, y, w, h = face.box
    left, right = sorted(face.landmarks[:2].tolist())  # the two eyes, by x
    return common_pb2.FaceBox(x=x, y=y, width=w, height=h, score=face.score,
                              eye_on_left=common_pb2.Point(x=left[0], y=left[1]),
                              eye_on_right=common_pb2.Point(x=right[0], y=right[1]))


_INSPECTION_MESSAGES = {
    "NoFaceFound": "No face was found in the image.",
    "MultipleFacesFound": "More than one face was found in the image.",
}


class LivenessServicer(liveness_pb2_grpc.LivenessServiceServicer):
    def __init__(self, settings: LivenessSettings, store: ObjectStore, pool: EnginePool[LivenessEngine]) -> None:
        self.settings = settings
        self.store = store
        self.pool = pool
        self.recent: RecentSamples[FaceAnalysis] = RecentSamples()  # inspections of the last minutes
        self.shared = SharedAnalyses(store, settings.storage.share_analyses)

    async def InspectSample(self, request: liveness_pb2.InspectSampleRequest,
                            context: grpc.aio.ServicerContext) -> liveness_pb2.InspectSampleReply:
        with rpc_context(context):
            return await guarded(context, self._inspect(request.sample.key, request.data, not request.skip_landmarks))

    async def _inspect(self, key: str, data: bytes | None, landmarks: bool) -> liveness_pb2.InspectSampleReply:
        if not data:  # not sent along: read it from storage
            data = await asyncio.to_thread(self.store.get, key)
        if data is None:
            return liveness_pb2.InspectSampleReply(
                status=common_pb2.JOB_STATUS_FAULTED,
                errors=[_error("InvalidSampleData", "The sample is not in storage.")],
            )
        reply, analysis = await self.pool.run(self._inspect_bytes, data, landmarks)
        if analysis is not None:
            self.recent.put(key, analysis)
            reply.aligned_face = analysis.aligned.tobytes()
            # This replica answers from memory; another one finds the inspection in the store
            # (when shared) or computes the mesh again from the sample (slower, same result).
            self.shared.offer(analysis_key(key), analysis.to_bytes, "a sample's inspection")
        return reply

    def _inspect_bytes(self, engine: LivenessEngine, data: bytes,
                       landmarks: bool) -> tuple[liveness_pb2.InspectSampleReply, FaceAnalysis | None]:
        """The reply, and for an accepted sample what later steps can reuse (mesh, aligned crop);
        without ``landmarks`` no mesh (the call checks no liveness)."""
        try:
            image = images.decode(data)
        except images.InvalidImage as error:
            return liveness_pb2.InspectSampleReply(
                status=common_pb2.JOB_STATUS_SUCCEEDED,
                errors=[_error("InvalidSampleData", str(error))],
            ), None
        result = inspection.inspect(image, engine.detector, self.settings.min_face_size_px)
        reply = liveness_pb2.InspectSampleReply(
            status=common_pb2.JOB_STATUS_SUCCEEDED,
            accepted=result.accepted,
            warnings=list(result.warnings),
            image_width=image.shape[1],
            image_height=image.shape[0],
        )
        if result.error_code:
            reply.errors.append(_error(result.error_code, _INSPECTION_MESSAGES[result.error_code]))
        analysis = None
        if result.face is not None:
            reply.face.CopyFrom(_face_box(result.face))
            if result.accepted:
                analysis = FaceAnalysis(face=result.face, aligned=align_face(image, result.face),
                                        mesh=engine.landmarker.mesh(image, result.face) if landmarks else None,
                                        landmarked=landmarks)
        log.info("inspected sample: accepted=%s errors=%s warnings=%s",
                 result.accepted, result.error_code, list(result.warnings))
        return reply, analysis

    async def CheckLiveness(self, request: liveness_pb2.CheckLivenessRequest,
                            context: grpc.aio.ServicerContext) -> liveness_pb2.CheckLivenessReply:
        with rpc_context(context):
            return await guarded(context, self._check(request))

    async def _analysis(self, key: str) -> FaceAnalysis | None:
        """The inspection of a sample: from memory when this replica made it, else as shared by another."""
        analysis = self.recent.get(key, consume=True)  # a sample serves one call
        if analysis is None:
            blob = await self.shared.fetch(analysis_key(key))
            analysis = FaceAnalysis.from_bytes(blob) if blob else None
        return analysis

    async def _check(self, request: liveness_pb2.CheckLivenessRequest) -> liveness_pb2.CheckLivenessReply:
        samples = sorted(request.samples, key=lambda s: s.index)
        analyses = list(await asyncio.gather(*(self._analysis(s.key) for s in samples)))
        missing = [i for i, a in enumerate(analyses) if a is None or not a.landmarked]
        if missing:  # not inspected at upload (POST /livedetection), by another replica, or without a mesh
            blobs = await asyncio.gather(*(asyncio.to_thread(self.store.get, samples[i].key) for i in missing))
            known = [analyses[i] for i in missing]
            for i, analysis in zip(missing, await self.pool.run(self._analyze_all, blobs, known), strict=True):
                analyses[i] = analysis
        meshes: list[FaceMesh | None] = [a.mesh if a else None for a in analyses]
        decision = liveness.decide(
            meshes,
            [s.tag for s in samples],
            expected_directions=list(request.challenge_directions) or None,
            mirrored=self.settings.mirrored_frames,
            thresholds=self.settings.thresholds,
        )
        LIVENESS_DECISIONS.labels(decision.error_code or "Live").inc()
        log.info("liveness: live=%s challenge_met=%s error=%s usable=%d/%d",
                 decision.live, decision.challenge_met, decision.error_code,
                 sum(m is not None for m in meshes), len(meshes))
        reply = liveness_pb2.CheckLivenessReply(
            status=common_pb2.JOB_STATUS_SUCCEEDED,
            live=decision.live and decision.challenge_met is not False,
            challenge_met=bool(decision.challenge_met),
            liveness_score=decision.score,
            usable_samples=sum(m is not None for m in meshes),
            pairs=[
                liveness_pb2.PairEvidence(
                    index=p.index, second_index=p.second, motion=p.motion, planarity_residual=p.planarity_residual,
                    rigid_ratio=p.rigid_ratio, yaw_delta=p.yaw_delta, pitch_delta=p.pitch_delta, turn=p.turn,
                    expected_direction=p.expected_direction,
                    direction_followed=bool(p.direction_followed), live=p.live,
                )
                for p in decision.pairs
            ],
        )
        for sample, analysis in zip(samples, analyses, strict=True):
            if analysis is not None:
                cues = inspection.texture_cues(analysis.aligned)
                reply.samples.append(liveness_pb2.SampleEvidence(
                    index=sample.index, sharpness=cues.sharpness, moire_score=cues.moire_score,
                    brightness=cues.brightness))
        if decision.error_code:
            reply.errors.append(_error(decision.error_code, decision.message))
        return reply

    async def CheckVideoLiveness(self, request: liveness_pb2.CheckVideoLivenessRequest,
                                 context: grpc.aio.ServicerContext) -> liveness_pb2.CheckVideoLivenessReply:
        with rpc_context(context):
            return await guarded(context, self._check_video(request.key))

    async def _check_video(self, key: str) -> liveness_pb2.CheckVideoLivenessReply:
        data = await asyncio.to_thread(self.store.get, key)
        if data is None:
            return liveness_pb2.CheckVideoLivenessReply(status=common_pb2.JOB_STATUS_FAULTED,
                                                        errors=[_error("InvalidVideo", "The video is not in storage.")])
        return await self.pool.run(self._judge_video, data)

    def _judge_video(self, engine: LivenessEngine, data: bytes) -> liveness_pb2.CheckVideoLivenessReply:
        reply = liveness_pb2.CheckVideoLivenessReply(status=common_pb2.JOB_STATUS_SUCCEEDED)
        try:
            seen = video.judge(data, engine.detector, engine.landmarker, min_face_size=self.settings.min_face_size_px,
                               mirrored=self.settings.mirrored_frames, thresholds=self.settings.thresholds)
        except video.InvalidVideo as error:
            reply.errors.append(_error("InvalidVideo", str(error)))
            return reply
        for index, (frame, face) in enumerate(zip(seen.frames, seen.faces, strict=True)):
            taken = reply.frames.add(frame_number=frame.number, used=index in seen.used)
            if face is not None:
                taken.face.CopyFrom(_face_box(face))
        if seen.decision is None:
            reply.errors.append(_error("FailureToAcquire", f"{len(seen.used)} of the {len(seen.frames)} frames "
                                                           "taken from the video hold one usable face; at least 2 "
                                                           "are needed."))
            return reply
        LIVENESS_DECISIONS.labels(seen.decision.error_code or "Live").inc()
        reply.live, reply.liveness_score = seen.decision.live, seen.decision.score
        if seen.decision.error_code:
            reply.errors.append(_error(seen.decision.error_code, seen.decision.message))
        log.info("video liveness: live=%s frames=%d used=%d", seen.decision.live, len(seen.frames), len(seen.used))
        return reply

    def _analyze_all(self, engine: LivenessEngine, blobs: Sequence[bytes | None],
                     known: Sequence[FaceAnalysis | None]) -> list[FaceAnalysis | None]:
        """What the upload inspection finds in each sample; None where it is missing, undecodable
        or faceless. Where an inspection without the mesh is ``known``, only the mesh is added."""
        return [self._analyze(engine, data, analysis) for data, analysis in zip(blobs, known, strict=True)]

    def _analyze(self, engine: LivenessEngine, data: bytes | None, known: FaceAnalysis | None) -> FaceAnalysis | None:
        if data is None:
            return None
        try:
            image = images.decode(data)
        except images.InvalidImage:
            return None
        if known is not None:  # inspected without the mesh: its face is found already
            return replace(known, mesh=engine.landmarker.mesh(image, known.face), landmarked=True)
        faces = engine.detector.detect(image, min_face_size=self.settings.min_face_size_px)
        if not faces:
            return None
        return FaceAnalysis(face=faces[0], aligned=align_face(image, faces[0]),
                            mesh=engine.landmarker.mesh(image, faces[0]))


async def main() -> None:
    logs.setup("liveness_service")
    settings = LivenessSettings.from_env()
    log.info("settings: %s", redacted(settings))
    store = ObjectStore(settings.storage)
    pool: EnginePool[LivenessEngine] = EnginePool(LivenessEngine.load, settings.workers, settings.max_queue)
    servicer = LivenessServicer(settings, store, pool)
    await serve(
        "liveness_service",
        settings.listen,
        lambda server: liveness_pb2_grpc.add_LivenessServiceServicer_to_server(servicer, server),
        [liveness_pb2.DESCRIPTOR.services_by_name["LivenessService"].full_name],
        pool.warm,
        store,
        settings.metrics_listen,
    )
    await servicer.shared.writes.finish()  # results computed before the stop are kept
    pool.close()
