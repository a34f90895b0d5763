"""The BWS 3 edge: BioID's gRPC API (``bioid.services.v1.FaceRecognition`` and
``BioIDWebService``) on its own port, and its REST routes (``/api/face/v1/...``, ``/api/v1/...``)
beside the classic ones, both onto the calls of ``gateway/facerecognition.py`` and
``gateway/bioidwebservice.py``.

Who calls: BWS 3 has no token endpoint. The client signs a JWT with one of its keys (HS256,
HS384 or HS512; ``sub`` = ``iss`` = its client id, ``aud`` = ``BWS``, ``exp`` required) and
sends it as ``Authorization: Bearer`` (REST) or ``authorization`` metadata (gRPC). An app of
``BWS_APPS`` with a ``bws3`` part is such a client. Anything else is UNAUTHENTICATED / 401 and
nothing is done.

Every reply carries ``jobid``, ``bws-version`` and ``date`` and echoes ``Reference-Number``
(gRPC: initial metadata; the trailer ``response-time-ms`` too). Errors: a gRPC status, over
REST the mapped HTTP status with ``{"code": <gRPC code number>, "message": ...}``. REST bodies
are proto3 JSON, read and written by protobuf's ``json_format`` (64-bit integers as numbers,
as BioID's clients read them).
"""

from __future__ import annotations

import asyncio
import email.utils
import hmac
import json
import logging
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import jwt
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from bws import __version__, logs
from bws.bws3 import bws_pb2, bws_pb2_grpc, facerecognition_pb2_grpc
from bws.bws3 import bwsmessages_pb2 as messages
from bws.bws3 import facerecognition_pb2 as fr
from bws.settings import App, GatewaySettings
from bws.storage import StorageUnavailable
from gateway import bioidwebservice as liveness_calls
from gateway import facerecognition as calls
from gateway.backends import BACKENDS, SETTINGS, Backends
from gateway.errors import GRPC_TO_HTTP, OVERLOAD
from gateway.facerecognition import Bws3Error

log = logging.getLogger(__name__)

Request = TypeVar("Request", bound=Message)
Response = TypeVar("Response", bound=Message)
Call = Callable[[Backends, App, Any], Awaitable[Any]]

ALGORITHMS = ("HS256", "HS384", "HS512")
# Client keys hold at least 256 bits (checked when BWS_APPS is read), as BWS 3 asks; PyJWT would
# warn at every HS384/HS512 JWT checked with a key shorter than the hash.
warnings.filterwarnings("ignore", category=jwt.warnings.InsecureKeyLengthWarning)
AUDIENCE = "BWS"
REFERENCE_NUMBER_MAX = 256


# -- who calls ---------------------------------------------------------------------------


def unauthenticated(message: str) -> Bws3Error:
    return Bws3Error(grpc.StatusCode.UNAUTHENTICATED, message)


def client_of(authorization: str, settings: GatewaySettings) -> App:
    """The BWS 3 client whose JWT ``authorization`` (``Bearer <jwt>``) carries."""
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthenticated("A JWT signed with the client's key is required: Authorization: Bearer <jwt>.")
    try:
        algorithm = jwt.get_unverified_header(token).get("alg")
        subject = jwt.decode(token, options={"verify_signature": False}).get("sub")
    except jwt.PyJWTError:
        raise unauthenticated("The JWT is malformed.") from None
    if algorithm not in ALGORITHMS:
        raise unauthenticated("The JWT must be signed with HS256, HS384 or HS512.")
    client = None
    for app in settings.apps:  # every id compared, in constant time
        if app.client_keys and hmac.compare_digest(app.app_id.encode(), str(subject).encode()):
            client = app
    if client is None:
        raise unauthenticated("The JWT's subject is not a known client.")
    claims: dict[str, Any] | None = None
    for key in client.client_keys:  # several during a rotation; BWS 3 JWTs name none (no kid)
        try:
            claims = jwt.decode(token, key, algorithms=[algorithm], audience=AUDIENCE, issuer=client.app_id,
                                leeway=settings.jwt_leeway_seconds,
                                options={"require": ["exp", "sub", "iss", "aud"]})
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError as error:
            raise unauthenticated(f"The JWT is not valid: {error}.") from None
    if claims is None:
        raise unauthenticated("The JWT's signature does not verify with the client's keys.")
    issued = claims.get("iat", time.time())
    if not isinstance(issued, int | float) or claims["exp"] - issued > settings.jwt_max_lifetime_seconds:
        raise unauthenticated(f"The JWT may live at most {settings.jwt_max_lifetime_seconds} seconds.")
    return client


