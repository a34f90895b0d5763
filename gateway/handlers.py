"""The BWS endpoints. Each handler reads the request, checks who is calling, asks the services,
and shapes the reply; it computes nothing about faces itself.

Follow ``enroll`` to see one biometric call end to end: token → claim the token's samples
(storage) → count one try (storage, atomic) → CheckLiveness (gRPC) → Enroll (gRPC) → delete the
samples whatever happened → record the outcome → reply.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging

import grpc
from aiohttp import web

from bws import images
from bws.settings import App, parse_bool
from bws.storage import SAMPLE_TAGS, StoredSample
from bws.v1 import common_pb2, enrollment_pb2, liveness_pb2
from gateway import replies, tokens
from gateway.backends import BACKENDS, SETTINGS, Backends
from gateway.errors import OVERLOAD, ApiError, unauthorized

log = logging.getLogger(__name__)


# -- authentication ---------------------------------------------------------------------


def basic_app(request: web.Request) -> App:
    """The app whose Basic credentials the request carries; 401 otherwise."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic" or not value:
        raise unauthorized("This call requires Basic authentication with the App ID and secret.", "Basic")
    try:
        app_id, _, secret = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise unauthorized("The Basic authorization header is malformed.", "Basic") from None
    for app in request.app[SETTINGS].apps:
        # Compare every app's secret in constant time, so timing tells nothing about the ids.
        if hmac.compare_digest(app.app_id.encode(), app_id.encode()) & hmac.compare_digest(
            app.secret.encode(), secret.encode()
        ):
            return app
    raise unauthorized("The App ID or secret is wrong.", "Basic")


def bearer_token(request: web.Request) -> tokens.Token:
    """The verified BWS token of the request (schemes ``Bearer`` and ``JWT``); 401 otherwise."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() not in ("bearer", "jwt") or not value.strip():
        raise unauthorized("This call requires a BWS token: Authorization: Bearer <token>.")
    settings = request.app[SETTINGS]
    try:
        return tokens.verify(value.strip(), secret=settings.token_secret, audience=settings.public_url)
    except tokens.TokenInvalid as error:
        raise unauthorized(str(error)) from None


# -- query parameters -------------------------------------------------------------------


def flag(request: web.Request, name: str, default: bool | None) -> bool | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    value = parse_bool(raw)
    if value is None:
        raise ApiError(400, f"The parameter {name} must be true or false.")
    return value


def integer(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"The parameter {name} must be an integer.") from None
    if not low <= value <= high:
        raise ApiError(400, f"The parameter {name} must be between {low} and {high}.")
    return value


def traits(raw: str) -> int:
    value = 0
    for name in (t.strip().lower() for t in raw.split(",")):
        if name not in tokens.TRAITS:
            raise ApiError(400, f"The trait {name!r} is not supported; use Face and/or Periocular.")
        value |= tokens.TRAITS[name]
    return value


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
        bcid = tokens.Bcid.parse(query.get("bcid", ""))
        if bcid is None:
            raise ApiError(400, "The parameter bcid must look like storage.partition.classid.")
        if not app.may_use(bcid.storage, bcid.partition):
            raise ApiError(403, f"The app may not use the storage and partition of {bcid}.")
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
    log.info("token issued: app=%s bcid=%s task=%s", app.app_id, bcid, task_name)
    return web.Response(text=issued, content_type="text/plain")


# -- upload -----------------------------------------------------------------------------


async def upload(request: web.Request) -> web.Response:
    """``POST /extension/upload?tag=&index=&trait=``: inspect a sample and keep it for the token."""
    claims = bearer_token(request)
    backends = request.app[BACKENDS]
    tag = request.query.get("tag", "any").lower() or "any"
    if tag not in SAMPLE_TAGS:
        raise ApiError(400, "The parameter tag must be any, up, down, left or right.")
    index = integer(request, "index", 0, 0, 999_999)
    traits(request.query.get("trait", "Face"))
    sample = images.parse_upload_body(await request.read()) if request.can_read_body else None
    if sample is None:
        raise ApiError(400, "The body must hold the sample as a data URL.")
    existing = await backends.storage(backends.store.samples, claims.token_id)
    if len(existing) >= backends.settings.max_samples_per_token:
        raise ApiError(400, "Too many samples have been uploaded with this token.")
    key = await backends.storage(
        backends.store.put_sample, claims.token_id, index, tag, sample.data, sample.content_type
    )
    try:
        reply = await backends.call(
            backends.liveness.InspectSample,
            liveness_pb2.InspectSampleRequest(sample=common_pb2.SampleRef(key=key, tag=tag, index=index)),
        )
    except BaseException:
        await backends.storage(backends.store.delete, [key])  # nothing half-written
        raise
    codes = [e.error_code for e in reply.errors]
    if reply.accepted:
        return web.json_response({"Accepted": True, "Warnings": list(reply.warnings)})
    await backends.storage(backends.store.delete, [key])
    if "InvalidSampleData" in codes or not codes:
        message = reply.errors[0].message if reply.errors else "The sample could not be read."
        raise ApiError(400, message)
    return web.json_response({"Accepted": False, "Error": codes[0]})


# -- enroll -----------------------------------------------------------------------------


class Outcome(Exception):
    """A biometric call ended with ``{"Success": false, "Error": code}``."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


