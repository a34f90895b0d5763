"""Snapshots of a partition's search index, kept in the store, so that a new replica loads a
partition of a million classes in seconds instead of reading a million templates.

    indexes/{storage}/{partition}/snapshot/{position}

``position`` is the change-log position the snapshot covers (the newest entry applied, or the
time the index was built from the templates, as a 20-digit nanosecond count): a replica loads
the newest snapshot and catches up with the log from a little before it, as after a build
(enroll_service/matching.py). The content is the index's centroids and class ids — derived
from biometric templates, so sealed with the template key like them, in 4 MiB chunks
(``bws/sealing.py``): written and read without a second copy of the matrix.

One chunk of JSON (format, encoder, rows, class numbers, tags, outdated classes), then the
float32 matrix, 8,192 rows per chunk. A snapshot of another encoder, or one older than the
change log keeps (``REBUILD_AFTER_SECONDS``), is not used; neither is one that does not open
(another key, damaged): the index is then built from the templates, as before snapshots.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import numpy as np

from bws.sealing import Readable, Sealer, SealError, open_stream
from bws.storage import INDEXES, ObjectStore, StorageUnavailable
from enroll_service.templates import TemplateStore

log = logging.getLogger(__name__)

MAGIC = b"BWSINDEX1"
FORMAT = 1
ROWS_PER_CHUNK = 8192  # 4 MiB of float32 rows of 128
MAX_CHUNK = 64 * 1024 * 1024  # the JSON chunk of a large partition: class numbers and tags
PART_SIZE = 16 * 1024 * 1024  # multipart upload part
KEEP = 2  # snapshots kept per partition (the newest, and the one before while it is written)


def snapshot_prefix(prefix: str) -> str:
    return f"{INDEXES}{prefix}/snapshot/"


def position_nanos(position: str) -> int:
    """The nanoseconds of a change-log key or snapshot name."""
    return int(position.rsplit("/", 1)[-1].split("-")[0])


class _Stream:
    """A readable file over chunks made on demand (what the S3 client uploads in parts)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = bytearray()

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        count = len(self._buffer) if size < 0 else min(size, len(self._buffer))
        out = bytes(self._buffer[:count])
        del self._buffer[:count]
        return out


def _sealed_chunks(sealer: Sealer, meta: bytes, matrix: np.ndarray) -> Iterator[bytes]:
    yield sealer.header
    rows = len(matrix)
    yield sealer.seal(meta, final=rows == 0)
    for start in range(0, rows, ROWS_PER_CHUNK):
        block = np.ascontiguousarray(matrix[start:start + ROWS_PER_CHUNK], dtype=np.float32)
        yield sealer.seal(block.tobytes(), final=start + ROWS_PER_CHUNK >= rows)


def write(store: ObjectStore, templates: TemplateStore, prefix: str, position: str, class_ids: list[str],
          matrix: np.ndarray, tags: list[frozenset[str]], outdated: set[str]) -> str:
    """Store a snapshot of an index (its rows as given: a copy the caller no longer changes);
    returns its key. Older snapshots beyond ``KEEP`` are deleted."""
    numbers = [c.rsplit("/", 1)[-1] for c in class_ids]
    meta = json.dumps({"format": FORMAT, "encoder": [templates.encoder.name, templates.encoder.version],
                       "rows": len(class_ids), "classes": numbers,
                       "tags": {str(row): sorted(t) for row, t in enumerate(tags) if t},
                       "outdated": sorted(c.rsplit("/", 1)[-1] for c in outdated)}).encode()
    sealer = Sealer(templates.key, MAGIC, bytes.fromhex(templates.key_id))
    key = f"{snapshot_prefix(prefix)}{position_nanos(position):020d}"
    began = time.monotonic()
    store.put_stream(key, _Stream(_sealed_chunks(sealer, meta, matrix)), PART_SIZE)
    older = sorted(store.list_keys(snapshot_prefix(prefix)))[:-KEEP]
    store.delete(older)
    log.info("index %s: snapshot of %d classes written in %.1f s", prefix, len(class_ids), time.monotonic() - began)
    return key


def newest(store: ObjectStore, prefix: str) -> str | None:
    """The key of a partition's newest snapshot, if any."""
    keys = store.list_keys(snapshot_prefix(prefix))
    return max(keys) if keys else None


def read(store: ObjectStore, templates: TemplateStore, key: str
         ) -> tuple[list[str], np.ndarray, list[frozenset[str]], set[str]] | None:
    """A snapshot's class ids, matrix, tags and outdated classes; None when it cannot be used
    (another encoder, another key, damaged: the caller builds the index from the templates)."""
    prefix = key[len(INDEXES):].split("/snapshot/")[0]
    try:
        with store.stream(key) as source:
            chunks = open_stream(source, MAGIC, templates.key_by_id, MAX_CHUNK, "index snapshot")
            meta = json.loads(next(chunks))
            if meta.get("format") != FORMAT or meta.get("encoder") != [templates.encoder.name,
                                                                          templates.encoder.version]:
                log.info("index %s: the snapshot is of another format or encoder; not used", prefix)
                return None
            rows = int(meta["rows"])
            matrix = np.empty((rows, 128), np.float32)
            filled = 0
            for chunk in chunks:
                block = np.frombuffer(chunk, np.float32).reshape(-1, 128)
                if filled + len(block) > rows:
                    raise SealError("the index snapshot holds more rows than it says")
                matrix[filled:filled + len(block)] = block
                filled += len(block)
            if filled != rows:
                raise SealError("the index snapshot holds fewer rows than it says")
    except (SealError, StopIteration, ValueError, KeyError) as error:
        log.warning("index %s: the snapshot %s cannot be used (%s); building from the templates", prefix, key, error)
        return None
    except StorageUnavailable:
        raise
    class_ids = [f"{prefix}/{number}" for number in meta["classes"]]
    tags: list[frozenset[str]] = [frozenset()] * rows
    for row, found in meta["tags"].items():
        tags[int(row)] = frozenset(found)
    return class_ids, matrix, tags, {f"{prefix}/{number}" for number in meta["outdated"]}


def sealed_key_id(head: bytes) -> str | None:
    """The id of the key that sealed a snapshot (its first 17 bytes suffice)."""
    return head[len(MAGIC):len(MAGIC) + 8].hex() if head.startswith(MAGIC) and len(head) >= len(MAGIC) + 8 else None


def reseal(store: ObjectStore, templates: TemplateStore, key: str) -> bool:
    """Seal a snapshot with the current template key if another key sealed it (a key
    rotation), a chunk at a time; whether it was. One that does not open is deleted: the next
    replica builds the index from the templates and writes a new one."""
    head = store.get_range(key, len(MAGIC) + 8)
    if head is None or sealed_key_id(head) == templates.key_id:
        return False
    sealer = Sealer(templates.key, MAGIC, bytes.fromhex(templates.key_id))

    def chunks(source: Readable) -> Iterator[bytes]:
        yield sealer.header
        held = None
        for plain in open_stream(source, MAGIC, templates.key_by_id, MAX_CHUNK, "index snapshot"):
            if held is not None:
                yield sealer.seal(held)
            held = plain
        yield sealer.seal(held or b"", final=True)

    try:
        with store.stream(key) as source:
            store.put_stream(key, _Stream(chunks(source)), PART_SIZE)
    except SealError as error:
        log.warning("the index snapshot %s cannot be opened (%s): deleted", key, error)
        store.delete([key])
    return True
