"""Backup and restore of templates (and their thumbnails) through one encrypted archive.

``export`` reads the bucket's templates of a scope (all, a storage, or a storage/partition),
opens each with the template keys and writes its plain JSON into the archive (bws/admin/
archive.py); memory holds one batch of objects, whatever the number of templates.

``restore`` reads an archive and, per class, seals the template with *this* deployment's
template key and creates it only if the class has none (a conditional write: a template the
service writes meanwhile is never overwritten). A class that has an equal template (same
encoder, embeddings and tags) is skipped, so a restore can be run again after a crash or on a
deployment restored halfway: it is resumable and idempotent. A class with a different template
is a conflict: kept as it is and reported, or replaced with ``on_conflict="replace"``. Every
class written gets a change-log entry, so the running enrollment services' search indexes
pick it up.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import IO, Any, TypeVar

from bws import __version__
from bws.admin.archive import MANIFEST, ArchiveError, ArchiveWriter, Readable, manifest_of, read_archive
from bws.bcid import Bcid, scope_prefix
from bws.storage import TEMPLATES, THUMBNAILS, ObjectStore, PreconditionFailed
from enroll_service.matching import record_change
from enroll_service.templates import TemplateError, TemplateStore

BATCH = 32  # objects (or classes) read or written at once
T = TypeVar("T")
MAX_LISTED = 1000  # conflicts named in a report (the rest are counted)


@dataclass
class Report:
    """What an export or a restore did."""

    templates: int = 0  # templates in the archive (export: written; restore: read)
    thumbnails: int = 0
    added: int = 0
    replaced: int = 0
    skipped: int = 0
    conflicts: int = 0
    conflicting: list[dict[str, str]] = field(default_factory=list)  # the first MAX_LISTED: class, reason
    manifest: dict[str, Any] = field(default_factory=dict)

    def conflict(self, class_id: str, reason: str) -> None:
        self.conflicts += 1
        if len(self.conflicting) < MAX_LISTED:
            self.conflicting.append({"class_id": class_id, "reason": reason})


def _batches(items: Iterator[T]) -> Iterator[list[T]]:
    while batch := list(islice(items, BATCH)):
        yield batch


def export(store: ObjectStore, templates: TemplateStore, out: IO[bytes], backup_key: bytes, scope: str = "",
           progress: Callable[[int], None] = lambda _: None) -> Report:
    """Write the templates of ``scope`` (and their thumbnails) into an archive."""
    prefix = scope_prefix(scope)
    report = Report(manifest={"created": datetime.now(UTC).isoformat(timespec="seconds"),
                              "bucket": store.bucket, "scope": prefix.rstrip("/") or "*", "tool": __version__})
    with ArchiveWriter(out, backup_key, report.manifest) as archive, ThreadPoolExecutor(8) as pool:
        for batch in _batches(store.iter_keys(TEMPLATES + prefix)):
            class_ids = [key[len(TEMPLATES):] for key in batch]
            found = pool.map(lambda c: (store.get(TEMPLATES + c), store.get(THUMBNAILS + c)), class_ids)
            for class_id, (template, thumbnails) in zip(class_ids, found, strict=True):
                if template is None:  # deleted since it was listed
                    continue
                archive.add(f"{TEMPLATES}{class_id}.json", templates.open_object(TEMPLATES + class_id, template))
                report.templates += 1
                if thumbnails is not None:
                    archive.add(f"{THUMBNAILS}{class_id}.json",
                                templates.open_object(THUMBNAILS + class_id, thumbnails))
                    report.thumbnails += 1
            progress(len(batch))
    return report


def _same(stored: dict[str, Any], archived: dict[str, Any]) -> bool:
    keys = ("class_id", "encoder_name", "encoder_version", "embeddings", "tags")
    return all(stored.get(k) == archived.get(k) for k in keys)


@dataclass
class _Class:
    """One class of an archive: its template's plain JSON, and its thumbnails' when it has them."""

    class_id: str
    template: bytes
    thumbnails: bytes | None = None


def _classes(members: Iterator[tuple[str, bytes]], report: Report) -> Iterator[_Class]:
    """The archive's classes, in order (a template's thumbnails follow it)."""
    current: _Class | None = None
    for name, data in members:
        if name == MANIFEST:
            report.manifest = manifest_of(data)
            continue
        kind, _, rest = name.partition("/")
        class_id = rest.removesuffix(".json")
        if f"{kind}/" not in (TEMPLATES, THUMBNAILS) or not name.endswith(".json") or (
                Bcid.parse_canonical(class_id) is None):
            raise ArchiveError(f"the archive holds an unexpected member: {name}")
        if f"{kind}/" == THUMBNAILS:
            if current is None or current.class_id != class_id:
                raise ArchiveError(f"the thumbnails of {class_id} do not follow its template")
            current.thumbnails = data
            continue
        if current is not None:
            yield current
        current = _Class(class_id, data)
    if current is not None:
        yield current


def restore(store: ObjectStore, templates: TemplateStore, source: Readable, backup_key: bytes,
            on_conflict: str = "keep", progress: Callable[[int], None] = lambda _: None) -> Report:
    """Write the archive's templates into this deployment (see the module docstring); a batch
    of classes at a time, in parallel."""
    if on_conflict not in ("keep", "replace"):
        raise ValueError("on_conflict must be keep or replace")
    report = Report()
    with ThreadPoolExecutor(8) as pool:
        for batch in _batches_to_the_fault(_classes(read_archive(source, backup_key), report)):
            for one, (outcome, reason) in zip(batch, pool.map(
                    lambda c: _restore_class(store, templates, c, on_conflict), batch), strict=True):
                report.templates += 1
                report.thumbnails += one.thumbnails is not None
                if outcome == "conflict":
                    report.conflict(one.class_id, reason)
                else:
                    setattr(report, outcome, getattr(report, outcome) + 1)
            progress(len(batch))
    return report


def _batches_to_the_fault(classes: Iterator[_Class]) -> Iterator[list[_Class]]:
    """Batches of classes; when the archive turns out damaged or cut off, the classes read
    before the fault are restored first (a run with a good archive then goes on from there)."""
    batch: list[_Class] = []
    try:
        for one in classes:
            batch.append(one)
            if len(batch) == BATCH:
                yield batch
                batch = []
    except ArchiveError:
        if batch:
            yield batch
        raise
    if batch:
        yield batch


def _restore_class(store: ObjectStore, templates: TemplateStore, one: _Class, on_conflict: str) -> tuple[str, str]:
    """Restore one class's template (and its thumbnails with it); the outcome (added, replaced,
    skipped or conflict) and, for a conflict, why."""
    outcome, reason = _restore_template(store, templates, one.class_id, one.template, on_conflict)
    key = THUMBNAILS + one.class_id
    if one.thumbnails is not None and (outcome in ("added", "replaced") or (
            outcome == "skipped" and not store.exists(key))):  # a run cut short between the two
        store.put(key, templates.seal_object(key, one.thumbnails))
    return outcome, reason


def _restore_template(store: ObjectStore, templates: TemplateStore, class_id: str, data: bytes,
                      on_conflict: str) -> tuple[str, str]:
    archived = json.loads(data)
    if archived.get("class_id") != class_id:
        raise ArchiveError(f"the template stored as {class_id} names another class")
    key = TEMPLATES + class_id
    sealed = templates.seal_object(key, data)
    for _ in range(3):  # lost races with the running service: look again
        found = store.get_with_etag(key)
        if found is None:
            try:
                store.put_conditional(key, sealed)
            except PreconditionFailed:
                continue
            record_change(store, class_id)
            return "added", ""
        try:
            stored = json.loads(templates.open_object(key, found[0]))
        except TemplateError as error:
            return "conflict", str(error)
        if _same(stored, archived):
            return "skipped", ""
        if on_conflict == "keep":
            return "conflict", "the class has a different template (kept; --on-conflict replace replaces it)"
        try:
            store.put_conditional(key, sealed, if_match=found[1])
        except PreconditionFailed:
            continue
        store.delete([THUMBNAILS + class_id])  # those of the replaced template; the archive's follow
        record_change(store, class_id)
        return "replaced", ""
    return "conflict", "the class's template kept changing while it was restored"
