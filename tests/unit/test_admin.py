"""The parts of bws-admin that need no deployment: the backup archive's format and its
integrity checks, BWS_APPS credentials, the audit trail's batches and queries, and that an
export's memory does not grow with the number of templates. (The commands themselves run
against real processes in tests/e2e/test_admin.py.)"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import struct
import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest

from bws.admin import apps
from bws.admin.archive import CHUNK, MAGIC, ArchiveError, ArchiveWriter, read_archive
from bws.admin.backup import export, restore
from bws.audit import AuditLog, query
from bws.bcid import scope_prefix
from bws.settings import SettingsError, parse_apps
from bws.storage import AUDIT, PreconditionFailed
from enroll_service.templates import TemplateStore, key_id, sealed_key_id
from tests.unit.test_templates import MemoryStore as _Conditional
from tests.unit.test_templates import embedding


class MemoryStore(_Conditional):
    """The in-memory store of the template tests, with what the admin tools also use."""

    bucket = "memory"

    def get(self, key: str) -> bytes | None:
        return self.objects.get(key)

    def put(self, key: str, data: bytes, content_type: str = "") -> None:
        self.objects[key] = data

    def iter_keys(self, prefix: str, start_after: str | None = None):
        for key in sorted(self.objects):
            if key.startswith(prefix) and (start_after is None or key > start_after):
                yield key

    def list_keys(self, prefix: str, start_after: str | None = None) -> list[str]:
        return list(self.iter_keys(prefix, start_after))

    def get_range(self, key: str, length: int) -> bytes | None:
        data = self.objects.get(key)
        return None if data is None else data[:length]


def archive_of(members: dict[str, bytes], key: bytes) -> bytes:
    out = io.BytesIO()
    with ArchiveWriter(out, key, {"scope": "*"}) as archive:
        for name, data in members.items():
            archive.add(name, data)
    return out.getvalue()


KEY = os.urandom(32)
MEMBERS = {f"templates/bws/1/{n}.json": os.urandom(20_000 + n * 997) for n in range(1, 8)}


def test_an_archive_round_trips_with_its_manifest_first_and_checksums() -> None:
    data = archive_of(MEMBERS, KEY)
    assert data.startswith(MAGIC) and len(data) > CHUNK  # several chunks
    read = list(read_archive(io.BytesIO(data), KEY))
    assert read[0][0] == "manifest.json" and json.loads(read[0][1])["format"] == "bws-backup/1"
    assert dict(read[1:]) == MEMBERS
    assert not any(member in data for member in MEMBERS.values() if len(member) > 64)  # encrypted


@pytest.mark.parametrize("damage", ["flip", "cut", "drop chunk", "swap chunks", "append", "other key", "not one"])
def test_every_damage_to_an_archive_is_detected(damage: str) -> None:
    data = bytearray(archive_of(MEMBERS, KEY))
    header = len(MAGIC) + 15
    chunks, at = [], header
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        chunks.append(bytes(data[at:at + 4 + length]))
        at += 4 + length
    key = KEY
    if damage == "flip":
        data[len(data) // 2] ^= 0x40
    elif damage == "cut":
        data = data[: header + len(chunks[0]) + len(chunks[1])]  # whole chunks, the final one missing
    elif damage == "drop chunk":
        data = data[:header] + b"".join(chunks[:1] + chunks[2:])
    elif damage == "swap chunks":
        data = data[:header] + b"".join([chunks[1], chunks[0], *chunks[2:]])
    elif damage == "append":
        data += chunks[-1]
    elif damage == "other key":
        key = os.urandom(32)
    else:
        data = bytearray(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ArchiveError):
        list(read_archive(io.BytesIO(bytes(data)), key))


def test_an_export_holds_a_batch_in_memory_whatever_the_number_of_templates() -> None:
    """Peak memory of exporting 150 and 1,500 templates (into a sink that keeps nothing)."""

    class Sink(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data) -> int:  # type: ignore[no-untyped-def]
            return len(data)

    def peak(count: int) -> int:
        store = MemoryStore()
        templates = TemplateStore(store, KEY)  # type: ignore[arg-type]
        for n in range(count):
            templates.add(f"bws/1/{n}", [embedding(n)], 5)
        tracemalloc.start()
        report = export(store, templates, Sink(), os.urandom(32))  # type: ignore[arg-type]
        _, high = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert report.templates == count
        return high

    small, large = peak(150), peak(1500)
    assert large < small * 1.5, (small, large)


def test_a_restore_under_another_key_adds_skips_and_reports_conflicts() -> None:
    source, target = MemoryStore(), MemoryStore()
    old, new = TemplateStore(source, os.urandom(32)), TemplateStore(target, os.urandom(32))  # type: ignore[arg-type]
    for n in range(1, 4):
        old.add(f"bws/1/{n}", [embedding(n)], 5)
    old.add_thumbnails("bws/1/1", [b"png"], 5)
    out = io.BytesIO()
    export(source, old, out, KEY, "bws/1")  # type: ignore[arg-type]
    new.add("bws/1/3", [embedding(33)], 5)  # the target has its own class 3

    first = restore(target, new, io.BytesIO(out.getvalue()), KEY)  # type: ignore[arg-type]
    assert (first.added, first.skipped, first.conflicts) == (2, 0, 1)
    assert first.conflicting[0]["class_id"] == "bws/1/3"
    again = restore(target, new, io.BytesIO(out.getvalue()), KEY)  # type: ignore[arg-type]
    assert (again.added, again.skipped, again.conflicts) == (0, 2, 1)
    replaced = restore(target, new, io.BytesIO(out.getvalue()), KEY, on_conflict="replace")  # type: ignore[arg-type]
    assert replaced.replaced == 1

    assert [t.png for t in new.thumbnails("bws/1/1")] == [b"png"]
    assert new.get("bws/1/2").embeddings == old.get("bws/1/2").embeddings  # type: ignore[union-attr]
    assert {sealed_key_id(target.objects[k]) for k in target.objects if k.startswith(("templates/", "thumb"))} == {
        new.key_id}
    assert any(k.startswith("indexes/bws/1/log/") and k.endswith("-2") for k in target.objects)


def test_scopes_select_a_storage_or_a_partition_and_nothing_else() -> None:
    assert scope_prefix("") == "" and scope_prefix("bws") == "bws/" and scope_prefix("bws/1/") == "bws/1/"
    for bad in ("bws/x", "bws/1/2", "../etc", "b w s"):
        with pytest.raises(ValueError):
            scope_prefix(bad)


def test_sealed_objects_name_their_key_and_old_keys_still_open_them() -> None:
    store = MemoryStore()
    first, second = os.urandom(32), os.urandom(32)
    TemplateStore(store, first).add("bws/1/1", [embedding(1)], 5)  # type: ignore[arg-type]
    assert sealed_key_id(store.objects["templates/bws/1/1"]) == key_id(first) != key_id(second)
    rotating = TemplateStore(store, second, read_keys=(first,))  # type: ignore[arg-type]
    assert rotating.get("bws/1/1") is not None
    assert rotating.reseal("templates/bws/1/1") and not rotating.reseal("templates/bws/1/1")
    assert TemplateStore(store, second).get("bws/1/1") is not None  # type: ignore[arg-type]


# -- apps ----------------------------------------------------------------------------------


def test_an_app_is_created_with_strong_credentials_that_the_gateway_accepts() -> None:
    entries, credentials = apps.create([], "kiosk", "bws", [3], ["https://kiosk.example"], 3)
    parsed = parse_apps(apps.dump(entries))[0]
    assert parsed.secret == credentials["secret"] and len(credentials["secret"]) >= 43
    assert parsed.client_keys == (base64.b64decode(credentials["bws3_key"]),) and parsed.bws3_partition == 3
    assert apps.check(apps.dump(entries))[1] == []
    with pytest.raises(apps.AppsError):
        apps.create(entries, "kiosk", "bws", None, [], None)
    _, other = apps.create([], "kiosk", "bws", None, [], None)
    assert other["secret"] != credentials["secret"]


def test_a_rotation_keeps_the_old_secret_and_key_valid_until_retired() -> None:
    entries, made = apps.create([], "kiosk", "bws", None, [], 1)
    entries, secret = apps.rotate(entries, "kiosk")
    entries, key = apps.rotate(entries, "kiosk", bws3_key=True)
    parsed = parse_apps(apps.dump(entries))[0]
    assert parsed.secrets == (secret, made["secret"]) and parsed.secret == secret
    assert parsed.client_keys == (base64.b64decode(key), base64.b64decode(made["bws3_key"]))
    entries, removed = apps.retire(entries, "kiosk")
    entries, removed_keys = apps.retire(entries, "kiosk", bws3_key=True)
    parsed = parse_apps(apps.dump(entries))[0]
    assert (removed, removed_keys) == (1, 1) and parsed.secrets == (secret,) and len(parsed.client_keys) == 1
    assert apps.remove(entries, "kiosk") == []
    with pytest.raises(apps.AppsError):
        apps.rotate([], "nobody")


def test_check_refuses_what_the_gateway_refuses_and_warns_of_the_unwise() -> None:
    with pytest.raises(SettingsError, match="same id"):
        apps.check(json.dumps([{"id": "a", "secret": "x" * 40, "storage": "s"}] * 2))
    with pytest.raises(SettingsError, match="shorter than 16"):
        apps.check(json.dumps([{"id": "a", "secret": ["y" * 40, "short"], "storage": "s"}]))
    _, warnings = apps.check(json.dumps([{"id": "a", "secret": "aaaaaaaaaaaaaaaaaaaa", "storage": "s",
                                          "partitions": [1]}]))
    assert any("weaker" in w for w in warnings)


# -- audit ---------------------------------------------------------------------------------


def test_audit_batches_are_append_only_and_queried_by_class_app_action_and_time() -> None:
    store = MemoryStore()
    trail = AuditLog(store)  # type: ignore[arg-type]
    trail.record("classic", "app-1", "enrollment", "bws/1/7", "succeeded", "r1")
    trail.record("bws3", "app-2", "verify", "bws/2/7", "verified", "r2")
    assert trail.flush() == 2 and trail.flush() == 0
    trail.record("admin", "admin:dpo", "deleteclass", "bws/1/7", "deleted", "r3")
    trail.flush()
    batches = [k for k in store.objects if k.startswith(AUDIT)]
    assert len(batches) == 2
    with pytest.raises(PreconditionFailed):  # a batch is never written twice
        store.put_conditional(batches[0], b"")

    since = datetime.now(UTC) - timedelta(minutes=1)
    assert [r.request_id for r in query(store, since, bcid="bws/1/7")] == ["r1", "r3"]  # type: ignore[arg-type]
    assert [r.request_id for r in query(store, since, bcid="bws/1")] == ["r1", "r3"]  # type: ignore[arg-type]
    assert [r.request_id for r in query(store, since, app="app-2")] == ["r2"]  # type: ignore[arg-type]
    assert [r.request_id for r in query(store, since, action="deleteclass")] == ["r3"]  # type: ignore[arg-type]
    assert list(query(store, since - timedelta(days=2), since - timedelta(days=1))) == []  # type: ignore[arg-type]
    line = json.loads(store.objects[batches[0]].splitlines()[0])
    assert set(line) == {"time", "api", "app", "action", "bcid", "outcome", "request_id"}


def test_audit_records_wait_for_a_store_that_is_down_and_are_bounded() -> None:
    class Down(MemoryStore):
        def put_conditional(self, key: str, data: bytes, *, if_match: str | None = None) -> None:
            from bws.storage import StorageUnavailable

            raise StorageUnavailable("down")

    down = Down()
    trail = AuditLog(down)  # type: ignore[arg-type]
    trail.record("classic", "a", "verification", None, "succeeded")
    with pytest.raises(Exception, match="down"):
        trail.flush()
    store = MemoryStore()
    trail.store = store  # type: ignore[assignment]
    assert trail.flush() == 1 and hashlib.sha256(b"").hexdigest()


def test_a_rotation_that_crashed_resumes_after_its_last_checkpoint() -> None:
    from bws.admin import rotation

    store = MemoryStore()
    old, new = os.urandom(32), os.urandom(32)
    before = TemplateStore(store, old)  # type: ignore[arg-type]
    for n in range(450):
        before.add(f"bws/1/{n:03d}", [embedding(n)], 5)
    rotating = TemplateStore(store, new, read_keys=(old,))  # type: ignore[arg-type]
    sealed = rotating.reseal
    calls = 0

    def crashing(key: str) -> bool:
        nonlocal calls
        calls += 1
        if calls > 250:
            raise RuntimeError("killed")
        return sealed(key)

    rotating.reseal = crashing  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        rotation.rotate(store, rotating)  # type: ignore[arg-type]
    saved = json.loads(store.objects[rotation.CHECKPOINT])
    assert saved == {"key_id": rotating.key_id, "after": "templates/bws/1/223"}  # 7 batches of 32 done

    rotating.reseal = sealed  # type: ignore[method-assign]
    resumed = rotation.rotate(store, rotating)  # type: ignore[arg-type]
    assert resumed.resumed_after == "templates/bws/1/223" and resumed.complete
    assert (resumed.resealed, resumed.current) == (200, 26)  # 26 of the 250 done before the crash: after the checkpoint
    assert resumed.census == {rotating.key_id: 450} and resumed.left_on_other_keys == 0
    assert rotation.CHECKPOINT not in store.objects
