"""Template key rotation, online: re-seal every template, thumbnails object and index snapshot
with the current key (``BWS_TEMPLATE_KEY``) that another key (one of ``BWS_TEMPLATE_READ_KEYS``)
sealed.

The enrollment service keeps answering: it reads with either key and writes with the current
one, and each object is re-sealed by a conditional write on the ETag just read, so a template
the service changed meanwhile is read again, never overwritten with stale content
(``TemplateStore.reseal``). Progress is kept in the store (``admin/key-rotation.json``, every
``CHECKPOINT_EVERY`` objects): a run that crashed, or stopped at its ``limit``, resumes after
the last object it recorded. When a pass is complete, ``key_census`` counts which key sealed
each object (a 12-byte range read each), so the report says whether anything is left on an
old key: only then may the old key be removed from the settings.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice

from bws.storage import ADMIN, INDEXES, TEMPLATES, THUMBNAILS, ObjectStore
from enroll_service import snapshots
from enroll_service.templates import TemplateStore, sealed_key_id

CHECKPOINT = ADMIN + "key-rotation.json"
CHECKPOINT_EVERY = 200
BATCH, PARALLEL = 32, 8  # objects handled at once, by this many threads
LEGACY = "none (written before key ids)"


@dataclass
class RotationReport:
    key_id: str  # the current key's id
    resealed: int = 0
    current: int = 0  # already sealed with the current key
    resumed_after: str | None = None
    complete: bool = False
    census: dict[str, int] = field(default_factory=dict)  # key id -> objects (after a complete pass)

    @property
    def left_on_other_keys(self) -> int:
        return sum(count for key, count in self.census.items() if key != self.key_id)


def _sealed_objects(store: ObjectStore, after: str | None = None) -> Iterator[str]:
    """Every object a template key seals, in key order: index snapshots (indexes/ < templates/
    < thumbnails/), templates, thumbnails."""
    for prefix in (INDEXES, TEMPLATES, THUMBNAILS):
        if after and after >= prefix + "\uffff":
            continue
        keys = store.iter_keys(prefix, start_after=after if after and after.startswith(prefix) else None)
        yield from (key for key in keys if prefix != INDEXES or "/snapshot/" in key)


def _reseal(templates: TemplateStore, key: str) -> bool:
    return snapshots.reseal(templates.store, templates, key) if key.startswith(INDEXES) else templates.reseal(key)


def _sealer_of(key: str, head: bytes) -> str:
    found = snapshots.sealed_key_id(head) if key.startswith(INDEXES) else sealed_key_id(head)
    return found or LEGACY


def key_census(store: ObjectStore, progress: Callable[[int], None] = lambda _: None) -> dict[str, int]:
    """How many template and thumbnails objects each key sealed (by key id)."""
    counts: Counter[str] = Counter()

    def sealer(key: str) -> str | None:
        head = store.get_range(key, 24)
        return None if head is None else _sealer_of(key, head)

    with ThreadPoolExecutor(PARALLEL) as pool:
        for batch in _batches(_sealed_objects(store)):
            counts.update(found for found in pool.map(sealer, batch) if found is not None)
            progress(len(batch))
    return dict(counts)


def _batches(keys: Iterator[str], size: Callable[[], int] = lambda: BATCH) -> Iterator[list[str]]:
    while batch := list(islice(keys, size())):
        yield batch


def rotate(store: ObjectStore, templates: TemplateStore, limit: int | None = None, restart: bool = False,
           progress: Callable[[int], None] = lambda _: None) -> RotationReport:
    """Re-seal what another key sealed (at most ``limit`` objects this run), a batch at a time
    in parallel; see the module docstring."""
    report = RotationReport(templates.key_id)
    saved = None if restart else store.get(CHECKPOINT)
    checkpoint = json.loads(saved) if saved else {}
    if checkpoint.get("key_id") == templates.key_id:  # a pass towards another key starts over
        report.resumed_after = checkpoint.get("after")
    last, since_saved = report.resumed_after, 0

    def room() -> int:  # never more in a batch than the limit has left
        return BATCH if limit is None else max(0, min(BATCH, limit - report.resealed))

    with ThreadPoolExecutor(PARALLEL) as pool:
        for batch in _batches(_sealed_objects(store, report.resumed_after), room):
            resealed = sum(pool.map(lambda key: _reseal(templates, key), batch))
            report.resealed += resealed
            report.current += len(batch) - resealed
            last, since_saved = batch[-1], since_saved + len(batch)
            progress(len(batch))
            if since_saved >= CHECKPOINT_EVERY:
                _save(store, templates.key_id, last)
                since_saved = 0
        report.complete = room() > 0  # the keys ran out, not the limit
    if report.complete:
        store.delete([CHECKPOINT])
        report.census = key_census(store)
    elif last:
        _save(store, templates.key_id, last)
    return report


def _save(store: ObjectStore, key_id: str, after: str) -> None:
    store.put(CHECKPOINT, json.dumps({"key_id": key_id, "after": after}).encode(), "application/json")
