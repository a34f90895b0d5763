"""Logging for all processes: one line per event, with process, version and request id.

The request id comes from the client's ``X-Request-Id`` header (or is made by the gateway),
travels to the services as gRPC metadata, and is kept in a context variable so that every log
line of the request carries it, in all three processes. ``BWS_LOG_FORMAT=json`` switches to
JSON lines for production; the default is readable text.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys

from bws import __version__

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
REQUEST_ID_METADATA = "x-request-id"


class _ContextFilter(logging.Filter):
    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.service = self.process
        record.version = __version__
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "service": record.service,  # type: ignore[attr-defined]
            "version": record.version,  # type: ignore[attr-defined]
            "request_id": record.request_id,  # type: ignore[attr-defined]
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup(process: str) -> None:
    """Configure the root logger of a process once, at start."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter(process))
    if os.environ.get("BWS_LOG_FORMAT", "text").lower() == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(service)s %(version)s [%(request_id)s] %(name)s: %(message)s"
        ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("BWS_LOG_LEVEL", "INFO").upper())
