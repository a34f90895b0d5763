"""Snapshots of the search index in a real S3 server (enroll_service/snapshots.py): a new
replica loads the index from the newest snapshot and the change log since, without reading the
templates, and finds exactly what a replica that built it from the templates finds."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from bws.storage import ObjectStore
from enroll_service import matching, snapshots
from enroll_service.matching import IndexCache
from enroll_service.templates import TemplateStore
from tests.unit.test_templates import embedding

pytestmark = pytest.mark.integration

COUNT = 300


class CountingTemplates(TemplateStore):
    """A template store that counts the templates it reads."""

    reads = 0

    def get(self, class_id: str):  # type: ignore[no-untyped-def]
        self.reads += 1
        return super().get(class_id)


def enroll(templates: TemplateStore, cache: IndexCache, numbers: range) -> None:
    for n in numbers:
        templates.add(f"bws/1/{n}", [embedding(n)], 5)
        if n % 10 == 0:
            templates.set_tags(f"bws/1/{n}", ["tenth"])
        cache.record_change(f"bws/1/{n}")


def wait_for_snapshot(store: ObjectStore, newer_than: str | None = None) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = snapshots.newest(store, "bws/1")
        if found is not None and found != newer_than:
            return found
        time.sleep(0.05)
    raise AssertionError("no snapshot was written")


def results(cache: IndexCache, probe: int, tags: tuple[str, ...] = ()) -> list[tuple[str, float]]:
    return cache.search("bws", 1, embedding(probe), 5, -1.0, tags)[0]


def test_a_new_replica_loads_the_snapshot_and_the_changes_since(store: ObjectStore,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # Replicas' clocks may differ by 30 s: a loader reads the log from that long before the
    # snapshot, which here would be every enrollment of the test. 1 ms shows what it reads.
    monkeypatch.setattr(matching, "CLOCK_SKEW_NANOS", 1_000_000)
    key = os.urandom(32)
    templates = TemplateStore(store, key)
    first = IndexCache(store, templates, snapshot_min_classes=100, snapshot_every_changes=50)
    enroll(templates, first, range(COUNT))
    time.sleep(0.05)  # no enrollment within the (1 ms) skew window before the build: none is read again
    assert results(first, 7)[0][0] == "bws/1/7"  # built from the templates, then snapshotted
    written = wait_for_snapshot(store)

    templates.add("bws/1/9999", [embedding(9999)], 5)  # changes after the snapshot
    first.record_change("bws/1/9999")
    templates.delete("bws/1/8")
    first.record_change("bws/1/8")
    templates.set_tags("bws/1/11", ["tenth"])
    first.record_change("bws/1/11")

    counting = CountingTemplates(store, key)
    second = IndexCache(store, counting, snapshot_min_classes=100, snapshot_every_changes=50)
    assert results(second, 9999)[0][0] == "bws/1/9999"
    assert counting.reads == 3  # the three classes the log names since the snapshot, no other template
    assert "bws/1/8" not in {c for c, _ in results(second, 8)}
    assert [c for c, _ in results(second, 11, ("tenth",))][0] == "bws/1/11"
    for probe in (0, 5, 150, 299, 9999):
        assert results(second, probe) == results(first, probe)
        assert results(second, probe, ("tenth",)) == results(first, probe, ("tenth",))
    assert snapshots.newest(store, "bws/1") == written  # 3 changes: no new snapshot yet

    enroll(templates, first, range(COUNT, COUNT + 60))  # enough changes for the next one
    results(second, 0)
    newer = wait_for_snapshot(store, written)
    assert newer > written and len(store.list_keys(snapshots.snapshot_prefix("bws/1"))) <= snapshots.KEEP


def test_a_snapshot_that_does_not_open_is_not_used(store: ObjectStore) -> None:
    key = os.urandom(32)
    templates = TemplateStore(store, key)
    first = IndexCache(store, templates, snapshot_min_classes=10)
    enroll(templates, first, range(50))
    results(first, 1)
    written = wait_for_snapshot(store)
    damaged = bytearray(store.get(written) or b"")
    damaged[len(damaged) // 2] ^= 1
    store.put(written, bytes(damaged))

    counting = CountingTemplates(store, key)
    rebuilt = IndexCache(store, counting, snapshot_min_classes=1000)
    assert results(rebuilt, 17) == results(first, 17)
    assert counting.reads == 50  # built from the templates instead

    rotated = TemplateStore(store, os.urandom(32), read_keys=(key,))  # after a key rotation
    IndexCache(store, rotated, snapshot_min_classes=10).search("bws", 1, embedding(3), 1, -1.0)
    newest = wait_for_snapshot(store, written)
    assert snapshots.read(store, rotated, newest) is not None
    assert snapshots.read(store, TemplateStore(store, os.urandom(32)), newest) is None  # another key
    assert np.allclose(snapshots.read(store, rotated, newest)[1], first._partitions["bws/1"].index.matrix)  # type: ignore[index]


def test_a_key_rotation_reseals_the_snapshots_too(store: ObjectStore) -> None:
    from bws.admin import rotation

    old, new = os.urandom(32), os.urandom(32)
    templates = TemplateStore(store, old)
    cache = IndexCache(store, templates, snapshot_min_classes=10)
    enroll(templates, cache, range(40))
    results(cache, 1)
    written = wait_for_snapshot(store)

    rotating = TemplateStore(store, new, read_keys=(old,))
    report = rotation.rotate(store, rotating)
    assert report.complete and report.resealed == 41 and report.census == {rotating.key_id: 41}, report
    after = TemplateStore(store, new)  # the old key is gone
    found = snapshots.read(store, after, written)
    assert found is not None and found[0] == cache._partitions["bws/1"].index.class_ids
    assert np.array_equal(found[1], cache._partitions["bws/1"].index.matrix)