# -- one call, either edge ---------------------------------------------------------------


async def perform(call: Call, backends: Backends, client: App, request: Message, with_images: bool) -> Message:
    """Run a call; the failures of what it calls become BWS 3 errors. A call that sends images
    takes a place among ``BWS_MAX_CONCURRENT_CALLS`` (UNAVAILABLE when none is free)."""
    class_id = getattr(request, "classId", 0)
    bcid = f"{client.storage}/{client.bws3_partition}/{class_id}" if class_id > 0 else None
    with backends.audited("bws3", client.app_id, call.__name__, bcid) as ended:
        reply = await _perform(call, backends, client, request, with_images)
        ended["outcome"] = audit_outcome(reply)
        return reply


def audit_outcome(reply: Message) -> str:
    """What the audit trail says of a call's reply: the decision, never a score."""
    fields = {f.name for f in reply.DESCRIPTOR.fields}
    if "performed_action" in fields:
        return fr.FaceEnrollmentResponse.EnrollmentAction.Name(reply.performed_action)  # type: ignore[attr-defined]
    if "verified" in fields:
        return "verified" if reply.verified else "not verified"  # type: ignore[attr-defined]
    if "verification_level" in fields:
        return bws_pb2.PhotoVerifyResponse.AccuracyLevel.Name(reply.verification_level)  # type: ignore[attr-defined]
    if "live" in fields:
        return "live" if reply.live else "not live"  # type: ignore[attr-defined]
    return "OK"


async def _perform(call: Call, backends: Backends, client: App, request: Message, with_images: bool) -> Message:
    if with_images and not await backends.calls.enter():
        backends.refused("bws3 call")
        raise Bws3Error(grpc.StatusCode.UNAVAILABLE, "The server is too busy; try again shortly.")
    try:
        return await call(backends, client, request)
    except grpc.aio.AioRpcError as error:
        if error.code() in OVERLOAD or error.code() == grpc.StatusCode.UNAVAILABLE:
            log.warning("bws3 call -> UNAVAILABLE: gRPC %s: %s", error.code().name, error.details())
            raise Bws3Error(grpc.StatusCode.UNAVAILABLE, "A backend service is busy or unavailable; "
                                                         "try again shortly.") from None
        if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
            raise Bws3Error(grpc.StatusCode.INVALID_ARGUMENT, error.details() or "The request is invalid.") from None
        log.error("bws3 call -> INTERNAL: gRPC %s: %s", error.code().name, error.details())
        raise Bws3Error(grpc.StatusCode.INTERNAL, "An unexpected server error occurred.") from None
    except StorageUnavailable:
        raise Bws3Error(grpc.StatusCode.UNAVAILABLE, "The storage service is unavailable; try again shortly.") from None
    finally:
        if with_images:
            backends.calls.leave()


def reply_headers(reference_number: str | None) -> dict[str, str]:
    headers = {"jobid": str(uuid.uuid4()), "bws-version": __version__, "date": email.utils.formatdate(usegmt=True)}
    if reference_number:
        headers["reference-number"] = reference_number[:REFERENCE_NUMBER_MAX]
    return headers


# -- gRPC --------------------------------------------------------------------------------


