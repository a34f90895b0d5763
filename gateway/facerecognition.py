"""BWS 3 ``FaceRecognition``: its six calls on the enrollment service's templates.

Each call takes the client (a BWS 3 app, ``gateway/bws3.py`` checked its JWT) and the request
message, and returns the response message; both edges, gRPC and REST, call these. A class id
is the client's own number: it becomes the BCID ``{storage}/{partition}/{classId}`` of the
client's storage and BWS 3 partition, so the classic API reaches the same templates.

Outcomes are in-band, as BioID's are: an image without exactly one usable face is skipped and
reported in ``errors``, with what was found in it in ``image_properties``. Only what the caller
must fix or retry is a gRPC status (``Bws3Error``): a class id that is not positive, too many
images (INVALID_ARGUMENT), no template to tag or verify against (NOT_FOUND), a busy or missing
service (UNAVAILABLE).

Scores: the enrollment service compares faces by cosine similarity (-1..1, threshold
``BWS_MATCH_THRESHOLD``); BWS 3 scores lie in ]0, 1], so they are reported as (1 + cos) / 2.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import grpc

from bws.bcid import Bcid
from bws.bws3 import bwsmessages_pb2 as messages
from bws.bws3 import facerecognition_pb2 as fr
from bws.settings import App
from bws.v1 import common_pb2, enrollment_pb2
from gateway.backends import Backends
from gateway.biometric import InlineImage, inline_samples

log = logging.getLogger(__name__)

Action = fr.FaceEnrollmentResponse.EnrollmentAction
ACTIONS = {
    enrollment_pb2.ENROLLMENT_ACTION_NEW_TEMPLATE_CREATED: fr.FaceEnrollmentResponse.NEW_TEMPLATE_CREATED,
    enrollment_pb2.ENROLLMENT_ACTION_TEMPLATE_UPDATED: fr.FaceEnrollmentResponse.TEMPLATE_UPDATED,
    enrollment_pb2.ENROLLMENT_ACTION_ENROLLMENT_FAILED: fr.FaceEnrollmentResponse.ENROLLMENT_FAILED,
    enrollment_pb2.ENROLLMENT_ACTION_TEMPLATE_UPGRADED: fr.FaceEnrollmentResponse.TEMPLATE_UPGRADED,
    enrollment_pb2.ENROLLMENT_ACTION_NONE: fr.FaceEnrollmentResponse.NONE,
}
TOP_MATCHES = 10  # BWS 3 returns the ten best with top_matches
MAX_TAGS, MAX_TAG_LENGTH = 64, 256


class Bws3Error(Exception):
    """A BWS 3 call fails with a gRPC status (REST: the mapped HTTP status)."""

    def __init__(self, code: grpc.StatusCode, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status  # REST: instead of the code's usual status (e.g. 413, 408)


def bcid(client: App, class_id: int) -> str:
    """The BCID of one of the client's class ids (INVALID_ARGUMENT unless positive)."""
    if class_id <= 0:  # int64 on the wire: never above 2^63 - 1
        raise Bws3Error(grpc.StatusCode.INVALID_ARGUMENT, "A positive number is required for the class ID.")
    return str(Bcid(client.storage, client.bws3_partition, class_id))


def bws3_score(cosine: float) -> float:
    return round((1.0 + cosine) / 2.0, 6)


def _images(backends: Backends, sent: Sequence[messages.ImageData]) -> list[bytes]:
    limit = backends.settings.max_samples_per_token
    if len(sent) > limit:
        raise Bws3Error(grpc.StatusCode.INVALID_ARGUMENT, f"At most {limit} images may be sent in one call.")
    return [image.image for image in sent]


def _tags(tags: Sequence[str]) -> list[str]:
    if len(tags) > MAX_TAGS or any(not 0 < len(tag) <= MAX_TAG_LENGTH for tag in tags):
        raise Bws3Error(grpc.StatusCode.INVALID_ARGUMENT,
                        f"At most {MAX_TAGS} tags of 1 to {MAX_TAG_LENGTH} characters are allowed.")
    return list(tags)


