"""Matching: 1:1 scores and the in-memory 1:N index of a partition.

A class is represented by the centroid of its template's embeddings (the normalised mean of
the face images enrolled, which averages over poses and lighting); a probe is the centroid of
the samples of one call. Score = cosine similarity of the two, for verify and identify alike,
so one calibrated threshold serves both.

Identify must search a partition of 100k classes faster than one face embedding takes, so each
partition's centroids live in one float32 matrix in memory and a search is one matrix-vector
product plus a partial sort. The index is built from the templates in storage at first use and
kept current through a change log in storage (``indexes/{storage}/{partition}/log/...``): every
enrollment or deletion, by any replica, appends an entry naming the class; before each search
the index reads the entries it has not applied (one LIST request) and reloads those classes.
Building an index reads no old entries, so start-up costs the same however long the log has
grown; entries expire (``INDEX_LOG_EXPIRY_DAYS``), and an index that has not read the log for
half that time is built again.

A partition of many classes is not built from its templates each time a replica starts: the
replica loads the newest snapshot of the index in the store (enroll_service/snapshots.py) and
catches up with the log from just before its position. A replica writes a snapshot (in the
background, of a copy) after building a partition of at least ``BWS_INDEX_SNAPSHOT_MIN_CLASSES``
classes from its templates, and again once it has applied ``BWS_INDEX_SNAPSHOT_EVERY_CHANGES``
changes or its snapshot is a day old, so that a snapshot is always younger than the log's expiry.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from bws.storage import INDEX_LOG_EXPIRY_DAYS, INDEXES, TEMPLATES, ObjectStore
from enroll_service import snapshots
from enroll_service.templates import TemplateStore

log = logging.getLogger(__name__)

# Replicas' clocks may differ by this much: every RESCAN_SECONDS the log is read again from
# this far before the newest applied entry, to pick up entries a replica with a late clock
# wrote "in the past" (applying an entry twice is harmless). Between rescans a catch-up lists
# only the entries after the newest applied one, usually none.
CLOCK_SKEW_NANOS = 30 * 1_000_000_000
RESCAN_SECONDS = 10.0
# Entries the index has not read may have expired after this long: build it again instead.
REBUILD_AFTER_SECONDS = INDEX_LOG_EXPIRY_DAYS * 24 * 3600 / 2
# A snapshot is written again after this long even without changes: it must stay younger than
# REBUILD_AFTER_SECONDS to be used (and the bucket's rule expires indexes/ after the log's days).
SNAPSHOT_MAX_AGE_NANOS = 24 * 3600 * 1_000_000_000


def centroid(embeddings: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    mean = np.asarray(embeddings, dtype=np.float32).reshape(-1, 128).mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def score(probe: np.ndarray, reference: np.ndarray) -> float:
    """Cosine similarity of two unit vectors."""
    return float(np.dot(probe, reference))


class PartitionIndex:
    """The centroids of one partition's classes, one row each, with each class's tags.

    The rows live in an array with room to grow (an eighth more, at least 1,024 rows): a new
    class is written into it, and the array is copied only when it is full — not once per
    class, which at a million classes cost every replica 0.1 s per class enrolled elsewhere.
    """

    def __init__(self, class_ids: Sequence[str] = (), matrix: np.ndarray | None = None,
                 tags: Sequence[frozenset[str]] | None = None, outdated: set[str] | None = None) -> None:
        self.class_ids = list(class_ids)
        self._rows = np.zeros((0, 128), np.float32) if matrix is None else matrix
        self.rows = {class_id: row for row, class_id in enumerate(self.class_ids)}
        self.tags = list(tags) if tags is not None else [frozenset()] * len(self.class_ids)
        self.outdated = outdated if outdated is not None else set()  # classes another encoder made

    @property
    def matrix(self) -> np.ndarray:
        """One row per class (a view: no copy)."""
        return self._rows[:len(self.class_ids)]

    def __len__(self) -> int:
        return len(self.class_ids)

    def put(self, class_id: str, vector: np.ndarray, tags: Sequence[str] = ()) -> None:
        self.put_many([(class_id, vector, tags)])

    def put_many(self, items: Sequence[tuple[str, np.ndarray, Sequence[str]]]) -> None:
        """Add or replace classes."""
        new = [(c, v, frozenset(t)) for c, v, t in items if c not in self.rows]
        for class_id, vector, tags in items:
            if class_id in self.rows:
                self._rows[self.rows[class_id]] = vector
                self.tags[self.rows[class_id]] = frozenset(tags)
        if not new:
            return
        start = len(self.class_ids)
        if start + len(new) > len(self._rows):
            grown = np.empty((max(start + len(new), start + start // 8 + 1024), 128), np.float32)
            grown[:start] = self._rows[:start]
            self._rows = grown
        self._rows[start:start + len(new)] = np.stack([v for _, v, _ in new])
        for offset, (class_id, _, tag_set) in enumerate(new):
            self.rows[class_id] = start + offset
            self.class_ids.append(class_id)
            self.tags.append(tag_set)

    def remove(self, class_id: str) -> None:
        row = self.rows.pop(class_id, None)
        if row is None:
            return
        last = len(self.class_ids) - 1
        if row != last:  # move the last row into the hole
            moved = self.class_ids[last]
            self.class_ids[row] = moved
            self._rows[row] = self._rows[last]
            self.tags[row] = self.tags[last]
            self.rows[moved] = row
        self.class_ids.pop()
        self.tags.pop()

    def search(self, probe: np.ndarray, top_k: int, threshold: float,
               tags: Sequence[str] = ()) -> list[tuple[str, float]]:
        """The best ``top_k`` classes scoring at least ``threshold`` among those carrying all
        ``tags``, best first."""
        if not self.class_ids:
            return []
        scores = self.matrix @ probe.astype(np.float32)
        if tags:
            required = frozenset(tags)
            scores[~np.fromiter((required <= t for t in self.tags), bool, len(self.tags))] = -np.inf
        k = min(top_k, len(scores))
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best])]
        return [(self.class_ids[i], float(scores[i])) for i in best
                if scores[i] >= threshold and scores[i] > -np.inf]


def record_change(store: ObjectStore, class_id: str) -> None:
    """Append a change-log entry after a template of ``class_id`` was written or deleted (by
    the service, or by a restore): every replica's index reloads the class."""
    storage, partition, number = class_id.split("/")
    entry = f"{INDEXES}{storage}/{partition}/log/{time.time_ns():020d}-{uuid.uuid4().hex[:8]}-{number}"
    store.put(entry, b"", "text/plain")