class _Edge:
    """What both gRPC servicers share: who calls, the reply metadata, errors as statuses."""

    def __init__(self, backends: Backends) -> None:
        self.backends = backends

    async def _serve(self, call: Call, request: Message, context: grpc.aio.ServicerContext,
                     with_images: bool = False) -> Any:
        began = time.perf_counter()
        metadata = {k.lower(): v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        headers = reply_headers(metadata.get("reference-number"))
        token = logs.request_id.set(headers["jobid"])
        await context.send_initial_metadata(tuple(headers.items()))
        try:
            client = client_of(metadata.get("authorization", ""), self.backends.settings)
            return await perform(call, self.backends, client, request, with_images)
        except Bws3Error as error:
            log.info("bws3 gRPC -> %s: %s", error.code.name, error.message)
            context.set_code(error.code)
            context.set_details(error.message)
            return None
        except Exception:
            log.exception("bws3 gRPC -> INTERNAL: unexpected fault")
            context.set_code(grpc.StatusCode.INTERNAL)
            context.set_details(f"An unexpected server error occurred (job {headers['jobid']}).")
            return None
        finally:
            context.set_trailing_metadata((("response-time-ms", str(round((time.perf_counter() - began) * 1000))),))
            logs.request_id.reset(token)


class FaceRecognitionServicer(_Edge, facerecognition_pb2_grpc.FaceRecognitionServicer):
    async def Enroll(self, request: fr.FaceEnrollmentRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._serve(calls.enroll, request, context, with_images=True)

    async def Verify(self, request: fr.FaceVerificationRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._serve(calls.verify, request, context, with_images=True)

    async def Search(self, request: fr.FaceSearchRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._serve(calls.search, request, context, with_images=True)

    async def SetTemplateTags(self, request: fr.SetTemplateTagsRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._serve(calls.set_template_tags, request, context)

    async def GetTemplateStatus(self, request: fr.FaceTemplateStatusRequest,
                                context: grpc.aio.ServicerContext) -> Any:
        return await self._serve(calls.get_template_status, request, context)

    async def DeleteTemplate(self, request: fr.DeleteTemplateRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._serve(calls.delete_template, request, context)


class BioIDWebServiceServicer(_Edge, bws_pb2_grpc.BioIDWebServiceServicer):
    async def LivenessDetection(self, request: bws_pb2.LivenessDetectionRequest,
                                context: grpc.aio.ServicerContext) -> Any:
        return await self._serve(liveness_calls.liveness_detection, request, context, with_images=True)

    async def VideoLivenessDetection(self, request: bws_pb2.VideoLivenessDetectionRequest,
                                     context: grpc.aio.ServicerContext) -> Any:
        return await self._serve(liveness_calls.video_liveness_detection, request, context, with_images=True)

    async def PhotoVerify(self, request: bws_pb2.PhotoVerifyRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._serve(liveness_calls.photo_verify, request, context, with_images=True)


class Health(health_aio.HealthServicer):
    """``grpc.health.v1.Health`` as BWS 3 clients ask it: ``liveness`` (the process answers) and
    ``readiness`` (the services and the store answer, as ``/readyz``); "" is readiness too."""

    def __init__(self, backends: Backends) -> None:
        super().__init__()
        self.backends = backends

    async def Check(self, request: health_pb2.HealthCheckRequest,
                    context: grpc.aio.ServicerContext) -> health_pb2.HealthCheckResponse:
        serving = health_pb2.HealthCheckResponse.SERVING
        if request.service == "liveness":
            return health_pb2.HealthCheckResponse(status=serving)
        if request.service not in ("", "readiness"):
            await context.abort(grpc.StatusCode.NOT_FOUND, "Unknown service; ask liveness or readiness.")
        ready = not await self.backends.not_ready()
        return health_pb2.HealthCheckResponse(status=serving if ready else health_pb2.HealthCheckResponse.NOT_SERVING)


async def grpc_server_ctx(app: web.Application) -> AsyncIterator[None]:
    """The gRPC server, started and stopped with the app (after the backends it calls)."""
    settings = app[SETTINGS]
    backends = app[BACKENDS]
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", settings.max_request_bytes),
                 ("grpc.max_send_message_length", 64 * 1024 * 1024),
                 ("grpc.max_connection_idle_ms", int(settings.keepalive_seconds * 4000))],
        maximum_concurrent_rpcs=settings.max_connections,
    )
    facerecognition_pb2_grpc.add_FaceRecognitionServicer_to_server(FaceRecognitionServicer(backends), server)
    bws_pb2_grpc.add_BioIDWebServiceServicer_to_server(BioIDWebServiceServicer(backends), server)
    health_pb2_grpc.add_HealthServicer_to_server(Health(backends), server)
    address = f"{settings.host}:{settings.grpc_port}"
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"cannot listen on {address} (BWS_GRPC_PORT)")
    await server.start()
    log.info("BWS 3 gRPC API listening on %s", address)
    yield
    await server.stop(grace=5.0)


# -- REST --------------------------------------------------------------------------------


def rest_error(error: Bws3Error, headers: dict[str, str]) -> web.Response:
    status = error.http_status or GRPC_TO_HTTP.get(error.code, (500, ""))[0]
    if status == 401:
        headers = {**headers, "WWW-Authenticate": 'Bearer realm="BWS"'}
    if status == 408:  # the rest of a stalled body is never read: the connection goes
        headers = {**headers, "Connection": "close"}
    return web.json_response({"code": error.code.value[0], "message": error.message}, status=status, headers=headers)


def _parse(raw: Any, message: Request) -> Request:
    try:
        return json_format.ParseDict(raw, message)
    except (json_format.ParseError, ValueError, TypeError, AttributeError) as error:
        raise Bws3Error(grpc.StatusCode.INVALID_ARGUMENT, f"The body does not match the call's message: {error}"
                        ) from None


def _class_id(request: web.Request) -> int:
    """The path's class id as an int64 (``facerecognition.bcid`` refuses one that is not positive)."""
    try:
        value = int(request.match_info.get("classId", ""))
    except ValueError:
        value = 0
    return value if 0 < value <= 2**63 - 1 else 0  # 0: refused, with BioID's message, by bcid()


async def _json_body(request: web.Request) -> Any:
    """The JSON body: at most ``BWS_MAX_REQUEST_BYTES`` (413), in full within
    ``BWS_BODY_TIMEOUT_SECONDS`` (408, and the connection is closed)."""
    settings = request.config_dict[SETTINGS]
    try:
        body = await asyncio.wait_for(request.clone(client_max_size=settings.max_request_bytes).read(),
                                      settings.body_timeout_seconds)
    except web.HTTPRequestEntityTooLarge:
        raise Bws3Error(grpc.StatusCode.INVALID_ARGUMENT,
                        f"The request is too large (limit {settings.max_request_bytes} bytes).", 413) from None
    except TimeoutError:
        raise Bws3Error(grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"The request body did not arrive within {settings.body_timeout_seconds:g} seconds.",
                        408) from None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise Bws3Error(grpc.StatusCode.INVALID_ARGUMENT, "The body must be JSON.") from None


# How each route builds its request message: the path's classId, the body where the route
# takes it (BioID's google.api.http rules: body "images", "image", "tags" or "*").
async def _enroll_request(request: web.Request) -> Message:
    body = await _json_body(request)
    message = _parse({"images": body} if isinstance(body, list) else body, fr.FaceEnrollmentRequest())
    message.classId = _class_id(request)
    return message


async def _verify_request(request: web.Request) -> Message:
    return fr.FaceVerificationRequest(classId=_class_id(request),
                                      image=_parse(await _json_body(request), messages.ImageData()))


async def _tags_request(request: web.Request) -> Message:
    body = await _json_body(request)
    message = _parse({"tags": body} if isinstance(body, list) else body, fr.SetTemplateTagsRequest())
    message.classId = _class_id(request)
    return message


async def _status_request(request: web.Request) -> Message:
    raw = request.query.get("downloadThumbnails", "false").lower()
    if raw not in ("true", "false"):
        raise Bws3Error(grpc.StatusCode.INVALID_ARGUMENT, "downloadThumbnails must be true or false.")
    return fr.FaceTemplateStatusRequest(classId=_class_id(request), download_thumbnails=raw == "true")


async def _delete_request(request: web.Request) -> Message:
    return fr.DeleteTemplateRequest(classId=_class_id(request))


def _whole_body(message: type[Message]) -> Callable[[web.Request], Awaitable[Message]]:
    """A route whose body is the whole request message (BioID's ``body: "*"``)."""
    async def build(request: web.Request) -> Message:
        return _parse(await _json_body(request), message())

    return build


_INT64 = frozenset({FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64,
                    FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64})


def to_json(message: Message) -> dict[str, Any]:
    """The message as proto3 JSON (``json_format``, every field written), except that 64-bit
    integers are JSON numbers: BioID's own REST client reads ``classId`` as a number and fails
    on the string proto3 JSON would write. (Requests may send either.)"""
    as_dict = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    _int64_to_numbers(as_dict, message.DESCRIPTOR)
    return as_dict


def _int64_to_numbers(value: dict[str, Any], descriptor: Any) -> None:
    for field in descriptor.fields:
        if field.json_name not in value:
            continue
        items = value[field.json_name] if field.is_repeated else [value[field.json_name]]
        if field.type in _INT64:
            converted = [int(item) for item in items]
            value[field.json_name] = converted if field.is_repeated else converted[0]
        elif field.type == FieldDescriptor.TYPE_MESSAGE and not field.message_type.full_name.startswith("google."):
            for item in items:
                _int64_to_numbers(item, field.message_type)


def rest_handler(build: Callable[[web.Request], Awaitable[Message]], call: Call, with_images: bool = False
                 ) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        headers = reply_headers(request.headers.get("Reference-Number"))
        token = logs.request_id.set(headers["jobid"])
        try:
            backends = request.config_dict[BACKENDS]
            client = client_of(request.headers.get("Authorization", ""), backends.settings)
            reply = await perform(call, backends, client, await build(request), with_images)
        except Bws3Error as error:
            log.info("%s %s -> %s: %s", request.method, request.path, error.code.name, error.message)
            return rest_error(error, headers)
        except Exception:
            log.exception("%s %s -> 500: unexpected fault", request.method, request.path)
            return rest_error(Bws3Error(grpc.StatusCode.INTERNAL,
                                        f"An unexpected server error occurred (job {headers['jobid']})."), headers)
        finally:
            logs.request_id.reset(token)
        return web.json_response(to_json(reply), headers=headers)

    return handle


ROUTES = [
    ("POST", "/api/face/v1/enroll/{classId}", rest_handler(_enroll_request, calls.enroll, True)),
    ("POST", "/api/face/v1/verify/{classId}", rest_handler(_verify_request, calls.verify, True)),
    ("POST", "/api/face/v1/search", rest_handler(_whole_body(fr.FaceSearchRequest), calls.search, True)),
    ("PUT", "/api/face/v1/template/{classId}/tags", rest_handler(_tags_request, calls.set_template_tags)),
    ("GET", "/api/face/v1/template/status/{classId}", rest_handler(_status_request, calls.get_template_status)),
    ("DELETE", "/api/face/v1/template/{classId}", rest_handler(_delete_request, calls.delete_template)),
    ("POST", "/api/v1/livenessdetection",
     rest_handler(_whole_body(bws_pb2.LivenessDetectionRequest), liveness_calls.liveness_detection, True)),
    ("POST", "/api/v1/videolivenessdetection",
     rest_handler(_whole_body(bws_pb2.VideoLivenessDetectionRequest), liveness_calls.video_liveness_detection, True)),
    ("POST", "/api/v1/photoverify",
     rest_handler(_whole_body(bws_pb2.PhotoVerifyRequest), liveness_calls.photo_verify, True)),
]
