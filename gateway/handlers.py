"""The BWS endpoints other than the token-authorized biometric calls (those are in
``gateway/biometric.py``). Each handler reads the request, checks who is calling, asks the
services, and shapes the reply; it computes nothing about faces itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from typing import cast
from urllib.parse import parse_qs

import grpc
from aiohttp import web

from bws import __version__, images
from bws.storage import SAMPLE_TAGS, StoredSample
from bws.v1 import common_pb2, enrollment_pb2, liveness_pb2
from gateway import replies, tokens
from gateway.auth import basic_app, bcid_param, bearer_token, flag, integer, read_body, state_param, traits
from gateway.backends import BACKENDS, SETTINGS, Backends
from gateway.biometric import Outcome, check_liveness, prepare_sample
from gateway.errors import OVERLOAD, ApiError, error_response

log = logging.getLogger(__name__)


# -- token ------------------------------------------------------------------------------


async def token(request: web.Request) -> web.Response:
    """``GET /extension/token``: issue a BWS token for one BCID and task."""
    app = basic_app(request)
    settings = request.app[SETTINGS]
    query = request.query
    app_id = query.get("id", "")
    if not app_id:
        raise ApiError(400, "The parameter id (the App ID) is required.")
    if app_id != app.app_id:
        raise ApiError(400, "The parameter id does not match the App ID of the credentials.")
    task_name = query.get("task", "verify").lower()
    if task_name not in tokens.TASKS:
        raise ApiError(400, "The parameter task must be verify, identify, enroll or livenessdetection.")
    task = tokens.TASKS[task_name]
    bcid = None
    if "bcid" in query or task != tokens.TASK_LIVENESS_ONLY:
        bcid = bcid_param(request, app)
    issued = tokens.issue(
        tokens.TokenRequest(
            app_id=app.app_id,
            bcid=bcid,
            task=task,
            livedetection=bool(flag(request, "livedetection", True)),
            challenge=bool(flag(request, "challenge", False)),
            challenges=integer(request, "challenges", 3, 2, 7),
            maxtries=integer(request, "maxtries", tokens.DEFAULT_MAXTRIES, 1, 15),
            autoenroll=bool(flag(request, "autoenroll", False)),
            traits=traits(query.get("traits", "Face")),
        ),
        secret=settings.token_secret,
        audience=settings.public_url,
        lifetime=settings.token_lifetime_seconds,
    )
    log.info("token issued: app=%s task=%s", app.app_id, task_name)
    return web.Response(text=issued, content_type="text/plain")


# -- upload -----------------------------------------------------------------------------


async def upload(request: web.Request) -> web.Response:
    """``POST /extension/upload?tag=&index=&trait=``: inspect a sample and keep it for the token.

    The body is read before an admission place is taken (with a timeout): a client that stalls
    mid-body holds a connection, never the place another client's upload needs. When every
    place is taken already, the upload is refused before its body is read and parsed: turning
    away a burst costs the gateway little, and leaves the cores to the uploads it accepted.
    """
    claims = bearer_token(request)
    tag = request.query.get("tag", "any").lower() or "any"
    if tag not in SAMPLE_TAGS:
        raise ApiError(400, "The parameter tag must be any, up, down, left or right.")
    index = integer(request, "index", 0, 0, 999_999)
    traits(request.query.get("trait", "Face"))
    backends = request.app[BACKENDS]
    if backends.uploads.full:
        return _too_busy(backends)
    sample = images.parse_upload_body(await read_body(request)) if request.can_read_body else None
    if sample is None:
        raise ApiError(400, "The body must hold the sample as a data URL.")
    if not await backends.uploads.enter():
        return _too_busy(backends)
    try:
        return await _upload(backends, claims, tag, index, sample)
    finally:
        backends.uploads.leave()


def _too_busy(backends: Backends) -> web.Response:
    backends.refused("upload")  # logged there, summed up: not one line per refusal
    return error_response(503, "The server is too busy; try again shortly.", {"Retry-After": "1"})


async def _upload(backends: Backends, claims: tokens.Token, tag: str, index: int,
                  sample: images.Sample) -> web.Response:
    limit = backends.settings.max_samples_per_token
    if backends.sample_counts.may_be_full(claims.token_id, limit):
        held = len(await backends.storage(backends.store.samples, claims.token_id))
        backends.sample_counts.set(claims.token_id, held, claims.expires)
        if held >= limit:
            raise ApiError(400, "Too many samples have been uploaded with this token.")
    key = backends.store.new_sample_key(claims.token_id, index, tag)
    ref = common_pb2.SampleRef(key=key, tag=tag, index=index)
    # Store the sample and inspect it at once: the bytes travel with the inspection request,
    # so it need not wait for the store to have them.
    outcomes: list[object] = await asyncio.gather(
        backends.storage(backends.store.put, key, sample.data, sample.content_type),
        backends.call(backends.liveness.InspectSample, liveness_pb2.InspectSampleRequest(
            sample=ref, data=sample.data, skip_landmarks=not claims.requires_liveness)),
        return_exceptions=True,
    )
    failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
    if failure is not None:  # nothing half-written: the sample goes, now or as soon as the store answers
        await backends.unwanted_samples.delete(claims.token_id, key, claims.expires, failed_write=True)
        raise failure
    reply = cast(liveness_pb2.InspectSampleReply, outcomes[1])
    codes = [e.error_code for e in reply.errors]
    if reply.accepted:
        backends.sample_counts.add(claims.token_id, claims.expires)
        if claims.kind != tokens.TASK_LIVENESS_ONLY:
            backends.background.spawn(prepare_sample(backends, ref, reply.aligned_face))
        return web.json_response({"Accepted": True, "Warnings": list(reply.warnings)})
    await backends.unwanted_samples.delete(claims.token_id, key, claims.expires, failed_write=False)
    if "InvalidSampleData" in codes or not codes:
        message = reply.errors[0].message if reply.errors else "The sample could not be read."
        raise ApiError(400, message)
    return web.json_response({"Accepted": False, "Error": codes[0]})


# -- calls with app credentials --------------------------------------------------------


def _sample_of(value: object, name: str) -> images.Sample:
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"The field {name} must hold a data URL.")
    return images.parse_data_url(value)


async def livedetection(request: web.Request) -> web.Response:
    """``POST /extension/livedetection[?state=]``: are two images of a live person?

    The body is JSON ``{"liveimage1": dataURL, "liveimage2": dataURL}`` or the same as form
    fields. The images are stored only for the duration of the call.
    """
    app = basic_app(request)
    state_param(request)  # refused before any work
    with request.app[BACKENDS].audited("classic", app.app_id, "livedetection", None) as ended:
        return await _livedetection(request, ended)


async def _livedetection(request: web.Request, ended: dict[str, str]) -> web.Response:
    body = await read_body(request)
    fields: dict[str, object]
    try:
        parsed = json.loads(body)
        fields = parsed if isinstance(parsed, dict) else {}
    except RecursionError:  # JSON nested thousands deep: not what any client sends
        raise ApiError(400, "The body must be a JSON object with liveimage1 and liveimage2.") from None
    except ValueError:
        fields = {k: v[0] for k, v in parse_qs(body.decode("ascii", "replace")).items()}
    samples = [_sample_of(fields.get(name), name) for name in ("liveimage1", "liveimage2")]
    backends = request.app[BACKENDS]
    job = "livedetection-" + secrets.token_hex(12)
    stored = await asyncio.gather(*(
        backends.storage(backends.store.put_sample, job, index, "any", s.data, s.content_type)
        for index, s in enumerate(samples)))
    try:
        found = [sample for sample in map(StoredSample.from_key, stored) if sample is not None]
        await check_liveness(backends, found, ())
        live, error = True, None
    except Outcome as failed:
        live, error = False, failed.code
    except grpc.aio.AioRpcError as rpc_error:
        if rpc_error.code() not in OVERLOAD:
            raise
        live, error = False, "ExecutionOfJobTimedOut"
    finally:
        await backends.storage(backends.store.delete, stored)
    ended["outcome"] = "live" if live else str(error)
    state = state_param(request)
    if state is None:
        return web.json_response(live)
    reply: dict[str, object] = {"Success": live, "State": state}
    if error:
        reply["Error"] = error
    return replies.result(request, "LiveDetectionResult", reply)


async def isenrolled(request: web.Request) -> web.Response:
    """``GET /extension/isenrolled?bcid=&trait=``: 200 when the BCID has a template, 404 when not."""
    app = basic_app(request)
    bcid = bcid_param(request, app)
    if traits(request.query.get("trait", "Face")) != tokens.TRAITS["face"]:
        raise ApiError(400, "Only the trait Face is enrolled by this service.")
    backends = request.app[BACKENDS]
    reply = await backends.call(backends.enrollment.GetTemplateStatus,
                                enrollment_pb2.GetTemplateStatusRequest(class_id=str(bcid)))
    status = reply.template_status
    if not status.available:
        raise ApiError(404, f"{bcid} is not enrolled.")
    return web.json_response({"BCID": str(bcid), "Trait": "Face", "EnrolledImages": status.enrolled_images,
                              "Encoder": f"{status.encoder_name}/{status.encoder_version}"})


async def deleteclass(request: web.Request) -> web.Response:
    """``DELETE /extension/deleteclass?bcid=``: remove every biometric trace of a BCID.

    The template is all this service keeps of a class (no images are stored past a call).
    """
    app = basic_app(request)
    bcid = bcid_param(request, app)
    backends = request.app[BACKENDS]
    with backends.audited("classic", app.app_id, "deleteclass", str(bcid)) as ended:
        reply = await backends.call(backends.enrollment.DeleteTemplate,
                                    enrollment_pb2.DeleteTemplateRequest(class_id=str(bcid)))
        ended["outcome"] = "deleted" if reply.deleted else "nothing to delete"
    log.info("deleteclass: %s", ended["outcome"])
    return web.Response(status=200)


async def status(request: web.Request) -> web.Response:
    """``GET /extension/status``: version and features."""
    basic_app(request)
    return web.json_response({
        "Version": __version__,
        "Label": "Open BWS server",
        "Features": ["Face", "LiveDetection", "ChallengeResponse", "Enrollment", "Verification",
                     "Identification", "LivenessDetection"],
    })


# -- result, health ---------------------------------------------------------------------


async def result(request: web.Request) -> web.Response:
    """``GET /extension/result?access_token=``: the outcome of the token's last biometric call."""
    app = basic_app(request)
    settings = request.app[SETTINGS]
    try:
        claims = tokens.verify(request.query.get("access_token", ""), secret=settings.token_secret,
                               audience=settings.public_url)
    except tokens.TokenInvalid as error:
        raise ApiError(400, f"access_token: {error}") from None
    if claims.app_id != app.app_id:
        raise ApiError(403, "The token was issued to another app.")
    backends = request.app[BACKENDS]
    found = await backends.storage(backends.store.get_result, claims.token_id)
    if found is None:
        return web.Response(status=204)
    return replies.result(request, "OperationResult", found)


async def livez(request: web.Request) -> web.Response:
    return web.json_response({"Status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    problems = await request.app[BACKENDS].not_ready()
    if problems:
        return web.json_response({"Message": "Not ready: " + "; ".join(problems) + "."}, status=503)
    return web.json_response({"Status": "ready"})
