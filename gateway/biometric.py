"""The biometric calls: the classic ones a BWS token authorizes (enroll, verify, identify,
livenessdetection), and the storing and inspecting of images sent inside a call (BWS 3, classic
livedetection: ``inline_samples``).

The token-authorized calls share one flow (``run``), so every call behaves the same way:

1. verify the token (401) and that its task allows this call (403);
   with ``BWS_MAX_CONCURRENT_CALLS`` calls already in flight, answer ``ExecutionOfJobTimedOut``
   at once (the samples are dropped once the accepted calls are done, the try is kept);
2. claim one try and the samples uploaded with the token, atomically, also across gateway
   replicas (400 when there are no samples, 403 when the tries are used up);
3. check liveness (and the challenge: the token's sequence that the try's tags follow among
   those no earlier try used, ``tokens.assign_challenges``) when the token or
   ``?livedetection=true`` asks for it — the flag can switch liveness on, never off;
4. run the call's own work over gRPC (``perform``);
5. record the outcome for ``/extension/result`` and in the audit trail, reply, and delete the
   samples whatever happened.

Expected failures are 200 replies ``{"Success": false, "Error": ...}``. When a service refuses
the work for overload, the reply is ``ExecutionOfJobTimedOut`` and the try is given back. When
a service is down or dies during the call, the reply is 503, the try is given back and the
samples stay for the next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web

from bws import images
from bws.storage import StoredSample
from bws.v1 import common_pb2, enrollment_pb2, liveness_pb2
from gateway import replies, tokens
from gateway.auth import bearer_token, flag
from gateway.backends import BACKENDS, Backends
from gateway.errors import OVERLOAD, ApiError

log = logging.getLogger(__name__)

Result = dict[str, Any]
Perform = Callable[[Backends, tokens.Token, list[StoredSample]], Awaitable[Result]]


class Outcome(Exception):
    """A biometric call ended with ``{"Success": false, "Error": code}``."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def sample_refs(samples: list[StoredSample]) -> list[common_pb2.SampleRef]:
    return [common_pb2.SampleRef(key=s.key, tag=s.tag, index=s.index) for s in samples]


async def check_liveness(backends: Backends, samples: list[StoredSample], directions: tuple[str, ...]) -> None:
    """Raise the outcome when the samples are not live (or do not follow the challenge)."""
    if len(samples) < 2:
        raise Outcome("NotEnoughSamples")
    reply = await backends.call(
        backends.liveness.CheckLiveness,
        liveness_pb2.CheckLivenessRequest(samples=sample_refs(samples), challenge_directions=list(directions)),
    )
    if not reply.live:
        raise Outcome(reply.errors[0].error_code if reply.errors else "LiveDetectionFailed")


async def run(request: web.Request, *, kind: int, action: str, root: str, perform: Perform) -> web.Response:
    claims = bearer_token(request)
    if claims.kind != kind or (kind != tokens.TASK_LIVENESS_ONLY and claims.bcid is None):
        raise ApiError(403, f"The token does not allow {action}.")
    live = kind == tokens.TASK_LIVENESS_ONLY or claims.requires_liveness or bool(
        flag(request, "livedetection", False))
    backends = request.app[BACKENDS]
    with backends.audited("classic", claims.app_id, action, str(claims.bcid) if claims.bcid else None) as ended:
        if not await backends.calls.enter():
            ended["outcome"] = "ExecutionOfJobTimedOut"
            return await refuse_busy(request, backends, claims, action, root)
        try:
            return await _run_admitted(request, backends, claims, live, action, root, perform, ended)
        finally:
            backends.calls.leave()


async def refuse_busy(request: web.Request, backends: Backends, claims: tokens.Token, action: str,
                      root: str) -> web.Response:
    """Too many calls in flight: answer at once, drop the samples, keep the try.

    The samples are deleted after the reply, which waits for no store round trip, and after
    the accepted calls (``DeferredDrops``); only those uploaded before the refusal go, so what
    the client uploads for its next attempt stays.
    """
    backends.refused(action)
    uploaded_before = time.time_ns()
    backends.refused_samples.defer(claims.token_id,
                                   lambda: _drop_samples(backends, claims, uploaded_before=uploaded_before))
    return replies.result(request, root, {"Success": False, "Error": "ExecutionOfJobTimedOut"})


async def _drop_samples(backends: Backends, claims: tokens.Token, uploaded_before: int) -> None:
    try:
        samples = await backends.storage(backends.store.samples, claims.token_id)
    except Exception:
        log.warning("could not list the samples of a refused call; the sweeper will remove them")
        return
    await _release(backends, [s for s in samples if s.arrival <= uploaded_before])


