"""The 1:N partition index and its change log (enroll_service/matching.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from bws.faces import ENCODERS
from enroll_service import matching
from enroll_service.matching import IndexCache, PartitionIndex, centroid
from enroll_service.templates import TemplateStore
from tests.unit.test_templates import MemoryStore, embedding


class LoggedMemoryStore(MemoryStore):
    """MemoryStore plus the listing and plain writes the index's change log needs."""

    def __init__(self) -> None:
        super().__init__()
        self.listings: list[tuple[str, str | None]] = []  # (prefix, start_after) of each LIST

    def put(self, key: str, data: bytes, content_type: str = "") -> None:
        self.objects[key] = data

    def list_keys(self, prefix: str, start_after: str | None = None) -> list[str]:
        self.listings.append((prefix, start_after))
        return sorted(k for k in self.objects if k.startswith(prefix) and (start_after is None or k > start_after))


def test_search_returns_the_best_first_above_the_threshold() -> None:
    index = PartitionIndex()
    index.put_many([(f"bws/1/{i}", embedding(i), ()) for i in range(50)])
    matches = index.search(embedding(7), top_k=5, threshold=0.5)
    assert matches[0][0] == "bws/1/7" and matches[0][1] == pytest.approx(1.0, abs=1e-5)
    assert all(score >= 0.5 for _, score in matches)


def test_remove_keeps_the_other_rows_right() -> None:
    index = PartitionIndex()
    index.put_many([(f"bws/1/{i}", embedding(i), ()) for i in range(5)])
    index.remove("bws/1/1")
    assert len(index) == 4
    for i in (0, 2, 3, 4):
        assert index.search(embedding(i), 1, 0.9)[0][0] == f"bws/1/{i}"
    assert index.search(embedding(1), 1, 0.9) == []


def test_search_with_tags_sees_only_the_classes_carrying_all_of_them() -> None:
    index = PartitionIndex()
    index.put_many([("bws/1/1", embedding(1), ("staff", "berlin")), ("bws/1/2", embedding(2), ("staff",)),
                    ("bws/1/3", embedding(3), ())])
    assert {c for c, _ in index.search(embedding(1), 10, -1.0, ["staff"])} == {"bws/1/1", "bws/1/2"}
    assert [c for c, _ in index.search(embedding(2), 10, -1.0, ["staff", "berlin"])] == ["bws/1/1"]
    assert index.search(embedding(3), 10, -1.0, ["nobody"]) == []
    index.remove("bws/1/1")  # the last row moves into the hole, with its tags
    assert [c for c, _ in index.search(embedding(3), 10, -1.0, ["staff"])] == ["bws/1/2"]
    index.put("bws/1/3", embedding(3), ["staff"])
    assert {c for c, _ in index.search(embedding(3), 10, -1.0, ["staff"])} == {"bws/1/2", "bws/1/3"}


def test_centroid_is_a_unit_vector() -> None:
    assert np.linalg.norm(centroid([embedding(1), embedding(2)])) == pytest.approx(1.0)


def two_replicas() -> tuple[LoggedMemoryStore, IndexCache, TemplateStore, IndexCache]:
    """One store; our index, and another replica's templates and index."""
    memory = LoggedMemoryStore()
    key = os.urandom(32)
    ours = IndexCache(memory, TemplateStore(memory, key))  # type: ignore[arg-type]
    theirs_templates = TemplateStore(memory, key)  # type: ignore[arg-type]
    return memory, ours, theirs_templates, IndexCache(memory, theirs_templates)  # type: ignore[arg-type]


def test_index_follows_changes_made_by_other_replicas() -> None:
    _, ours, theirs_templates, theirs = two_replicas()

    theirs_templates.add("bws/1/1", [embedding(1)], 5)
    theirs.record_change("bws/1/1")
    assert ours.search("bws", 1, embedding(1), 5, 0.9)[0][0][0] == "bws/1/1"  # built from storage

    theirs_templates.add("bws/1/2", [embedding(2)], 5)
    theirs.record_change("bws/1/2")
    assert ours.search("bws", 1, embedding(2), 5, 0.9)[0][0][0] == "bws/1/2"  # caught up

    theirs_templates.delete("bws/1/1")
    theirs.record_change("bws/1/1")
    matches, searched, outdated = ours.search("bws", 1, embedding(1), 5, 0.9)
    assert matches == [] and searched == 1 and outdated == 0
    assert ours.search("bws", 2, embedding(1), 5, 0.0) == ([], 0, 0)  # partitions are separate


def test_templates_of_another_encoder_are_counted_not_searched() -> None:
    memory = LoggedMemoryStore()
    key = os.urandom(32)
    TemplateStore(memory, key, ENCODERS[1]).add("bws/1/1", [embedding(1)], 5)  # type: ignore[arg-type]
    templates = TemplateStore(memory, key, ENCODERS[2])  # type: ignore[arg-type]
    templates.add("bws/1/2", [embedding(2)], 5)
    index = IndexCache(memory, templates)  # type: ignore[arg-type]
    matches, searched, outdated = index.search("bws", 1, embedding(1), 5, -1.0)
    assert [c for c, _ in matches] == ["bws/1/2"] and searched == 1 and outdated == 1
    templates.add("bws/1/1", [embedding(1)], 5, upgraded=[])  # upgraded (made anew)
    index.record_change("bws/1/1")
    matches, searched, outdated = index.search("bws", 1, embedding(1), 5, 0.9)
    assert [c for c, _ in matches] == ["bws/1/1"] and searched == 2 and outdated == 0


def test_building_an_index_reads_none_of_the_old_change_log() -> None:
    memory = LoggedMemoryStore()
    templates = TemplateStore(memory, os.urandom(32))  # type: ignore[arg-type]
    templates.add("bws/1/1", [embedding(1)], 5)
    for day in range(1000):  # a long history: start-up must not cost more for it
        memory.put(f"indexes/bws/1/log/{day * 86_400 * 10**9:020d}-abcdef01-1", b"")
    index = IndexCache(memory, templates)  # type: ignore[arg-type]
    assert index.search("bws", 1, embedding(1), 5, 0.9)[0][0][0] == "bws/1/1"
    log_listings = [start for prefix, start in memory.listings if "/log/" in prefix]
    assert None not in log_listings  # every read of the log starts near now


def test_an_index_that_has_not_read_the_log_for_days_is_built_again(monkeypatch: pytest.MonkeyPatch) -> None:
    memory, ours, theirs_templates, theirs = two_replicas()
    theirs_templates.add("bws/1/1", [embedding(1)], 5)
    assert ours.search("bws", 1, embedding(1), 5, 0.9)[0]

    theirs_templates.add("bws/1/2", [embedding(2)], 5)
    theirs.record_change("bws/1/2")
    for entry in [k for k in memory.objects if k.startswith("indexes/")]:
        del memory.objects[entry]  # expired before this replica read it
    assert ours.search("bws", 1, embedding(2), 5, 0.9)[0] == []  # nothing in the log tells

    later = matching.time.monotonic() + matching.REBUILD_AFTER_SECONDS + 1
    monkeypatch.setattr(matching.time, "monotonic", lambda: later)
    assert ours.search("bws", 1, embedding(2), 5, 0.9)[0][0][0] == "bws/1/2"  # built again
