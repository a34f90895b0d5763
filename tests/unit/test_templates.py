"""Encrypted templates and their conditional updates (enroll_service/templates.py).

Uses an in-memory stand-in for the object store that honours conditional writes the way S3
does; the real store is exercised by the end-to-end tests.
"""

from __future__ import annotations

import hashlib
import os
import threading

import numpy as np
import pytest

from bws.faces import ENCODER_NAME, ENCODERS, embedding_from_bytes, embedding_to_bytes
from bws.storage import PreconditionFailed
from enroll_service.templates import TemplateError, TemplateStore


class MemoryStore:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.lock = threading.Lock()

    def get_with_etag(self, key: str):
        with self.lock:
            data = self.objects.get(key)
            return None if data is None else (data, hashlib.md5(data).hexdigest())

    def put_conditional(self, key: str, data: bytes, *, if_match: str | None = None) -> None:
        with self.lock:
            current = self.objects.get(key)
            if if_match is None and current is not None:
                raise PreconditionFailed(key)
            if if_match is not None and (current is None or hashlib.md5(current).hexdigest() != if_match):
                raise PreconditionFailed(key)
            self.objects[key] = data

    def exists(self, key: str) -> bool:
        return key in self.objects

    def delete(self, keys) -> None:
        for key in keys:
            self.objects.pop(key, None)


def embedding(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    return vector / np.linalg.norm(vector)


@pytest.fixture
def memory() -> MemoryStore:
    return MemoryStore()


def test_first_enrollment_creates_then_updates(memory: MemoryStore) -> None:
    templates = TemplateStore(memory, os.urandom(32))  # type: ignore[arg-type]
    _, before = templates.add("bws/1/1", [embedding(1)], max_images=5)
    template, before_again = templates.add("bws/1/1", [embedding(2), embedding(3)], max_images=5)
    assert before is None and before_again is not None
    assert template.matrix().shape == (3, 128)
    assert template.encoder_name.startswith("sface")


def test_only_the_newest_images_are_kept(memory: MemoryStore) -> None:
    templates = TemplateStore(memory, os.urandom(32))  # type: ignore[arg-type]
    template, _ = templates.add("bws/1/1", [embedding(i) for i in range(8)], max_images=3)
    assert np.allclose(template.matrix()[-1], embedding(7), atol=1e-5)
    assert len(template.embeddings) == 3


def test_templates_are_encrypted_and_bound_to_their_class(memory: MemoryStore) -> None:
    key = os.urandom(32)
    templates = TemplateStore(memory, key)  # type: ignore[arg-type]
    templates.add("bws/1/1", [embedding(1)], max_images=5)
    blob = memory.objects["templates/bws/1/1"]
    assert b"embeddings" not in blob and b"bws/1/1" not in blob
    memory.objects["templates/bws/1/2"] = blob  # copied under another class
    with pytest.raises(TemplateError):
        templates.get("bws/1/2")
    with pytest.raises(TemplateError):
        TemplateStore(memory, os.urandom(32)).get("bws/1/1")  # type: ignore[arg-type]


def test_concurrent_enrollments_lose_no_update(memory: MemoryStore) -> None:
    templates = TemplateStore(memory, os.urandom(32))  # type: ignore[arg-type]
    threads = [threading.Thread(target=templates.add, args=("bws/1/1", [embedding(i)], 50)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(templates.get("bws/1/1").embeddings) == 8


def test_delete_reports_whether_there_was_a_template(memory: MemoryStore) -> None:
    templates = TemplateStore(memory, os.urandom(32))  # type: ignore[arg-type]
    templates.add("bws/1/1", [embedding(1)], max_images=5)
    assert templates.delete("bws/1/1") is True
    assert templates.delete("bws/1/1") is False
    assert templates.get("bws/1/1") is None


def test_tags_are_replaced_and_kept_by_enrollments(memory: MemoryStore) -> None:
    templates = TemplateStore(memory, os.urandom(32))  # type: ignore[arg-type]
    assert templates.set_tags("bws/1/1", ["a"]) is None and "templates/bws/1/1" not in memory.objects
    templates.add("bws/1/1", [embedding(1)], max_images=5)
    assert templates.set_tags("bws/1/1", ["b", "a", "b"]).tags == ["a", "b"]
    assert templates.add("bws/1/1", [embedding(2)], max_images=5)[0].tags == ["a", "b"]


def test_thumbnails_are_sealed_bound_capped_and_deleted_with_the_template(memory: MemoryStore) -> None:
    templates = TemplateStore(memory, os.urandom(32))  # type: ignore[arg-type]
    templates.add("bws/1/1", [embedding(1)], max_images=5)
    assert templates.add_thumbnails("bws/1/1", [b"\x89PNG one", b"\x89PNG two"], max_images=3) == 2
    assert templates.add_thumbnails("bws/1/1", [b"\x89PNG three", b"\x89PNG four"], max_images=3) == 3
    assert [t.png for t in templates.thumbnails("bws/1/1")] == [b"\x89PNG two", b"\x89PNG three", b"\x89PNG four"]
    blob = memory.objects["thumbnails/bws/1/1"]
    assert b"PNG" not in blob and b"bws/1/1" not in blob
    memory.objects["templates/bws/1/2"] = blob  # a thumbnails object is not a template
    with pytest.raises(TemplateError):
        templates.get("bws/1/2")
    assert templates.delete("bws/1/1") is True
    assert templates.thumbnails("bws/1/1") == [] and "thumbnails/bws/1/1" not in memory.objects


def test_a_template_of_another_encoder_is_replaced_by_its_upgrade(memory: MemoryStore) -> None:
    old = TemplateStore(memory, key := os.urandom(32), ENCODERS[1])  # type: ignore[arg-type]
    first, _ = old.add("bws/1/1", [embedding(1), embedding(2)], max_images=5)
    old.set_tags("bws/1/1", ["x"])
    new = TemplateStore(memory, key, ENCODERS[2])  # type: ignore[arg-type]
    assert not new.is_current(new.get("bws/1/1"))
    upgraded, before = new.add("bws/1/1", [embedding(3)], max_images=5, upgraded=[embedding(4), embedding(5)])
    assert before is not None and not new.is_current(before) and new.is_current(upgraded)
    assert upgraded.encoder_version == 2 and upgraded.tags == ["x"] and upgraded.created == first.created
    assert np.allclose(upgraded.matrix(), [embedding(4), embedding(5), embedding(3)], atol=1e-5)


def test_a_stored_embedding_is_used_only_by_the_encoder_that_made_it() -> None:
    embedding = np.linspace(-1, 1, 128, dtype=np.float32)
    stored = embedding_to_bytes(embedding)
    assert np.array_equal(embedding_from_bytes(stored), embedding)
    other_encoder = stored.replace(ENCODER_NAME.encode(), b"arcface-r100", 1)
    assert embedding_from_bytes(other_encoder) is None
    assert embedding_from_bytes(stored[:-4]) is None  # truncated
