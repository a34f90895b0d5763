"""The audit trail: who did what to which class, and how it ended, kept in the object store.

Every biometric call (classic and BWS 3: enroll, verify, identify/search, liveness, photo
verify, template status, tags), every deleteclass and every admin action writes one record:
time, app (or ``admin``), BCID (when the call names a class), action, outcome, request id and
the API (``classic``, ``bws3``, ``admin``). Never an image, an embedding or a score: the record
says what was done, not what the face was.

Records are collected in memory and written every ``BWS_AUDIT_FLUSH_SECONDS`` (and when a
process stops) as one new object per batch::

    audit/{YYYY-MM-DD}/{HH}/{nanos of the first record:020d}-{random}.jsonl

Append-only: a batch is created with ``If-None-Match: *`` and never written again; nothing in
the project changes or deletes it, except the bucket's lifecycle rule after
``BWS_AUDIT_RETENTION_DAYS``. A delete is recorded like any call, so the trail outlives the
class. Keys sort by time, so a query by time range lists only that range (``query``).

What can be lost: the records of the last ``flush_seconds`` when a process is killed
(SIGKILL, a crashed node), and, while the store is down, records beyond ``MAX_PENDING`` (each
loss is logged as an error with the count).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from bws import logs
from bws.storage import AUDIT, ObjectStore, PreconditionFailed, StorageUnavailable

log = logging.getLogger(__name__)

MAX_PENDING = 100_000  # records kept while the store cannot take them (about 30 MB)
# A batch is named by its first record's time; its last may be up to a flush interval later.
# Queries list from this long before their start, so no record in range is missed.
BATCH_SPAN = timedelta(minutes=5)


@dataclass(frozen=True)
class AuditRecord:
    time: str  # ISO 8601, UTC, milliseconds
    api: str  # classic, bws3 or admin
    app: str  # the app (client) id, or "admin" for bws-admin
    action: str  # e.g. enrollment, verification, identification, livenessdetection, deleteclass
    bcid: str | None  # storage/partition/classid, when the call names a class
    outcome: str  # e.g. succeeded, NoFaceFound, not recognized, http 403, UNAVAILABLE
    request_id: str

    @classmethod
    def now(cls, api: str, app: str, action: str, bcid: str | None, outcome: str,
            request_id: str | None = None) -> AuditRecord:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return cls(stamp, api, app, action, bcid, outcome, request_id or logs.request_id.get())

    @property
    def moment(self) -> datetime:
        return parse_time(self.time)


def parse_time(value: str) -> datetime:
    """An ISO 8601 time (``Z`` or an offset; a date alone is its midnight), as UTC."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _batch_prefix(moment: datetime) -> str:
    return f"{AUDIT}{moment:%Y-%m-%d}/{moment:%H}/"


class AuditLog:
    """Collects records and writes them in batches (``flush``); thread-safe."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._pending: list[AuditRecord] = []
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._first_nanos = 0
        self.lost = 0

    def record(self, api: str, app: str, action: str, bcid: str | None, outcome: str,
               request_id: str | None = None) -> None:
        entry = AuditRecord.now(api, app, action, bcid, outcome, request_id)
        with self._lock:
            if len(self._pending) >= MAX_PENDING:
                self.lost += 1
                return
            if not self._pending:
                self._first_nanos = time.time_ns()  # names the batch: batches sort as they began
            self._pending.append(entry)

    def flush(self) -> int:
        """Write what is pending as one batch; how many records went. When the store fails the
        records stay pending for the next flush (StorageUnavailable is raised)."""
        with self._flushing:
            with self._lock:
                batch, self._pending = self._pending, []
                lost, self.lost = self.lost, 0
                nanos = self._first_nanos
            if lost:
                log.error("audit: %d record(s) lost: the store did not take them in time", lost)
            if not batch:
                return 0
            first = datetime.fromtimestamp(nanos / 1e9, UTC)
            key = f"{_batch_prefix(first)}{nanos:020d}-{os.urandom(6).hex()}.jsonl"
            body = "".join(json.dumps(asdict(r), separators=(",", ":")) + "\n" for r in batch).encode()
            try:
                self.store.put_conditional(key, body)
            except (StorageUnavailable, PreconditionFailed):
                with self._lock:  # back in front, for the next flush
                    self._pending[:0] = batch
                    self._first_nanos = nanos
                raise
            return len(batch)

    async def run(self, every_seconds: float) -> None:
        """Flush every ``every_seconds`` until cancelled; then flush once more."""
        try:
            while True:
                await asyncio.sleep(every_seconds)
                await self._flush_logged()
        finally:
            await self._flush_logged()

    async def _flush_logged(self) -> None:
        try:
            await asyncio.to_thread(self.flush)
        except (StorageUnavailable, PreconditionFailed):
            log.warning("audit: the store did not take %d pending record(s); trying again", len(self._pending))


def query(store: ObjectStore, since: datetime, until: datetime | None = None, *, app: str | None = None,
          bcid: str | None = None, action: str | None = None) -> Iterator[AuditRecord]:
    """The records from ``since`` to ``until`` (default: now), oldest first (by batch), that
    match every filter given; ``bcid`` may name a whole storage or partition (``bws/1``)."""
    until = until or datetime.now(UTC)
    start = since - BATCH_SPAN
    start_after = f"{_batch_prefix(start)}{int(start.timestamp() * 1e9):020d}"
    for key in store.iter_keys(AUDIT, start_after=start_after):
        day_hour = key[len(AUDIT):].split("/")[:2]
        if len(day_hour) == 2 and f"{day_hour[0]}T{day_hour[1]}" > f"{until:%Y-%m-%dT%H}":
            break
        body = store.get(key)
        for line in (body or b"").splitlines():
            try:
                entry = AuditRecord(**json.loads(line))
            except (ValueError, TypeError):
                continue
            if not since <= entry.moment <= until:
                continue
            if app is not None and entry.app != app:
                continue
            if action is not None and entry.action != action:
                continue
            if bcid is not None and not (entry.bcid == bcid or (entry.bcid or "").startswith(bcid + "/")):
                continue
            yield entry