async def _run_admitted(request: web.Request, backends: Backends, claims: tokens.Token, live: bool, action: str,
                        root: str, perform: Perform, ended: dict[str, str]) -> web.Response:
    await backends.refused_samples.settle(claims.token_id)  # an earlier refused call's samples go first
    claimed = await backends.storage(backends.store.claim_try, claims.token_id, claims.maxtries,
                                     backends.unwanted_samples.of(claims.token_id))
    if claimed is None:
        raise ApiError(400, "No samples have been uploaded with this token.")
    samples, try_number = claimed.samples, claimed.number
    keep_samples = False  # a call that decided nothing leaves its samples for the next one
    try:
        if not try_number:
            raise ApiError(403, "The number of allowed attempts with this token is exceeded.")
        try:
            if live:
                challenge = claims.challenge_for_try(claimed.earlier_tags, [s.tag for s in samples])
                await check_liveness(backends, samples, challenge)
            result = await perform(backends, claims, samples)
        except Outcome as failed:
            result = {"Success": False, "Error": failed.code}
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                # A service died or cannot be reached: nothing was decided. The try is given back
                # and the samples stay, unclaimed, for the client's next call (503).
                await backends.storage(backends.store.return_try, claims.token_id, try_number)
                keep_samples = True
                raise
            if error.code() not in OVERLOAD:
                raise
            # The server refused the work: the try is given back, the client may try again.
            await backends.storage(backends.store.return_try, claims.token_id, try_number)
            result = {"Success": False, "Error": "ExecutionOfJobTimedOut"}
    except BaseException:
        if not keep_samples:
            await _release(backends, samples)
        raise
    # The outcome, never the BCID or a score: biometric outcomes per person stay out of routine logs.
    ended["outcome"] = "succeeded" if result.get("Success") else str(result.get("Error", "not recognized"))
    log.info("%s: %s", action, ended["outcome"])
    record = {"Action": action, "BCID": str(claims.bcid) if claims.bcid else None, **result}
    # The outcome is recorded before the reply (the app asks /extension/result next); the
    # samples are deleted just after it, which the reply need not wait for.
    await _record(backends, claims, record, action)
    backends.background.spawn(_release(backends, samples))
    return replies.result(request, root, result)


async def _release(backends: Backends, samples: list[StoredSample]) -> None:
    try:
        await backends.storage(backends.store.release_samples, samples)
    except Exception:
        log.exception("could not delete claimed samples; the expiry rule will remove them")


async def _record(backends: Backends, claims: tokens.Token, record: Result, action: str) -> None:
    try:
        await backends.storage(backends.store.put_result, claims.token_id, record)
    except Exception:
        log.warning("could not record the result of the %s", action)


# -- images sent inside a call ----------------------------------------------------------


INLINE_RETRY_SECONDS = 600  # how long a failed call's images are deleted again (then: the expiry rule)


@dataclass(frozen=True)
class InlineImage:
    """One image sent inside a call, as stored and inspected for the call's duration."""

    ref: common_pb2.SampleRef | None  # where it is stored; None when it is not an image
    inspection: liveness_pb2.InspectSampleReply

    @property
    def usable(self) -> bool:
        """It holds exactly one usable face."""
        return self.ref is not None and self.inspection.accepted


@contextlib.asynccontextmanager
async def inline_samples(backends: Backends, data: Sequence[bytes], prepare: bool = False,
                         tags: Sequence[str] = (), liveness: bool = True) -> AsyncIterator[list[InlineImage]]:
    """Store the images as samples of a one-off job and inspect them (at once, as an upload
    does); ``tags`` are their head-movement tags, as an upload's (``any`` for those not given);
    with ``prepare``, have the enrollment service embed the usable ones; without ``liveness``
    (the call checks none) the inspection skips the face mesh. Yields one
    ``InlineImage`` per image, in order; the samples are deleted when the block ends, whatever
    happened. Bytes that are not an image of an allowed format and size are not stored: their
    inspection says InvalidSampleData."""

    async def store_and_inspect(job: str, stored: list[str], index: int, blob: bytes) -> InlineImage:
        try:
            if images.sniff(blob) is None:
                raise images.InvalidImage("The data is not a PNG, JPEG, BMP, GIF or TIFF image.")
            images.check_size(blob)
        except images.InvalidImage as error:
            return InlineImage(None, liveness_pb2.InspectSampleReply(
                status=common_pb2.JOB_STATUS_SUCCEEDED,
                errors=[common_pb2.JobError(error_code="InvalidSampleData", message=str(error))]))
        tag = tags[index] if index < len(tags) else "any"
        key = backends.store.new_sample_key(job, index, tag)
        stored.append(key)
        ref = common_pb2.SampleRef(key=key, tag=tag, index=index)
        _, inspection = await asyncio.gather(
            backends.storage(backends.store.put, key, blob, images.sniff(blob) or "application/octet-stream"),
            backends.call(backends.liveness.InspectSample, liveness_pb2.InspectSampleRequest(
                sample=ref, data=blob, skip_landmarks=not liveness)))
        if prepare and inspection.accepted:
            await prepare_sample(backends, ref, inspection.aligned_face)
        return InlineImage(ref, inspection)

    async with _call_job(backends) as (job, stored):
        yield list(await asyncio.gather(*(store_and_inspect(job, stored, i, blob) for i, blob in enumerate(data))))