def image_properties(image: InlineImage) -> messages.ImageProperties:
    """What was found in one image: its face (eyes) and the inspection's warnings."""
    inspection = image.inspection
    properties = messages.ImageProperties(quality_assessments=[
        messages.QualityAssessment(check=warning, score=0.0, message=f"The image failed the check {warning}.")
        for warning in inspection.warnings])
    if inspection.HasField("face"):
        properties.faces.append(face_of(inspection.face))
    return properties


def face_of(box: common_pb2.FaceBox, motion_liveness_score: float = 0.0) -> messages.Face:
    """A found face as BWS 3 reports it. BioID's convention (images are taken to be mirrored):
    the right eye is the one on the image's left."""
    return messages.Face(right_eye=messages.PointD(x=box.eye_on_left.x, y=box.eye_on_left.y),
                         left_eye=messages.PointD(x=box.eye_on_right.x, y=box.eye_on_right.y),
                         motion_liveness_score=motion_liveness_score)


def image_errors(images: Sequence[InlineImage]) -> list[messages.JobError]:
    """One error per image that was skipped, naming it (1-based, as sent)."""
    return [messages.JobError(error_code=e.error_code, message=f"Image {n}: {e.message}")
            for n, image in enumerate(images, 1) if not image.usable for e in image.inspection.errors[:1]]


def template_status(class_id: int, status: enrollment_pb2.TemplateStatus) -> fr.FaceTemplateStatus:
    if not status.available:
        return fr.FaceTemplateStatus(classId=class_id, available=False)
    return fr.FaceTemplateStatus(
        classId=class_id, available=True, enrolled=status.enrolled, tags=list(status.tags),
        encoder_version=status.encoder_version, feature_vectors=status.enrolled_images,
        thumbnails_stored=status.thumbnails_stored,
        thumbnails=[fr.FaceTemplateStatus.Thumbnail(enrolled=t.enrolled, image=t.png) for t in status.thumbnails],
    )


def _usable_refs(images: Sequence[InlineImage]) -> list[common_pb2.SampleRef]:
    return [image.ref for image in images if image.usable and image.ref is not None]


async def enroll(backends: Backends, client: App, request: fr.FaceEnrollmentRequest) -> fr.FaceEnrollmentResponse:
    class_bcid = bcid(client, request.classId)
    data = _images(backends, request.images)
    async with inline_samples(backends, data, prepare=True, liveness=False) as images:
        properties = [image_properties(i) for i in images]
        errors = image_errors(images)
        refs = _usable_refs(images)
        if data and not refs:  # images, none usable: nothing is done (no upgrade either)
            status = await backends.call(backends.enrollment.GetTemplateStatus,
                                         enrollment_pb2.GetTemplateStatusRequest(class_id=class_bcid))
            return fr.FaceEnrollmentResponse(status=messages.SUCCEEDED, errors=errors, image_properties=properties,
                                             performed_action=fr.FaceEnrollmentResponse.ENROLLMENT_FAILED,
                                             template_status=template_status(request.classId, status.template_status))
        # No images: the service upgrades a template of an older encoder, or does nothing.
        reply = await backends.call(backends.enrollment.Enroll,
                                    enrollment_pb2.EnrollRequest(class_id=class_bcid, samples=refs))
    errors += [messages.JobError(error_code=e.error_code, message=e.message) for e in reply.errors]
    log.info("bws3 enroll: %d of %d image(s) enrolled", reply.enrolled_images, len(data))
    return fr.FaceEnrollmentResponse(
        status=messages.SUCCEEDED, errors=errors, image_properties=properties,
        performed_action=ACTIONS.get(reply.performed_action, fr.FaceEnrollmentResponse.ENROLLMENT_FAILED),
        enrolled_images=reply.enrolled_images,
        template_status=template_status(request.classId, reply.template_status),
    )


