"""The gateway's app factory and entry point: routes, middlewares, CORS, life cycle."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import platform
import time

import aiohttp_cors
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bws import logs
from bws.metrics import HTTP_LATENCY, HTTP_REQUESTS
from bws.settings import GatewaySettings, redacted
from gateway import biometric, bws3, capture, handlers, openapi, server
from gateway.backends import SETTINGS, backends_ctx
from gateway.errors import Handler, error_middleware, request_id_middleware

log = logging.getLogger(__name__)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time requests per route (the route's pattern, so ids never become labels)."""
    began = time.perf_counter()
    route = request.match_info.route.resource
    endpoint = route.canonical if route is not None else "unmatched"
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        HTTP_REQUESTS.labels(endpoint, request.method, str(status)).inc()
        HTTP_LATENCY.labels(endpoint).observe(time.perf_counter() - began)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(settings: GatewaySettings) -> web.Application:
    app = web.Application(
        # Sample uploads are data URLs of up to several MB: the limit is a setting, and a body
        # above it is answered with 413 by the error middleware.
        client_max_size=settings.max_upload_bytes,
        middlewares=[metrics_middleware, request_id_middleware, error_middleware],
    )
    app[SETTINGS] = settings
    app[openapi.OPENAPI] = openapi.document(settings.public_url)
    app.cleanup_ctx.append(backends_ctx)
    app.cleanup_ctx.append(bws3.grpc_server_ctx)  # BWS 3's gRPC API, on BWS_GRPC_PORT

    routes = [
        ("GET", "/extension/token", handlers.token),
        ("POST", "/extension/upload", handlers.upload),
        ("GET", "/extension/enroll", biometric.enroll),
        ("GET", "/extension/verify", biometric.verify),
        ("GET", "/extension/identify", biometric.identify),
        ("GET", "/extension/livenessdetection", biometric.livenessdetection),
        ("POST", "/extension/livedetection", handlers.livedetection),
        ("GET", "/extension/isenrolled", handlers.isenrolled),
        ("DELETE", "/extension/deleteclass", handlers.deleteclass),
        ("GET", "/extension/result", handlers.result),
        ("GET", "/extension/status", handlers.status),
        ("GET", "/livez", handlers.livez),
        ("GET", "/readyz", handlers.readyz),
        ("GET", "/metrics", metrics),
        ("GET", "/openapi.json", openapi.openapi),
        *bws3.ROUTES,
    ]
    # Browser clients call from other origins with an Authorization header: answer preflights.
    cors = aiohttp_cors.setup(app, defaults={
        origin: aiohttp_cors.ResourceOptions(
            allow_credentials=False, allow_headers="*", max_age=600,
            expose_headers=("X-Request-Id", "jobid", "bws-version", "reference-number"),
        )
        for origin in settings.cors_origins
    })
    for method, path, handler in routes:
        cors.add(app.router.add_route(method, path, handler))
    capture.setup(app, cors)
    return app


# Above its mmap threshold glibc maps fresh pages for an allocation and unmaps them on free,
# so each body chunk asyncio reads (up to 256 KB), each joined upload and each serialized
# 450 KB gRPC message paid for mapping and zeroing its pages again: about 1,900 page faults
# and 4 ms of CPU per enrollment, and reading the body of a refused 600 KB upload (which HTTP
# requires) cost 0.8-1.4 ms instead of 0.15. With these thresholds freed buffers are reused
# (the memory stays with the process; its peak RSS did not change).
MMAP_THRESHOLD_BYTES = 16 * 1024 * 1024  # above the largest body (BWS_MAX_UPLOAD_BYTES, 8 MB)
TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024


def reuse_freed_buffers() -> bool:
    """Have glibc keep large freed buffers for reuse; False (and nothing done) on another libc."""
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)  # the C library already loaded into this process
    m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD_BYTES)
                and libc.mallopt(m_trim_threshold, TRIM_THRESHOLD_BYTES))


def main() -> None:
    logs.setup("gateway")
    if not reuse_freed_buffers():
        log.info("not a glibc process: large buffers are allocated as the C library decides")
    settings = GatewaySettings.from_env()
    log.info("settings: %s", redacted(settings))
    asyncio.run(server.serve(create_app(settings), settings))