@dataclass
class _Cached:
    index: PartitionIndex
    applied: set[str]  # log entries already applied (within the skew window)
    newest: str  # the newest applied entry, or the log position the index was built at
    rescanned: float = field(default_factory=time.monotonic)
    read: float = field(default_factory=time.monotonic)  # when the log was last read
    snapshot_nanos: int = 0  # the position of the newest snapshot this index came from or wrote
    changes: int = 0  # log entries applied since then
    snapshotting: bool = False  # a snapshot of it is being written


class IndexCache:
    """One PartitionIndex per (storage, partition), kept current through the change log."""

    def __init__(self, store: ObjectStore, templates: TemplateStore, snapshot_min_classes: int = 10_000,
                 snapshot_every_changes: int = 10_000) -> None:
        self.store = store
        self.templates = templates
        self.snapshot_min_classes = snapshot_min_classes
        self.snapshot_every_changes = snapshot_every_changes
        self._partitions: dict[str, _Cached] = {}
        self._lock = threading.Lock()
        self._snapshots = ThreadPoolExecutor(1, thread_name_prefix="snapshot")  # one upload at a time

    def record_change(self, class_id: str) -> None:
        """Append a change-log entry after a template of ``class_id`` was written or deleted."""
        record_change(self.store, class_id)

    def search(self, storage: str, partition: int, probe: np.ndarray, top_k: int, threshold: float,
               tags: Sequence[str] = ()) -> tuple[list[tuple[str, float]], int, int]:
        """The best matches in a partition, how many classes were searched, and how many were
        not because another encoder made their templates."""
        prefix = f"{storage}/{partition}"
        with self._lock:  # one partition update or search at a time: the matrix is replaced in place
            cached = self._partitions.get(prefix)
            if cached is None or time.monotonic() - cached.read > REBUILD_AFTER_SECONDS:
                cached = self._partitions[prefix] = self._load(prefix) or self._build(prefix)
            else:
                self._catch_up(prefix, cached)
            self._snapshot_if_due(prefix, cached)
            index = cached.index
            return index.search(probe, top_k, threshold, tags), len(index), len(index.outdated)

    def _load(self, prefix: str) -> _Cached | None:
        """The index from the partition's newest snapshot, caught up with the log; None when
        there is none that can be used."""
        began = time.monotonic()
        key = snapshots.newest(self.store, prefix)
        if key is None:
            return None
        nanos = snapshots.position_nanos(key)
        if time.time_ns() - nanos > REBUILD_AFTER_SECONDS * 1e9:  # the log since may be gone
            return None
        found = snapshots.read(self.store, self.templates, key)
        if found is None:
            return None
        class_ids, matrix, tags, outdated = found
        index = PartitionIndex(class_ids, matrix, tags, outdated)
        start = f"{INDEXES}{prefix}/log/{max(0, nanos - CLOCK_SKEW_NANOS):020d}"
        cached = _Cached(index, applied=set(), newest=start, snapshot_nanos=nanos)
        self._catch_up(prefix, cached)
        cached.changes = 0
        log.info("index %s loaded from its snapshot: %d classes in %.2f s", prefix, len(index),
                 time.monotonic() - began)
        return cached

    def _snapshot_if_due(self, prefix: str, cached: _Cached) -> None:
        """Write a snapshot of the index (a copy, in the background) when it is worth one."""
        if cached.snapshotting or len(cached.index) < self.snapshot_min_classes:
            return
        age = time.time_ns() - cached.snapshot_nanos
        if cached.changes < self.snapshot_every_changes and cached.snapshot_nanos and age < SNAPSHOT_MAX_AGE_NANOS:
            return
        index, position = cached.index, cached.newest
        copy = (list(index.class_ids), index.matrix.copy(), list(index.tags), set(index.outdated))
        cached.snapshotting, cached.changes = True, 0

        def write() -> None:
            try:
                snapshots.write(self.store, self.templates, prefix, position, *copy)
                cached.snapshot_nanos = snapshots.position_nanos(position)
            except Exception:
                log.warning("index %s: the snapshot could not be written; trying again later", prefix, exc_info=True)
            finally:
                cached.snapshotting = False

        self._snapshots.submit(write)

    def _log_entries(self, prefix: str, start_after: str | None) -> list[str]:
        return self.store.list_keys(f"{INDEXES}{prefix}/log/", start_after=start_after)

    @staticmethod
    def _nanos(entry: str) -> int:
        return int(entry.rsplit("/", 1)[-1].split("-")[0])

    def _build(self, prefix: str) -> _Cached:
        began = time.monotonic()
        # The templates read below already hold every change logged before now. The next
        # catch-up applies the entries from CLOCK_SKEW_NANOS before now again (harmless): so
        # none written while the templates are read, or by a replica with a late clock, is missed.
        built_at = f"{INDEXES}{prefix}/log/{max(0, time.time_ns() - CLOCK_SKEW_NANOS):020d}"
        class_ids = [k[len(TEMPLATES):] for k in self.store.list_keys(f"{TEMPLATES}{prefix}/")]
        index = PartitionIndex()

        def summary(class_id: str) -> tuple[bool, np.ndarray | None, list[str]] | None:
            """What the index keeps of a template (not the template: memory per class stays small)."""
            template = self.templates.get(class_id)
            if template is None:
                return None
            usable = self.templates.is_current(template) and template.embeddings
            return self.templates.is_current(template), centroid(template.matrix()) if usable else None, template.tags

        with ThreadPoolExecutor(16) as pool:
            loaded = list(pool.map(summary, class_ids))
        index.put_many([(c, found[1], found[2]) for c, found in zip(class_ids, loaded, strict=True)
                        if found is not None and found[1] is not None])
        index.outdated = {c for c, found in zip(class_ids, loaded, strict=True) if found is not None and not found[0]}
        log.info("index %s built: %d classes in %.2f s", prefix, len(index), time.monotonic() - began)
        return _Cached(index, applied=set(), newest=built_at)

    def _catch_up(self, prefix: str, cached: _Cached) -> None:
        start: str | None = cached.newest or None
        if time.monotonic() - cached.rescanned > RESCAN_SECONDS and cached.newest:
            start = f"{INDEXES}{prefix}/log/{max(0, self._nanos(cached.newest) - CLOCK_SKEW_NANOS):020d}"
            cached.rescanned = time.monotonic()
        fresh = [e for e in self._log_entries(prefix, start) if e not in cached.applied]
        cached.read = time.monotonic()
        if not fresh:
            return
        for class_id in {f"{prefix}/{entry.rsplit('-', 1)[-1]}" for entry in fresh}:
            template = self.templates.get(class_id)
            if template is not None and not self.templates.is_current(template):
                cached.index.outdated.add(class_id)
            else:
                cached.index.outdated.discard(class_id)
            if template is None or not template.embeddings or not self.templates.is_current(template):
                cached.index.remove(class_id)
            else:
                cached.index.put(class_id, centroid(template.matrix()), template.tags)
        cached.applied.update(fresh)
        cached.changes += len(fresh)
        cached.newest = max(cached.newest, *fresh)
        horizon = self._nanos(cached.newest) - 2 * CLOCK_SKEW_NANOS
        cached.applied = {e for e in cached.applied if self._nanos(e) >= horizon}
