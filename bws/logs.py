"""Logging for all processes: one line per event, with process, version and request id.

The request id comes from the client's ``X-Request-Id`` header (or is made by the gateway),
travels to the services as gRPC metadata, and is kept in a context variable so that every log
line of the request carries it, in all three processes. ``BWS_LOG_FORMAT=json`` switches to
JSON lines for production; the default is readable text.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import json
import logging
import os
import sys
from urllib.parse import parse_qsl, quote, urlsplit

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


class CountedEvents:
    """One log line for events that can come by the hundred a second (requests refused for
    overload): the first is logged at once, the rest are counted and summed up once per
    ``interval`` while they go on.

    A line per event would itself load the server it reports on (under a burst of refusals
    the gateway spent a tenth of its time logging them) and bury the rest of the log; the
    metrics count every one. Needs a running event loop.
    """

    def __init__(self, logger: logging.Logger, what: str, interval: float = 10.0) -> None:
        self._logger = logger
        self._what = what
        self.interval = interval
        self._counts: collections.Counter[str] = collections.Counter()
        self._summary: asyncio.TimerHandle | None = None

    def add(self, kind: str) -> None:
        if self._summary is None:  # the first for a while: said at once
            self._logger.info("%s: %s", self._what, kind)
            self._summary = asyncio.get_running_loop().call_later(self.interval, self._summarize)
        else:
            self._counts[kind] += 1

    def _summarize(self) -> None:
        if not self._counts:  # it has stopped: the next one is said at once again
            self._summary = None
            return
        self._logger.info("%s in the last %g s: %s", self._what, self.interval, self._take_counts())
        self._summary = asyncio.get_running_loop().call_later(self.interval, self._summarize)

    def close(self) -> None:
        """Say what is still counted, and stop the timer."""
        if self._summary is not None:
            self._summary.cancel()
            self._summary = None
            if self._counts:
                self._logger.info("%s: %s more", self._what, self._take_counts())

    def _take_counts(self) -> str:
        """The counts so far, as "3 enrollment, 12 upload"; counting starts again from none."""
        counted = ", ".join(f"{count} {kind}" for kind, count in sorted(self._counts.items()))
        self._counts.clear()
        return counted


# Query parameters whose values are secrets (a BWS token in /uui and /extension/result, ...):
# never written to a log line, also not by the access log.
SECRET_QUERY_KEYS = frozenset({"access_token", "token", "jwt", "secret", "password", "key", "code"})


def redact_query(path_qs: str) -> str:
    """``path_qs`` with the values of secret query parameters replaced by ``[redacted]``."""
    parts = urlsplit(path_qs)
    if not parts.query:
        return path_qs
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if not any(key.lower() in SECRET_QUERY_KEYS for key, _ in pairs):
        return path_qs
    query = "&".join(f"{quote(key, safe='')}=" + ("[redacted]" if key.lower() in SECRET_QUERY_KEYS
                                                  else quote(value, safe=""))
                     for key, value in pairs)
    return f"{parts.path}?{query}"
