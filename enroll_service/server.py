"""The enrollment service's gRPC servicer: samples by key in, templates out.

Enroll reads each sample from storage, finds the largest face (YuNet), embeds it (SFace) and
adds the embeddings to the class's encrypted template. Samples without a usable face are
skipped; none at all is the outcome NotEnoughSamples, not a gRPC error.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from bws import images, logs
from bws.faces import FaceDetector, FaceEmbedder
from bws.service import EnginePool, guarded, rpc_context, serve
from bws.settings import EnrollSettings, redacted
from bws.storage import ObjectStore
from bws.v1 import common_pb2, enrollment_pb2, enrollment_pb2_grpc
from enroll_service.templates import CLASS_ID, Template, TemplateStore

log = logging.getLogger(__name__)


@dataclass
class EnrollEngine:
    """The models one worker uses."""

    detector: FaceDetector
    embedder: FaceEmbedder

    @classmethod
    def load(cls) -> EnrollEngine:
        return cls(FaceDetector(), FaceEmbedder())


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def template_status(class_id: str, template: Template | None) -> enrollment_pb2.TemplateStatus:
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
    )


class EnrollmentServicer(enrollment_pb2_grpc.EnrollmentServiceServicer):
    def __init__(self, settings: EnrollSettings, store: ObjectStore, pool: EnginePool[EnrollEngine]) -> None:
        self.settings = settings
        self.store = store
        self.templates = TemplateStore(store, settings.template_key)
        self.pool = pool

    async def _class_id(self, class_id: str, context: grpc.aio.ServicerContext) -> str:
        if not CLASS_ID.match(class_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "class_id must look like storage/partition/classid")
        return class_id

    async def Enroll(self, request: enrollment_pb2.EnrollRequest,
                     context: grpc.aio.ServicerContext) -> enrollment_pb2.EnrollReply:
        with rpc_context(context):
            class_id = await self._class_id(request.class_id, context)
            return await guarded(context, self._enroll(class_id, list(request.samples)))

    async def _enroll(self, class_id: str, samples: list[common_pb2.SampleRef]) -> enrollment_pb2.EnrollReply:
        blobs = await asyncio.gather(*(asyncio.to_thread(self.store.get, s.key) for s in samples))
        embeddings = await self.pool.run(self._embed_all, blobs)
        if not embeddings:
            log.info("enroll %s: no usable face in %d sample(s)", class_id, len(samples))
            return enrollment_pb2.EnrollReply(
                status=common_pb2.JOB_STATUS_SUCCEEDED,
                performed_action=enrollment_pb2.ENROLLMENT_ACTION_ENROLLMENT_FAILED,
                errors=[common_pb2.JobError(error_code="NotEnoughSamples",
                                            message="No sample holds a usable face.")],
                template_status=template_status(class_id, await asyncio.to_thread(self.templates.get, class_id)),
            )
        template, created = await asyncio.to_thread(
            self.templates.add, class_id, embeddings, self.settings.max_template_images
        )
        log.info("enroll %s: %d of %d sample(s) added, template %s", class_id, len(embeddings),
                 len(samples), "created" if created else "updated")
        return enrollment_pb2.EnrollReply(
            status=common_pb2.JOB_STATUS_SUCCEEDED,
            performed_action=(enrollment_pb2.ENROLLMENT_ACTION_NEW_TEMPLATE_CREATED if created
                              else enrollment_pb2.ENROLLMENT_ACTION_TEMPLATE_UPDATED),
            enrolled_images=len(embeddings),
            template_status=template_status(class_id, template),
        )

    def _embed_all(self, engine: EnrollEngine, blobs: list[bytes | None]) -> list[np.ndarray]:
        embeddings = []
        for data in blobs:
            if data is None:
                continue
            try:
                image = images.decode(data)
            except images.InvalidImage:
                continue
            faces = engine.detector.detect(image, min_face_size=self.settings.min_face_size_px)
            if faces:
                embeddings.append(engine.embedder.embed(image, faces[0]))
        return embeddings

    async def GetTemplateStatus(self, request: enrollment_pb2.GetTemplateStatusRequest,
                                context: grpc.aio.ServicerContext) -> enrollment_pb2.GetTemplateStatusReply:
        with rpc_context(context):
            class_id = await self._class_id(request.class_id, context)
            template = await guarded(context, asyncio.to_thread(self.templates.get, class_id))
            return enrollment_pb2.GetTemplateStatusReply(template_status=template_status(class_id, template))

    async def DeleteTemplate(self, request: enrollment_pb2.DeleteTemplateRequest,
                             context: grpc.aio.ServicerContext) -> enrollment_pb2.DeleteTemplateReply:
        with rpc_context(context):
            class_id = await self._class_id(request.class_id, context)
            deleted = await guarded(context, asyncio.to_thread(self.templates.delete, class_id))
            log.info("delete template %s: %s", class_id, "deleted" if deleted else "none")
            return enrollment_pb2.DeleteTemplateReply(deleted=deleted)


async def main() -> None:
    logs.setup("enroll_service")
    settings = EnrollSettings.from_env()
    log.info("settings: %s", redacted(settings))
    store = ObjectStore(settings.storage)
    pool: EnginePool[EnrollEngine] = EnginePool(EnrollEngine.load, settings.workers, settings.max_queue)
    servicer = EnrollmentServicer(settings, store, pool)
    await serve(
        "enroll_service",
        settings.listen,
        lambda server: enrollment_pb2_grpc.add_EnrollmentServiceServicer_to_server(servicer, server),
        [enrollment_pb2.DESCRIPTOR.services_by_name["EnrollmentService"].full_name],
        pool.warm,
        store,
    )
    pool.close()
