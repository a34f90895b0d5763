"""The enrollment service's gRPC servicer: samples by key in, templates out.

Enroll embeds each sample (SFace) and adds the embeddings to the class's encrypted template.
Samples without a usable face are skipped; none at all is the outcome NotEnoughSamples, not a
gRPC error. Where a sample's embedding comes from, cheapest first:

1. a PrepareSample for it in this process, still running (awaited, not repeated) or done in
   the last minutes (kept in memory until used); the gateway asks for one at upload, so the
   embedding is computed while the client sends its next sample;
2. with ``BWS_SHARE_ANALYSES`` on, ``{key}.emb`` stored by a PrepareSample on another replica,
   else the aligned crop the upload inspection stored beside the sample (``{key}.face``);
3. the sample itself, decoded and detected here.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from bws import images, logs
from bws.bcid import Bcid, valid_partition
from bws.faces import (
    ENCODERS,
    Encoder,
    FaceAnalysis,
    FaceDetector,
    FaceEmbedder,
    align_face,
    aligned_from_bytes,
    aligned_from_png,
    aligned_to_png,
    embedding_from_bytes,
    embedding_to_bytes,
)
from bws.recent import RecentSamples
from bws.service import EnginePool, SharedAnalyses, guarded, rpc_context, serve
from bws.settings import EnrollSettings, redacted
from bws.storage import ObjectStore, analysis_key, embedding_key
from bws.v1 import common_pb2, enrollment_pb2, enrollment_pb2_grpc
from enroll_service.matching import IndexCache, centroid, score
from enroll_service.templates import Read, Template, TemplateStore

log = logging.getLogger(__name__)


@dataclass
class EnrollEngine:
    """The models one worker uses."""

    detector: FaceDetector
    embedder: FaceEmbedder

    @classmethod
    def load(cls, encoder: Encoder) -> EnrollEngine:
        return cls(FaceDetector(), FaceEmbedder(encoder))


NO_USABLE_FACE = common_pb2.JobError(error_code="NotEnoughSamples", message="No sample holds a usable face.")
Embedded = tuple[np.ndarray, np.ndarray | None]  # a sample's embedding, and its aligned face when at hand


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def template_status(class_id: str, template: Template | None, thumbnails: int = 0) -> enrollment_pb2.TemplateStatus:
    if template is None:
        return enrollment_pb2.TemplateStatus(class_id=class_id, available=False)
    return enrollment_pb2.TemplateStatus(
        class_id=class_id,
        available=True,
        enrolled=_timestamp(template.created),
        updated=_timestamp(template.updated),
        enrolled_images=len(template.embeddings),
        encoder_name=template.encoder_name,
        encoder_version=template.encoder_version,
        tags=template.tags,
        thumbnails_stored=thumbnails,
    )


class EnrollmentServicer(enrollment_pb2_grpc.EnrollmentServiceServicer):
    def __init__(self, settings: EnrollSettings, store: ObjectStore, pool: EnginePool[EnrollEngine]) -> None:
        self.settings = settings
        self.store = store
        self.encoder = ENCODERS[settings.encoder_version]
        self.templates = TemplateStore(store, settings.template_key, self.encoder, settings.template_read_keys)
        self.indexes = IndexCache(store, self.templates, settings.index_snapshot_min_classes,
                                  settings.index_snapshot_every_changes)
        self.pool = pool
        self._preparing: dict[str, asyncio.Task[np.ndarray | None]] = {}  # sample key -> PrepareSample
        self.recent: RecentSamples[Embedded] = RecentSamples()  # embeddings prepared in the last minutes
        self.shared = SharedAnalyses(store, settings.storage.share_analyses)

    async def _class_id(self, class_id: str, context: grpc.aio.ServicerContext) -> str:
        if Bcid.parse_canonical(class_id) is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "class_id must look like storage/partition/classid (name, numbers 0..2^63-1)")
        return class_id

    async def Enroll(self, request: enrollment_pb2.EnrollRequest,
                     context: grpc.aio.ServicerContext) -> enrollment_pb2.EnrollReply:
        with rpc_context(context):
            class_id = await self._class_id(request.class_id, context)
            return await guarded(context, self._enroll(class_id, list(request.samples)))

    async def PrepareSample(self, request: enrollment_pb2.PrepareSampleRequest,
                            context: grpc.aio.ServicerContext) -> enrollment_pb2.PrepareSampleReply:
        with rpc_context(context):
            return await guarded(context, self._prepare(request.sample.key, request.aligned_face))

    async def _prepare(self, key: str, aligned_face: bytes) -> enrollment_pb2.PrepareSampleReply:
        if key not in self._preparing:
            if not self.pool.has_idle_worker:  # ahead-of-time work never waits in front of calls
                return enrollment_pb2.PrepareSampleReply(prepared=False)
            task = asyncio.create_task(self._prepare_embedding(key, aligned_from_bytes(aligned_face)))
            self._preparing[key] = task
            task.add_done_callback(lambda _: self._preparing.pop(key, None))
        embedding = await asyncio.shield(self._preparing[key])
        return enrollment_pb2.PrepareSampleReply(prepared=embedding is not None)

    async def _prepare_embedding(self, key: str, crop: np.ndarray | None) -> np.ndarray | None:
        if crop is None:
            blob = await self.shared.fetch(analysis_key(key))
            if blob is None:
                return None
            crop = FaceAnalysis.from_bytes(blob).aligned
        [(embedding, _)] = await self.pool.run(self._embed_all, [crop], [])
        self.recent.put(key, (embedding, crop))
        self.shared.offer(embedding_key(key), lambda: embedding_to_bytes(embedding, self.encoder),
                          "a sample's embedding")
        log.info("prepared the embedding of a sample")
        return embedding

    async def _prepared(self, key: str) -> Embedded | None:
        """The embedding a PrepareSample made (or is making) for the sample, if any."""
        task = self._preparing.get(key)
        if task is not None:
            try:
                await asyncio.shield(task)
            except Exception:  # it failed (busy, storage): the caller embeds the sample itself
                return None
        found = self.recent.get(key, consume=True)
        if found is None:
            blob = await self.shared.fetch(embedding_key(key))
            embedding = None if blob is None else embedding_from_bytes(blob, self.encoder)
            found = None if embedding is None else (embedding, None)
        return found

    async def _embeddings(self, samples: list[common_pb2.SampleRef]) -> list[Embedded]:
        """One embedding per sample that holds a usable face (see the module docstring), with
        the aligned face it was computed from where that is at hand.

        What is kept in memory for the samples goes: a call is their last use (Verify with
        autoenroll adds the embeddings it has to the template itself).
        """
        prepared = await asyncio.gather(*(self._prepared(s.key) for s in samples))
        embedded = [e for e in prepared if e is not None]
        unprepared = [s for s, e in zip(samples, prepared, strict=True) if e is None]
        if not unprepared:
            return embedded
        analyses = await asyncio.gather(*(self.shared.fetch(analysis_key(s.key)) for s in unprepared))
        missing = [s for s, a in zip(unprepared, analyses, strict=True) if a is None]
        blobs = await asyncio.gather(*(asyncio.to_thread(self.store.get, s.key) for s in missing))
        crops = [FaceAnalysis.from_bytes(a).aligned for a in analyses if a is not None]
        return embedded + await self.pool.run(self._embed_all, crops, blobs)

    async def _enroll(self, class_id: str, samples: list[common_pb2.SampleRef]) -> enrollment_pb2.EnrollReply:
        embedded, read = await asyncio.gather(self._embeddings(samples),
                                              asyncio.to_thread(self.templates.read, class_id))
        existing = read[0]
        upgrade = await self._upgrade_of(class_id, existing)
        if not embedded and not upgrade:
            log.info("enroll: no usable face in %d sample(s)", len(samples))
            thumbnails = len(await asyncio.to_thread(self.templates.thumbnails, class_id)) if existing else 0
            return enrollment_pb2.EnrollReply(
                status=common_pb2.JOB_STATUS_SUCCEEDED,
                performed_action=(enrollment_pb2.ENROLLMENT_ACTION_ENROLLMENT_FAILED if samples
                                  else enrollment_pb2.ENROLLMENT_ACTION_NONE),
                errors=[NO_USABLE_FACE] if samples else [],
                template_status=template_status(class_id, existing, thumbnails),
            )
        template, before = await self._add_to_template(class_id, embedded, upgrade, read)
        thumbnails = await self._keep_thumbnails(class_id, embedded, new_class=before is None)
        if before is None:
            action = enrollment_pb2.ENROLLMENT_ACTION_NEW_TEMPLATE_CREATED
        elif not self.templates.is_current(before) and upgrade:
            action = enrollment_pb2.ENROLLMENT_ACTION_TEMPLATE_UPGRADED
        elif not self.templates.is_current(before):  # nothing to upgrade from: made anew
            action = enrollment_pb2.ENROLLMENT_ACTION_NEW_TEMPLATE_CREATED
        else:
            action = enrollment_pb2.ENROLLMENT_ACTION_TEMPLATE_UPDATED
        log.info("enroll: %d of %d sample(s) added, %s", len(embedded), len(samples),
                 enrollment_pb2.EnrollmentAction.Name(action))
        return enrollment_pb2.EnrollReply(
            status=common_pb2.JOB_STATUS_SUCCEEDED, performed_action=action, enrolled_images=len(embedded),
            template_status=template_status(class_id, template, thumbnails),
        )

    async def _upgrade_of(self, class_id: str, existing: Template | None) -> list[np.ndarray]:
        """A template of another encoder, embedded again from its thumbnails (none: nothing to do)."""
        if existing is None or self.templates.is_current(existing):
            return []
        stored = await asyncio.to_thread(self.templates.thumbnails, class_id)
        crops = [crop for crop in (aligned_from_png(t.png) for t in stored) if crop is not None]
        return [embedding for embedding, _ in await self.pool.run(self._embed_all, crops, [])] if crops else []

    async def _keep_thumbnails(self, class_id: str, embedded: list[Embedded], new_class: bool = False) -> int:
        """Store the aligned faces of the enrolled samples with the template; how many it has."""
        crops = [crop for _, crop in embedded if crop is not None]
        if not self.settings.store_thumbnails:
            return 0
        if not crops:
            return len(await asyncio.to_thread(self.templates.thumbnails, class_id))
        return await asyncio.to_thread(self.templates.add_thumbnails, class_id, [aligned_to_png(c) for c in crops],
                                       self.settings.max_template_images, new_class)

    async def _add_to_template(self, class_id: str, embedded: list[Embedded], upgraded: list[np.ndarray] | None = None,
                               read: Read | None = None) -> tuple[Template, Template | None]:
        """Add embeddings to the class's template (created when new); returns it and the
        template as it was before (None when there was none). ``read``: as just read."""
        template, before = await asyncio.to_thread(
            self.templates.add, class_id, [e for e, _ in embedded], self.settings.max_template_images, upgraded, read
        )
        await asyncio.to_thread(self.indexes.record_change, class_id)
        return template, before

    def _embed_all(self, engine: EnrollEngine, crops: list[np.ndarray], blobs: list[bytes | None]) -> list[Embedded]:
        embedded: list[Embedded] = [(engine.embedder.embed_aligned(crop), crop) for crop in crops]
        for data in blobs:
            if data is None:
                continue
            try:
                image = images.decode(data)
            except images.InvalidImage:
                continue
            faces = engine.detector.detect(image, min_face_size=self.settings.min_face_size_px)
            if faces:
                crop = align_face(image, faces[0])
                embedded.append((engine.embedder.embed_aligned(crop), crop))
        return embedded

    async def GetTemplateStatus(self, request: enrollment_pb2.GetTemplateStatusRequest,
                                context: grpc.aio.ServicerContext) -> enrollment_pb2.GetTemplateStatusReply:
        with rpc_context(context):
            class_id = await self._class_id(request.class_id, context)
            template, thumbnails = await guarded(context, asyncio.gather(
                asyncio.to_thread(self.templates.get, class_id),
                asyncio.to_thread(self.templates.thumbnails, class_id)))
            status = template_status(class_id, template, len(thumbnails))
            if template is not None and request.with_thumbnails:
                status.thumbnails.extend(enrollment_pb2.Thumbnail(enrolled=_timestamp(t.enrolled), png=t.png)
                                         for t in thumbnails)
            return enrollment_pb2.GetTemplateStatusReply(template_status=status)

    async def DeleteTemplate(self, request: enrollment_pb2.DeleteTemplateRequest,
                             context: grpc.aio.ServicerContext) -> enrollment_pb2.DeleteTemplateReply:
        with rpc_context(context):
            class_id = await self._class_id(request.class_id, context)
            deleted = await guarded(context, asyncio.to_thread(self.templates.delete, class_id))
            if deleted:
                await guarded(context, asyncio.to_thread(self.indexes.record_change, class_id))
            log.info("delete template: %s", "deleted" if deleted else "none")
            return enrollment_pb2.DeleteTemplateReply(deleted=deleted)

    async def SetTemplateTags(self, request: enrollment_pb2.SetTemplateTagsRequest,
                              context: grpc.aio.ServicerContext) -> enrollment_pb2.SetTemplateTagsReply:
        with rpc_context(context):
            class_id = await self._class_id(request.class_id, context)
            template = await guarded(context, asyncio.to_thread(self.templates.set_tags, class_id, list(request.tags)))
            if template is not None:
                await guarded(context, asyncio.to_thread(self.indexes.record_change, class_id))
            return enrollment_pb2.SetTemplateTagsReply(found=template is not None)

    async def Verify(self, request: enrollment_pb2.VerifyRequest,
                     context: grpc.aio.ServicerContext) -> enrollment_pb2.VerifyReply:
        with rpc_context(context):
            class_id = await self._class_id(request.class_id, context)
            return await guarded(context, self._verify(class_id, list(request.samples), request.autoenroll))

    async def _verify(self, class_id: str, samples: list[common_pb2.SampleRef],
                      autoenroll: bool) -> enrollment_pb2.VerifyReply:
        threshold = self.settings.match_threshold
        template, embedded = await asyncio.gather(asyncio.to_thread(self.templates.get, class_id),
                                                  self._embeddings(samples))
        embeddings = [e for e, _ in embedded]
        if template is None:
            return enrollment_pb2.VerifyReply(
                status=common_pb2.JOB_STATUS_SUCCEEDED, threshold=threshold,
                errors=[common_pb2.JobError(error_code="NoTemplateAvailable",
                                            message=f"No template exists for {class_id}.")],
            )
        if not self.templates.is_current(template):  # its vectors and ours cannot be compared
            return enrollment_pb2.VerifyReply(status=common_pb2.JOB_STATUS_SUCCEEDED, threshold=threshold,
                                              errors=[_outdated(template)])
        if not embeddings:
            return enrollment_pb2.VerifyReply(status=common_pb2.JOB_STATUS_SUCCEEDED, threshold=threshold,
                                              errors=[NO_USABLE_FACE])
        similarity = score(centroid(embeddings), centroid(template.matrix()))
        verified = similarity >= threshold
        # Never the class id or the score: biometric outcomes per person stay out of routine logs.
        log.info("verify: %d sample(s) compared, %s", len(embeddings), "recognized" if verified else "not recognized")
        if verified and autoenroll:  # the embeddings at hand, not computed again in a second call
            await self._add_to_template(class_id, embedded)
            await self._keep_thumbnails(class_id, embedded)
        return enrollment_pb2.VerifyReply(status=common_pb2.JOB_STATUS_SUCCEEDED, verified=verified,
                                          score=similarity, threshold=threshold, enrolled=verified and autoenroll)

    async def CompareSamples(self, request: enrollment_pb2.CompareSamplesRequest,
                             context: grpc.aio.ServicerContext) -> enrollment_pb2.CompareSamplesReply:
        with rpc_context(context):
            return await guarded(context, self._compare(list(request.probes), request.reference))

    async def _compare(self, probes: list[common_pb2.SampleRef],
                       reference: common_pb2.SampleRef) -> enrollment_pb2.CompareSamplesReply:
        probed, referred = await asyncio.gather(self._embeddings(probes), self._embeddings([reference]))
        if not probed or not referred:
            return enrollment_pb2.CompareSamplesReply(status=common_pb2.JOB_STATUS_SUCCEEDED, errors=[NO_USABLE_FACE])
        similarity = score(centroid([e for e, _ in probed]), referred[0][0])
        level = sum(1 for threshold in self.settings.photo_level_thresholds if similarity >= threshold)
        log.info("compare: %d sample(s) with a reference, level %s", len(probed), "reached" if level else "none")
        return enrollment_pb2.CompareSamplesReply(status=common_pb2.JOB_STATUS_SUCCEEDED, score=similarity,
                                                  level=level)

    async def Search(self, request: enrollment_pb2.SearchRequest,
                     context: grpc.aio.ServicerContext) -> enrollment_pb2.SearchReply:
        with rpc_context(context):
            if not valid_partition(request.storage, request.partition) or not 0 <= request.top_k <= 100:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    "storage must be a name, partition >= 0 and top_k 0..100")
            return await guarded(context, self._search(request))

    async def _search(self, request: enrollment_pb2.SearchRequest) -> enrollment_pb2.SearchReply:
        threshold = self.settings.match_threshold
        embeddings = [e for e, _ in await self._embeddings(list(request.samples))]
        if not embeddings:
            return enrollment_pb2.SearchReply(status=common_pb2.JOB_STATUS_SUCCEEDED, threshold=threshold,
                                              errors=[NO_USABLE_FACE])
        matches, searched, outdated = await asyncio.to_thread(
            self.indexes.search, request.storage, request.partition, centroid(embeddings),
            request.top_k or 10, -1.0 if request.include_non_matches else threshold, list(request.tags),
        )
        log.info("search %s/%d: %d match(es) among %d", request.storage, request.partition, len(matches), searched)
        return enrollment_pb2.SearchReply(
            status=common_pb2.JOB_STATUS_SUCCEEDED, threshold=threshold, searched_templates=searched,
            outdated_templates=outdated,
            matches=[enrollment_pb2.Match(class_id=c, score=s) for c, s in matches],
        )


def _outdated(template: Template) -> common_pb2.JobError:
    return common_pb2.JobError(
        error_code="DifferentFeatureVersions",
        message=f"The template was made by encoder version {template.encoder_version}, which this service no "
                "longer compares; enrolling the class (with or without images) upgrades it from its thumbnails, "
                "or makes it anew from the images when it has none.")


async def main() -> None:
    logs.setup("enroll_service")
    settings = EnrollSettings.from_env()
    log.info("settings: %s", redacted(settings))
    store = ObjectStore(settings.storage)
    encoder = ENCODERS[settings.encoder_version]
    pool: EnginePool[EnrollEngine] = EnginePool(lambda: EnrollEngine.load(encoder), settings.workers,
                                                settings.max_queue)
    servicer = EnrollmentServicer(settings, store, pool)
    await serve(
        "enroll_service",
        settings.listen,
        lambda server: enrollment_pb2_grpc.add_EnrollmentServiceServicer_to_server(servicer, server),
        [enrollment_pb2.DESCRIPTOR.services_by_name["EnrollmentService"].full_name],
        pool.warm,
        store,
        settings.metrics_listen,
    )
    await servicer.shared.writes.finish()  # results computed before the stop are kept
    pool.close()