@contextlib.asynccontextmanager
async def inline_video(backends: Backends, data: bytes) -> AsyncIterator[str]:
    """Store a video sent inside a call for the call's duration; yields its key. It is deleted
    as a call's images are (again for a while after a failure)."""
    async with _call_job(backends) as (job, stored):
        key = backends.store.new_sample_key(job, 0, "any")
        stored.append(key)
        await backends.storage(backends.store.put, key, data, "application/octet-stream")
        yield key


@contextlib.asynccontextmanager
async def _call_job(backends: Backends) -> AsyncIterator[tuple[str, list[str]]]:
    """A one-off job for what a call sends (``uploads/call-.../``), and the list of keys stored
    for it, which are deleted when the block ends. After a failure a write may still land (a
    stalled store carries out what sat in its socket): then they are deleted again and again
    for a while (``UnwantedSamples``); the bucket's expiry rule removes what is left."""
    job, failed = "call-" + secrets.token_hex(12), True
    stored: list[str] = []
    try:
        yield job, stored
        failed = False
    finally:
        for key in stored:
            backends.background.spawn(backends.unwanted_samples.delete(
                job, key, time.time() + INLINE_RETRY_SECONDS, failed_write=failed))


async def prepare_sample(backends: Backends, ref: common_pb2.SampleRef, aligned_face: bytes) -> None:
    """Have the enrollment service embed an accepted sample ahead of the call that uses it.

    Best effort: when it does not happen (busy, down), the biometric call embeds the sample.
    """
    try:
        await backends.call(backends.enrollment.PrepareSample,
                            enrollment_pb2.PrepareSampleRequest(sample=ref, aligned_face=aligned_face))
    except grpc.aio.AioRpcError as error:
        log.debug("sample not prepared ahead: %s", error.code())


# -- the calls' own work ----------------------------------------------------------------


async def _enroll(backends: Backends, claims: tokens.Token, samples: list[StoredSample]) -> Result:
    reply = await backends.call(
        backends.enrollment.Enroll,
        enrollment_pb2.EnrollRequest(class_id=str(claims.bcid), samples=sample_refs(samples)),
    )
    if reply.errors:
        raise Outcome(reply.errors[0].error_code)
    return {"Success": True}


async def _verify(backends: Backends, claims: tokens.Token, samples: list[StoredSample]) -> Result:
    reply = await backends.call(
        backends.enrollment.Verify,
        enrollment_pb2.VerifyRequest(class_id=str(claims.bcid), samples=sample_refs(samples),
                                     autoenroll=claims.autoenroll),
    )
    if reply.errors:  # a template of an older encoder cannot be compared: classic BWS has no other word
        code = reply.errors[0].error_code
        raise Outcome("NoTemplateAvailable" if code == "DifferentFeatureVersions" else code)
    return {"Success": reply.verified}  # not recognized: BWS sends no Error


async def _identify(backends: Backends, claims: tokens.Token, samples: list[StoredSample]) -> Result:
    assert claims.bcid is not None
    reply = await backends.call(
        backends.enrollment.Search,
        enrollment_pb2.SearchRequest(storage=claims.bcid.storage, partition=claims.bcid.partition,
                                     samples=sample_refs(samples), top_k=10),
    )
    if reply.errors:
        raise Outcome(reply.errors[0].error_code)
    matches = [{"BCID": m.class_id, "Score": round(m.score, 4)} for m in reply.matches]
    return {"Success": bool(matches), "Matches": matches}


async def _liveness_only(backends: Backends, claims: tokens.Token, samples: list[StoredSample]) -> Result:
    return {"Success": True}  # run() has checked liveness (and the challenge) already


async def enroll(request: web.Request) -> web.Response:
    """``GET /extension/enroll?livedetection=``: enroll the token's samples for its BCID."""
    return await run(request, kind=tokens.TASK_ENROLL, action="enrollment", root="EnrollResult", perform=_enroll)


async def verify(request: web.Request) -> web.Response:
    """``GET /extension/verify?livedetection=``: 1:1 against the token's BCID."""
    return await run(request, kind=tokens.TASK_VERIFY, action="verification", root="VerifyResult",
                     perform=_verify)


async def identify(request: web.Request) -> web.Response:
    """``GET /extension/identify?livedetection=``: 1:N within the token's storage and partition."""
    return await run(request, kind=tokens.TASK_IDENTIFY, action="identification", root="IdentifyResult",
                     perform=_identify)


async def livenessdetection(request: web.Request) -> web.Response:
    """``GET /extension/livenessdetection``: liveness (and the challenge) only, no BCID needed."""
    return await run(request, kind=tokens.TASK_LIVENESS_ONLY, action="livenessdetection",
                     root="LivenessDetectionResult", perform=_liveness_only)
