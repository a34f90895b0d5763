"""Serving the gateway app: the listening socket, a cap on open connections, and the shutdown.

aiohttp's ``run_app`` accepts every connection and keeps one that sends its headers byte by
byte for the keep-alive time; twenty thousand such connections exhausted the process's file
descriptors. Here:

* at most ``BWS_MAX_CONNECTIONS`` connections are open; a new one beyond is answered 503
  (``Retry-After: 1``) and closed at once, so the health endpoints of a replica that is flooded
  still answer on the connections it has, and the process never runs out of descriptors;
* ``BWS_KEEPALIVE_SECONDS`` closes a connection whose request headers have not arrived that
  long after it opened or after its last reply (aiohttp's keep-alive timer covers both);
* request bodies are read with ``BWS_BODY_TIMEOUT_SECONDS`` (``gateway/auth.read_body``);
* events that can come by the thousand (connections refused, accept errors) are logged once
  and then summed up every 10 s (``bws.logs.CountedEvents``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import signal
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from bws import logs
from bws.metrics import GATEWAY_REFUSED
from bws.settings import GatewaySettings

log = logging.getLogger(__name__)
# Descriptors kept for what the process opens itself: store connections, gRPC channels, files.
RESERVED_DESCRIPTORS = 256

_BUSY = json.dumps({"Message": "The server has too many open connections; try again shortly."}).encode()
BUSY_REPLY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"
              b"Retry-After: 1\r\nConnection: close\r\nContent-Length: " + str(len(_BUSY)).encode()
              + b"\r\n\r\n" + _BUSY)


class _Busy(asyncio.Protocol):
    """A connection beyond the cap: told so, and closed. The reply is followed by a half-close
    and what the client still sends is read and dropped for up to a second: closing with unread
    input would reset the connection and lose the reply."""

    LINGER_SECONDS = 1.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(BUSY_REPLY)
        if transport.can_write_eof():
            transport.write_eof()
        asyncio.get_running_loop().call_later(self.LINGER_SECONDS, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # dropped


class AccessLog(AbstractAccessLogger):
    """One line per request: client, request line, status, size, seconds. Secret query values
    (the token of /uui and /extension/result) are redacted: a usable token never reaches a log."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        version = f"HTTP/{request.version.major}.{request.version.minor}"
        self.logger.info('%s "%s %s %s" %d %d %.6fs', request.remote or "-", request.method,
                         logs.redact_query(request.path_qs), version, response.status, response.body_length, time)


def raise_descriptor_limit() -> int:
    """Raise this process's open-file limit to the hard limit; the soft limit it now has."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


class ConnectionCap:
    """The protocol factory of the listening socket: aiohttp's handler while there is room.

    Counted here, from the moment a connection is accepted to the moment it is lost: aiohttp's
    own list of connections grows only once a connection is set up, after a whole burst of them
    may have been accepted.
    """

    def __init__(self, server: web.Server, limit: int) -> None:
        self.server = server
        self.limit = limit
        self.open = 0
        self.refusals = logs.CountedEvents(log, "connections refused (too many open)")

    def __call__(self) -> asyncio.BaseProtocol:
        if self.open >= self.limit:
            GATEWAY_REFUSED.labels("connection").inc()
            self.refusals.add(f"limit {self.limit}")
            return _Busy()
        self.open += 1
        return _Counted(self.server(), self)


class _Counted(asyncio.Protocol):
    """aiohttp's handler of one connection, which gives its place back when the connection ends."""

    def __init__(self, inner: asyncio.Protocol, cap: ConnectionCap) -> None:
        self.inner = inner
        self.cap = cap

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.cap.open -= 1
        self.inner.connection_lost(exc)


def summarize_loop_errors(loop: asyncio.AbstractEventLoop) -> logs.CountedEvents:
    """asyncio's own errors (e.g. accept failing when descriptors run out) as counted events,
    not a traceback each: the first of a kind in full, the rest summed up."""
    events = logs.CountedEvents(log, "event loop errors")
    seen: set[str] = set()

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        kind = str(context.get("message", "error"))
        if kind not in seen:
            seen.add(kind)
            loop.default_exception_handler(context)
        events.add(kind)

    loop.set_exception_handler(handle)
    return events


async def serve(app: web.Application, settings: GatewaySettings) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then finish the requests in flight and stop."""
    loop = asyncio.get_running_loop()
    loop_errors = summarize_loop_errors(loop)
    descriptors = raise_descriptor_limit()
    limit = min(settings.max_connections, max(8, descriptors - RESERVED_DESCRIPTORS))
    if limit < settings.max_connections:
        log.warning("BWS_MAX_CONNECTIONS lowered to %d: the process may open %d files", limit, descriptors)
    runner = web.AppRunner(app, access_log_class=AccessLog, keepalive_timeout=settings.keepalive_seconds,
                           shutdown_timeout=10.0)
    await runner.setup()
    assert runner.server is not None
    cap = ConnectionCap(runner.server, limit)
    listener = await loop.create_server(cap, settings.host, settings.port, backlog=1024)
    log.info("listening on http://%s:%d (at most %d connections)", settings.host, settings.port, limit)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        listener.close()
        await runner.cleanup()
        cap.refusals.close()
        loop_errors.close()
