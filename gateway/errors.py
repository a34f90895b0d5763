"""The gateway's one error table and the middleware that applies it.

Every non-200 reply has the BWS body ``{"Message": "..."}``: a clear sentence, never a
traceback (that goes to the log, with the request id). gRPC status codes of the services map
to HTTP here and nowhere else.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable

import grpc
from aiohttp import web

from bws import logs
from bws.images import InvalidImage
from bws.storage import StorageUnavailable
from gateway.backends import SETTINGS

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """A client-visible error: an HTTP status and a sentence."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def unauthorized(message: str, scheme: str = "Bearer") -> ApiError:
    return ApiError(401, message, {"WWW-Authenticate": f'{scheme} realm="BWS"'})


# gRPC status → HTTP status and message, for faults that reach the client as errors.
# (Overload on biometric calls is an outcome, ExecutionOfJobTimedOut: see handlers.)
GRPC_TO_HTTP: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "The request is invalid."),
    grpc.StatusCode.UNAUTHENTICATED: (401, "Not authenticated."),
    grpc.StatusCode.PERMISSION_DENIED: (403, "Not allowed."),
    grpc.StatusCode.NOT_FOUND: (404, "Not found."),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (503, "The server is too busy; try again shortly."),
    grpc.StatusCode.DEADLINE_EXCEEDED: (503, "The server is too busy; try again shortly."),
    grpc.StatusCode.UNAVAILABLE: (503, "A backend service is unavailable; try again shortly."),
    grpc.StatusCode.UNIMPLEMENTED: (501, "Not implemented."),
}
OVERLOAD = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED})

_REQUEST_ID = re.compile(r"^[\w.:-]{1,64}$")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"Message": message}, status=status, headers=headers)


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Take the client's X-Request-Id (or make one), bind it to the logs, echo it."""
    incoming = request.headers.get("X-Request-Id", "")
    rid = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
    token = logs.request_id.set(rid)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers["X-Request-Id"] = rid
        raise
    finally:
        logs.request_id.reset(token)
    response.headers["X-Request-Id"] = rid
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        log.info("%s %s -> %d: %s", request.method, request.path, error.status, error.message)
        return error_response(error.status, error.message, error.headers)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_upload_bytes
        return error_response(413, f"The request body is too large (limit {limit} bytes).")
    except InvalidImage as error:
        return error_response(400, str(error))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # aiohttp's own errors (404, 405, ...) get the BWS body too.
        return error_response(exc.status, exc.reason, {k: v for k, v in exc.headers.items()
                                                       if k.lower() in ("allow", "www-authenticate")})
    except grpc.aio.AioRpcError as error:
        status, message = GRPC_TO_HTTP.get(error.code(), (500, "An unexpected server error occurred."))
        log.warning("%s %s -> %d: gRPC %s: %s", request.method, request.path, status,
                    error.code().name, error.details())
        return error_response(status, message)
    except StorageUnavailable:
        log.warning("%s %s -> 503: storage unavailable", request.method, request.path)
        return error_response(503, "The storage service is unavailable; try again shortly.")
    except Exception:
        log.exception("%s %s -> 500: unexpected fault", request.method, request.path)
        return error_response(
            500, f"An unexpected server error occurred (request id {logs.request_id.get()})."
        )