async def verify(backends: Backends, client: App, request: fr.FaceVerificationRequest
                 ) -> fr.FaceVerificationResponse:
    class_bcid = bcid(client, request.classId)
    if not request.image.image:
        raise Bws3Error(grpc.StatusCode.INVALID_ARGUMENT, "An image is required.")
    async with inline_samples(backends, [request.image.image], prepare=True, liveness=False) as images:
        properties = image_properties(images[0])
        if not images[0].usable:
            return fr.FaceVerificationResponse(status=messages.SUCCEEDED, errors=image_errors(images),
                                               image_properties=properties)
        reply = await backends.call(backends.enrollment.Verify,
                                    enrollment_pb2.VerifyRequest(class_id=class_bcid, samples=_usable_refs(images)))
    if "NoTemplateAvailable" in [e.error_code for e in reply.errors]:
        raise Bws3Error(grpc.StatusCode.NOT_FOUND, f"No template is stored for class ID {request.classId}.")
    log.info("bws3 verify: %s", "recognized" if reply.verified else "not recognized")
    return fr.FaceVerificationResponse(
        status=messages.SUCCEEDED, image_properties=properties, verified=reply.verified,
        errors=[messages.JobError(error_code=e.error_code, message=e.message) for e in reply.errors],
        score=bws3_score(reply.score) if not reply.errors else 0.0,
    )


async def search(backends: Backends, client: App, request: fr.FaceSearchRequest) -> fr.FaceSearchResponse:
    data = _images(backends, request.images)
    tags = _tags(request.tags)
    async with inline_samples(backends, data, prepare=True, liveness=False) as images:

        async def one(image: InlineImage) -> tuple[fr.FaceSearchResponse.SearchResult, int]:
            if not image.usable or image.ref is None:
                return fr.FaceSearchResponse.SearchResult(), 0
            reply = await backends.call(backends.enrollment.Search, enrollment_pb2.SearchRequest(
                storage=client.storage, partition=client.bws3_partition, samples=[image.ref], top_k=TOP_MATCHES,
                tags=tags, include_non_matches=request.top_matches))
            return fr.FaceSearchResponse.SearchResult(matches=[
                fr.FaceSearchResponse.TemplateMatchResult(classId=int(m.class_id.rsplit("/", 1)[1]),
                                                          score=bws3_score(m.score))
                for m in reply.matches]), reply.outdated_templates

        searched = await asyncio.gather(*(one(image) for image in images))
        properties = [image_properties(i) for i in images]
        errors = image_errors(images)
    results = [result for result, _ in searched]
    outdated = max((count for _, count in searched), default=0)
    if outdated:
        errors.append(messages.JobError(
            error_code="DifferentFeatureVersions",
            message=f"{outdated} template(s) made by an older encoder were not searched; enrolling a class "
                    "(with or without images) upgrades its template."))
    log.info("bws3 search: %d image(s), %d with matches", len(data), sum(1 for r in results if r.matches))
    return fr.FaceSearchResponse(status=messages.SUCCEEDED, errors=errors, image_properties=properties,
                                 result=results)


async def set_template_tags(backends: Backends, client: App, request: fr.SetTemplateTagsRequest
                            ) -> fr.SetTemplateTagsResponse:
    class_bcid = bcid(client, request.classId)
    reply = await backends.call(backends.enrollment.SetTemplateTags, enrollment_pb2.SetTemplateTagsRequest(
        class_id=class_bcid, tags=_tags(request.tags)))
    if not reply.found:
        raise Bws3Error(grpc.StatusCode.NOT_FOUND, f"No template is stored for class ID {request.classId}.")
    return fr.SetTemplateTagsResponse()


async def get_template_status(backends: Backends, client: App, request: fr.FaceTemplateStatusRequest
                              ) -> fr.FaceTemplateStatus:
    class_bcid = bcid(client, request.classId)
    reply = await backends.call(backends.enrollment.GetTemplateStatus, enrollment_pb2.GetTemplateStatusRequest(
        class_id=class_bcid, with_thumbnails=request.download_thumbnails))
    return template_status(request.classId, reply.template_status)


async def delete_template(backends: Backends, client: App, request: fr.DeleteTemplateRequest
                          ) -> fr.DeleteTemplateResponse:
    class_bcid = bcid(client, request.classId)
    reply = await backends.call(backends.enrollment.DeleteTemplate,
                                enrollment_pb2.DeleteTemplateRequest(class_id=class_bcid))
    log.info("bws3 delete template: %s", "deleted" if reply.deleted else "none")
    return fr.DeleteTemplateResponse()