async def check_liveness(backends: Backends, samples: list[StoredSample], directions: tuple[str, ...]) -> None:
    """Raise the outcome when the samples are not live (or do not follow the challenge)."""
    if len(samples) < 2:
        raise Outcome("NotEnoughSamples")
    reply = await backends.call(
        backends.liveness.CheckLiveness,
        liveness_pb2.CheckLivenessRequest(
            samples=[common_pb2.SampleRef(key=s.key, tag=s.tag, index=s.index) for s in samples],
            challenge_directions=list(directions),
        ),
    )
    if not reply.live:
        raise Outcome(reply.errors[0].error_code if reply.errors else "LiveDetectionFailed")


async def enroll(request: web.Request) -> web.Response:
    """``GET /extension/enroll?livedetection=``: enroll the token's uploaded samples."""
    claims = bearer_token(request)
    if claims.kind != tokens.TASK_ENROLL or claims.bcid is None:
        raise ApiError(403, "The token does not allow enrollment.")
    # The flag can switch liveness on, never off when the token requires it.
    live = claims.requires_liveness or bool(flag(request, "livedetection", False))
    backends = request.app[BACKENDS]

    samples = await backends.storage(backends.store.claim_samples, claims.token_id)
    if not samples:
        raise ApiError(400, "No samples have been uploaded with this token.")
    outcome = {"Action": "enrollment", "BCID": str(claims.bcid)}
    try:
        try_number = await backends.storage(backends.store.claim_try, claims.token_id, claims.maxtries)
        if try_number is None:
            raise ApiError(403, "The number of allowed attempts with this token is exceeded.")
        try:
            if live:
                await check_liveness(backends, samples, claims.directions_for_try(try_number))
            reply = await backends.call(
                backends.enrollment.Enroll,
                enrollment_pb2.EnrollRequest(
                    class_id=str(claims.bcid),
                    samples=[common_pb2.SampleRef(key=s.key, tag=s.tag, index=s.index) for s in samples],
                ),
            )
            if reply.errors:
                raise Outcome(reply.errors[0].error_code)
            result: dict[str, object] = {"Success": True}
        except Outcome as failed:
            result = {"Success": False, "Error": failed.code}
        except grpc.aio.AioRpcError as error:
            if error.code() not in OVERLOAD:
                raise
            # The server refused the work: the try is given back, the client may try again.
            await backends.storage(backends.store.return_try, claims.token_id, try_number)
            result = {"Success": False, "Error": "ExecutionOfJobTimedOut"}
    finally:
        try:
            await backends.storage(backends.store.release_samples, claims.token_id, samples)
        except Exception:
            log.exception("could not delete claimed samples; the expiry rule will remove them")
    log.info("enroll %s: %s", claims.bcid, result)
    try:
        await backends.storage(backends.store.put_result, claims.token_id, {**outcome, **result})
    except Exception:
        log.warning("could not record the result of the enrollment")
    return replies.result(request, "EnrollResult", result)


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
