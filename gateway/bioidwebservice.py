"""BWS 3 ``BioIDWebService``: liveness detection and photo verification of images sent with the
call, on the liveness and enrollment services. Both edges (``gateway/bws3.py``) call these.

* **LivenessDetection.** Two images: the motion (3D) liveness decision of the classic calls on
  the pair; a direction tag (``up``, ``down``, ``left``, ``right``) on the second image adds the
  head-movement challenge for that direction (images are taken as mirrored, as BWS 3 does). One
  image asks for passive (texture) liveness, which this server has no trained detector for: the
  answer is ``live`` false with ``PassiveLiveDetectionNotAvailable``, never a silent pass.
* **PhotoVerify.** The live images' faces against the ID photo's (enrollment service
  ``CompareSamples``), reported as BioID's accuracy levels; liveness of the live images as
  above unless ``disable_liveness_detection``.
* **VideoLivenessDetection.** The liveness service takes frames spread over the video and
  judges those whose head poses differ most with the same motion decision
  (``liveness_service/video.py``, which bounds the work); fewer than two frames with a usable
  face is ``FailureToAcquire``; a file that is not a readable video is INVALID_ARGUMENT.

``live`` false always comes with an error that says why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import grpc

from bws.bws3 import bws_pb2
from bws.bws3 import bwsmessages_pb2 as messages
from bws.settings import App
from bws.v1 import common_pb2, enrollment_pb2, liveness_pb2
from gateway.backends import Backends
from gateway.biometric import InlineImage, inline_samples, inline_video
from gateway.facerecognition import Bws3Error, bws3_score, face_of, image_errors, image_properties

DIRECTIONS = ("up", "down", "left", "right")
PASSIVE_NOT_AVAILABLE = messages.JobError(
    error_code="PassiveLiveDetectionNotAvailable",
    message="Liveness from a single image (passive detection) is not available on this server; send two "
            "images of the moving head.")
LIVENESS_CODES = {  # the classic decision's codes, as BWS 3 reports them
    "LiveDetectionFailed": ("RejectedByActiveLiveDetection",
                            "The images do not show the 3D motion of a live head."),
    "ChallengeResponseFailed": ("RejectedByChallengeResponse",
                                "The head did not move in the direction it was asked to."),
    "NotEnoughSamples": ("NotEnoughSamples", "Both images must hold one usable face."),
}


def liveness_errors(errors: Sequence[common_pb2.JobError]) -> list[messages.JobError]:
    """The liveness service's errors in BWS 3's words (``LIVENESS_CODES``); others as they are."""
    return [messages.JobError(error_code=LIVENESS_CODES.get(e.error_code, (e.error_code, ""))[0],
                              message=LIVENESS_CODES.get(e.error_code, ("", ""))[1] or e.message)
            for e in errors]


def _live_images(sent: list[messages.ImageData]) -> list[messages.ImageData]:
    if not 1 <= len(sent) <= 2:
        raise Bws3Error(grpc.StatusCode.INVALID_ARGUMENT, "One or two live images are required.")
    return sent


def _direction(image: messages.ImageData) -> str | None:
    tags = [tag.lower() for tag in image.tags if tag.lower() in DIRECTIONS]
    return tags[0] if tags else None


def sample_tags(sent: list[messages.ImageData]) -> list[str]:
    """The head-movement tag of each live image as the liveness service reads it."""
    return ["any"] + [_direction(image) or "any" for image in sent[1:]]


def movement_direction(pair: liveness_pb2.PairEvidence, min_degrees: float = 2.0) -> float:
    """The direction the head moved, in degrees in ]0, 360] counter-clockwise from the image's
    right (up 90, left 180, down 270; images mirrored); 0 when it barely moved."""
    right, up = -pair.yaw_delta, pair.pitch_delta
    if math.hypot(right, up) < min_degrees:
        return 0.0
    angle = math.degrees(math.atan2(up, right)) % 360.0
    return round(angle or 360.0, 1)


async def _liveness(backends: Backends, images: list[InlineImage], sent: list[messages.ImageData],
                    properties: list[messages.ImageProperties]) -> tuple[bool, float, list[messages.JobError]]:
    """(live, score, errors) of one or two inspected live images; fills in the second image's
    motion score and movement direction."""
    if not all(image.usable for image in images):
        return False, 0.0, image_errors(images)
    if len(images) == 1:
        return False, 0.0, [PASSIVE_NOT_AVAILABLE]
    direction = _direction(sent[1])  # the samples carry it as their tag (inline_samples)
    reply = await backends.call(backends.liveness.CheckLiveness, liveness_pb2.CheckLivenessRequest(
        samples=[image.ref for image in images if image.ref is not None],
        challenge_directions=[direction] if direction else []))
    if properties[1].faces and reply.pairs:
        face = properties[1].faces[0]
        face.motion_liveness_score = round(reply.liveness_score, 4)
        face.movement_direction = movement_direction(reply.pairs[0])
    errors = liveness_errors(reply.errors)
    if not reply.live and not errors:
        errors = [messages.JobError(error_code="RejectedByActiveLiveDetection", message=LIVENESS_CODES[
            "LiveDetectionFailed"][1])]
    return reply.live, round(reply.liveness_score, 4), errors


async def liveness_detection(backends: Backends, client: App, request: bws_pb2.LivenessDetectionRequest
                             ) -> bws_pb2.LivenessDetectionResponse:
    sent = _live_images(list(request.live_images))
    async with inline_samples(backends, [image.image for image in sent], tags=sample_tags(sent)) as images:
        properties = [image_properties(image) for image in images]
        live, score, errors = await _liveness(backends, images, sent, properties)
    return bws_pb2.LivenessDetectionResponse(status=messages.SUCCEEDED, errors=errors, image_properties=properties,
                                             live=live, liveness_score=score)


async def video_liveness_detection(backends: Backends, client: App,
                                   request: bws_pb2.VideoLivenessDetectionRequest) -> bws_pb2.LivenessDetectionResponse:
    if not request.video:
        raise Bws3Error(grpc.StatusCode.INVALID_ARGUMENT, "A video is required.")
    async with inline_video(backends, request.video) as key:
        reply = await backends.call(backends.liveness.CheckVideoLiveness,
                                    liveness_pb2.CheckVideoLivenessRequest(key=key))
    invalid = [e for e in reply.errors if e.error_code == "InvalidVideo"]
    if invalid:
        raise Bws3Error(grpc.StatusCode.INVALID_ARGUMENT, invalid[0].message)
    properties = []
    for frame in reply.frames:
        taken = messages.ImageProperties(frame_number=frame.frame_number)
        if frame.HasField("face"):
            taken.faces.append(face_of(frame.face, round(reply.liveness_score, 4) if frame.used else 0.0))
        properties.append(taken)
    errors = liveness_errors(reply.errors)
    return bws_pb2.LivenessDetectionResponse(status=messages.SUCCEEDED, errors=errors, image_properties=properties,
                                             live=reply.live, liveness_score=round(reply.liveness_score, 4))


async def photo_verify(backends: Backends, client: App, request: bws_pb2.PhotoVerifyRequest
                       ) -> bws_pb2.PhotoVerifyResponse:
    sent = _live_images(list(request.live_images))
    if not request.photo:
        raise Bws3Error(grpc.StatusCode.INVALID_ARGUMENT, "The ID photo is required.")
    async with inline_samples(backends, [image.image for image in sent] + [request.photo], prepare=True,
                              tags=sample_tags(sent)) as images:
        live_images, photo = images[:-1], images[-1]
        properties = [image_properties(image) for image in live_images]
        response = bws_pb2.PhotoVerifyResponse(status=messages.SUCCEEDED, image_properties=properties,
                                               photo_properties=image_properties(photo))
        if not request.disable_liveness_detection:
            response.live, response.liveness_score, liveness_errors = await _liveness(
                backends, live_images, sent, properties)
            response.errors.extend(liveness_errors)
        usable = [image.ref for image in live_images if image.usable and image.ref is not None]
        if not photo.usable or photo.ref is None:
            response.errors.extend(messages.JobError(error_code=e.error_code, message=f"Photo: {e.message}")
                                   for e in photo.inspection.errors[:1])
            return response
        if not usable:
            if request.disable_liveness_detection:  # else the liveness errors named the images already
                response.errors.extend(image_errors(live_images))
            return response
        reply = await backends.call(backends.enrollment.CompareSamples,
                                    enrollment_pb2.CompareSamplesRequest(probes=usable, reference=photo.ref))
    if reply.errors:
        response.errors.extend(messages.JobError(error_code=e.error_code, message=e.message) for e in reply.errors)
        return response
    response.verification_score = bws3_score(reply.score)
    response.verification_level = reply.level  # type: ignore[assignment]
    return response
