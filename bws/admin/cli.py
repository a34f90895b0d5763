"""The ``bws-admin`` command line (click): options in, one call into the group's module, output
out — a short human summary by default, one JSON document with ``--json``.

Exit codes (also in ``bws-admin --help``): 0 done; 1 done, but something needs attention
(a doctor check failed, a restore met conflicts, a rotation left objects on old keys);
2 the command line is wrong; 3 a setting is missing or invalid; 4 the object store or a
service cannot be reached; 5 an archive or a template does not verify (wrong key, tampered).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import click
import grpc

from bws import __version__
from bws.admin import apps as apps_module
from bws.admin.archive import ArchiveError
from bws.settings import GatewaySettings, SettingsError, StorageSettings, template_keys
from bws.storage import TEMPLATES, ObjectStore, StorageUnavailable

EXIT_ATTENTION, EXIT_USAGE, EXIT_SETTINGS, EXIT_UNREACHABLE, EXIT_INTEGRITY = 1, 2, 3, 4, 5

EXIT_CODES = f"""Exit codes: 0 done; {EXIT_ATTENTION} done, but something needs attention (a failed doctor
check, restore conflicts, objects left on old keys); {EXIT_USAGE} wrong command line; {EXIT_SETTINGS} a setting
is missing or invalid; {EXIT_UNREACHABLE} the object store or a service cannot be reached; {EXIT_INTEGRITY} an
archive or a template does not verify."""


class Admin:
    """What every command needs: output mode, who runs it, and the deployment's clients (made
    on first use from the same environment variables the processes read)."""

    def __init__(self, as_json: bool, operator: str) -> None:
        self.as_json = as_json
        self.operator = operator
        self._store: ObjectStore | None = None

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            self._store = ObjectStore(StorageSettings.from_env())
        return self._store

    def templates(self) -> Any:
        """The template store with the enrollment service's keys (BWS_TEMPLATE_KEY, BWS_TEMPLATE_READ_KEYS)."""
        try:
            from enroll_service.templates import TemplateStore  # the face engine's import: only where needed
        except ImportError:
            raise SettingsError("this command needs the enrollment service's code and key: run it in an "
                                "enroll-service pod (kubectl exec deploy/enroll -- bws-admin ...)") from None

        _required("BWS_TEMPLATE_KEY", "run this where the enrollment service's secret is (its pod, or the "
                  "bws-admin Job)")
        key, read_keys = template_keys(os.environ)
        return TemplateStore(self.store, key, read_keys=read_keys)

    def enrollment(self) -> Any:
        from bws.v1 import enrollment_pb2_grpc

        address = os.environ.get("BWS_ENROLL_ADDRESS", "").strip() or GatewaySettings.enroll_address
        return enrollment_pb2_grpc.EnrollmentServiceStub(grpc.insecure_channel(address))

    def emit(self, data: Any, human: str) -> None:
        click.echo(json.dumps(data, indent=1, default=str) if self.as_json else human)

    def audit(self, action: str, bcid: str | None, outcome: str) -> None:
        """An admin action in the audit trail (written at once)."""
        from bws.audit import AuditLog

        trail = AuditLog(self.store)
        trail.record("admin", f"admin:{self.operator}", action, bcid, outcome, request_id=f"bws-admin-{os.getpid()}")
        trail.flush()

    @contextmanager
    def progress(self, label: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """A progress bar on a terminal (stderr), nothing otherwise."""
        if self.as_json or not sys.stderr.isatty() or not total:
            yield lambda _: None
            return
        with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
            yield bar.update


def _required(name: str, hint: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise SettingsError(f"{name} must be set: {hint}")
    return value


try:  # the gateway's and the liveness service's images hold no enrollment service code
    from enroll_service.templates import TemplateError

    _TEMPLATE_ERRORS: tuple[type[Exception], ...] = (TemplateError,)
except ImportError:
    _TEMPLATE_ERRORS = (ArchiveError,)


class _Group(click.Group):
    """Turns the errors an operator can fix into a one-line message and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SettingsError as error:
            _fail(str(error), EXIT_SETTINGS)
        except StorageUnavailable as error:
            _fail(f"{error} (check BWS_S3_ENDPOINT and that the store runs; bws-admin doctor)", EXIT_UNREACHABLE)
        except grpc.RpcError as error:
            code = error.code() if hasattr(error, "code") else None
            _fail(f"a service did not answer: {code.name if code else error} (bws-admin doctor)", EXIT_UNREACHABLE)
        except (ArchiveError, *_TEMPLATE_ERRORS) as error:  # type: ignore[misc]
            _fail(str(error), EXIT_INTEGRITY)
        except (apps_module.AppsError, ValueError) as error:
            _fail(str(error), EXIT_USAGE)


def _fail(message: str, code: int) -> None:
    click.echo(f"bws-admin: {message}", err=True)
    raise click.exceptions.Exit(code)


@click.group(cls=_Group, epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of a summary.")
@click.option("--operator", envvar="BWS_ADMIN_OPERATOR", default="admin", show_default=True,
              help="Who runs the command, for the audit trail (or BWS_ADMIN_OPERATOR).")
@click.version_option(__version__, prog_name="bws-admin")
@click.pass_context
def cli(ctx: click.Context, as_json: bool, operator: str) -> None:
    """Operate a BWS deployment: apps, classes, backups, template keys, the audit trail.

    Settings come from the same environment variables the processes read (BWS_S3_*,
    BWS_TEMPLATE_KEY, BWS_APPS, BWS_ENROLL_ADDRESS, ...): run it in a pod of the deployment
    (kubectl exec) or as the bws-admin Job. See docs/operating.md.
    """
    ctx.obj = Admin(as_json, operator)


pass_admin = click.make_pass_decorator(Admin)


# -- apps ----------------------------------------------------------------------------------


@cli.group()
def app() -> None:
    """Apps and their credentials: make, rotate and check BWS_APPS entries.

    Each command reads the current BWS_APPS (from --apps-file, else the environment) and prints
    the new value to put into the gateway's Secret. Nothing is stored anywhere else.
    """


def _apps_source(apps_file: IO[str] | None) -> str | None:
    return apps_file.read() if apps_file is not None else os.environ.get("BWS_APPS")


apps_file_option = click.option(
    "--apps-file", type=click.File("r"),
    help="Read the current BWS_APPS from this file ('-': stdin) instead of the environment.")


def _emit_apps(admin: Admin, entries: list[dict[str, Any]], extra: dict[str, Any], summary: str) -> None:
    value = apps_module.dump(entries)
    admin.emit({**extra, "BWS_APPS": value}, f"{summary}\n\nThe new BWS_APPS value (put it into the gateway's "
                                             f"Secret, then roll the gateway):\n{value}")


def _audit_quietly(admin: Admin, action: str, outcome: str) -> None:
    """Record an app change in the trail when the store is configured here (app commands also
    work offline, on an operator's machine)."""
    if os.environ.get("BWS_S3_ENDPOINT"):
        try:
            admin.audit(action, None, outcome)
        except (SettingsError, StorageUnavailable):
            click.echo("bws-admin: note: the audit trail could not be written", err=True)


@app.command("create")
@click.argument("app_id")
@click.option("--storage", required=True, help="The BCID storage the app's classes live in, e.g. bws.")
@click.option("--partition", "partitions", type=click.IntRange(0), multiple=True,
              help="A partition the app may use (repeat; none: any).")
@click.option("--origin", "origins", multiple=True, help="An origin the capture page may return to (repeat).")
@click.option("--bws3-partition", type=click.IntRange(0), help="Make it a BWS 3 client too, its class ids "
              "in this partition (a signing key is made).")
@apps_file_option
@pass_admin
def app_create(admin: Admin, app_id: str, storage: str, partitions: tuple[int, ...], origins: tuple[str, ...],
               bws3_partition: int | None, apps_file: IO[str] | None) -> None:
    """Add an app with a new random secret (and a BWS 3 key with --bws3-partition)."""
    entries, credentials = apps_module.create(apps_module.load(_apps_source(apps_file)), app_id, storage,
                                              list(partitions) or None, list(origins), bws3_partition)
    lines = [f"App {app_id} created.", f"  secret (the App secret of Basic auth): {credentials['secret']}"]
    if "bws3_key" in credentials:
        lines.append(f"  BWS 3 key (base64; the client signs its JWTs with it): {credentials['bws3_key']}")
    lines.append("Hand these to the app's owner over a secure channel; they are not shown again.")
    _audit_quietly(admin, f"app create {app_id}", "printed")
    _emit_apps(admin, entries, {"app_id": app_id, **credentials}, "\n".join(lines))


@app.command("rotate")
@click.argument("app_id")
@click.option("--bws3-key", is_flag=True, help="Rotate the BWS 3 signing key instead of the secret.")
@apps_file_option
@pass_admin
def app_rotate(admin: Admin, app_id: str, bws3_key: bool, apps_file: IO[str] | None) -> None:
    """Add a new secret (or BWS 3 key); the old ones keep working until 'app retire'."""
    entries, fresh = apps_module.rotate(apps_module.load(_apps_source(apps_file)), app_id, bws3_key)
    what = "BWS 3 key" if bws3_key else "secret"
    _audit_quietly(admin, f"app rotate {app_id} {what}", "printed")
    _emit_apps(admin, entries, {"app_id": app_id, "bws3_key" if bws3_key else "secret": fresh},
               f"New {what} of {app_id}: {fresh}\nThe old ones stay valid until: bws-admin app retire {app_id}"
               + (" --bws3-key" if bws3_key else ""))


@app.command("retire")
@click.argument("app_id")
@click.option("--bws3-key", is_flag=True, help="Retire old BWS 3 keys instead of old secrets.")
@apps_file_option
@pass_admin
def app_retire(admin: Admin, app_id: str, bws3_key: bool, apps_file: IO[str] | None) -> None:
    """Keep only the newest secret (or BWS 3 key) of an app."""
    entries, removed = apps_module.retire(apps_module.load(_apps_source(apps_file)), app_id, bws3_key)
    _audit_quietly(admin, f"app retire {app_id}", f"{removed} removed")
    _emit_apps(admin, entries, {"app_id": app_id, "removed": removed}, f"{removed} old credential(s) of {app_id} "
                                                                       "removed.")


@app.command("remove")
@click.argument("app_id")
@apps_file_option
@pass_admin
def app_remove(admin: Admin, app_id: str, apps_file: IO[str] | None) -> None:
    """Remove an app (its classes stay: delete them with 'classes delete')."""
    entries = apps_module.remove(apps_module.load(_apps_source(apps_file)), app_id)
    _audit_quietly(admin, f"app remove {app_id}", "printed")
    _emit_apps(admin, entries, {"app_id": app_id}, f"App {app_id} removed.")


@app.command("check")
@apps_file_option
@pass_admin
def app_check(admin: Admin, apps_file: IO[str] | None) -> None:
    """Check a BWS_APPS value with the gateway's own rules, and say what is unwise."""
    raw = _apps_source(apps_file)
    if raw is None or not raw.strip():
        raise SettingsError("no BWS_APPS to check: set it or give --apps-file")
    apps, warnings = apps_module.check(raw)
    summary = [f"BWS_APPS is valid: {len(apps)} app(s): " + ", ".join(a.app_id for a in apps)]
    summary += [f"  warning: {w}" for w in warnings]
    admin.emit({"valid": True, "apps": [a.app_id for a in apps], "warnings": warnings}, "\n".join(summary))


# -- classes -------------------------------------------------------------------------------


@cli.group()
def classes() -> None:
    """Enrolled classes (templates): list, show, delete — through the enrollment service."""


def _status(admin: Admin, class_id: str, stub: Any) -> dict[str, Any]:
    from bws.v1 import enrollment_pb2

    request = enrollment_pb2.GetTemplateStatusRequest(class_id=class_id)
    status = stub.GetTemplateStatus(request, timeout=30).template_status
    if not status.available:
        return {"class_id": class_id, "available": False}
    return {"class_id": class_id, "available": True,
            "enrolled": status.enrolled.ToDatetime(UTC).isoformat(timespec="seconds"),
            "updated": status.updated.ToDatetime(UTC).isoformat(timespec="seconds"),
            "images": status.enrolled_images, "encoder": f"{status.encoder_name} v{status.encoder_version}",
            "encoder_version": status.encoder_version, "tags": list(status.tags),
            "thumbnails": status.thumbnails_stored}


def _line(found: dict[str, Any]) -> str:
    if not found["available"]:
        return f"{found['class_id']}  (no template)"
    return (f"{found['class_id']}  enrolled {found['enrolled']}  updated {found['updated']}  "
            f"{found['images']} image(s)  encoder v{found['encoder_version']}  "
            f"tags {','.join(found['tags']) or '-'}  {found['thumbnails']} thumbnail(s)")


def _bcid(value: str) -> str:
    from bws.bcid import Bcid

    if Bcid.parse_canonical(value.strip()) is None:
        raise ValueError(f"{value!r} is not a class id: storage/partition/classid, e.g. bws/1/4711")
    return value.strip()


@classes.command("list")
@click.argument("scope")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="Classes per page.")
@click.option("--after", help="Start after this class id (the 'next' of the previous page).")
@pass_admin
def classes_list(admin: Admin, scope: str, limit: int, after: str | None) -> None:
    """List the classes of a storage/partition (SCOPE, e.g. bws/1), a page at a time, in the
    store's key order."""
    from concurrent.futures import ThreadPoolExecutor
    from itertools import islice

    from bws.bcid import scope_prefix

    prefix = TEMPLATES + scope_prefix(scope)
    if prefix.count("/") != 3:
        raise ValueError("SCOPE must be storage/partition, e.g. bws/1")
    start = f"{prefix}{after.rsplit('/', 1)[-1]}" if after else None
    page = [key[len(TEMPLATES):] for key in islice(admin.store.iter_keys(prefix, start_after=start), limit + 1)]
    more, page = len(page) > limit, page[:limit]
    stub = admin.enrollment()
    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(lambda c: _status(admin, c, stub), page))
    next_after = page[-1] if more else None
    lines = [_line(f) for f in found] or ["(no classes)"]
    if next_after:
        lines.append(f"more: bws-admin classes list {scope} --after {next_after}")
    admin.emit({"classes": found, "next": next_after}, "\n".join(lines))


@classes.command("show")
@click.argument("class_id")
@pass_admin
def classes_show(admin: Admin, class_id: str) -> None:
    """Show one class's template (CLASS_ID: storage/partition/classid)."""
    found = _status(admin, _bcid(class_id), admin.enrollment())
    admin.emit(found, _line(found))
    if not found["available"]:
        raise click.exceptions.Exit(EXIT_ATTENTION)


@classes.command("delete")
@click.argument("class_ids", nargs=-1)
@click.option("--from-file", type=click.File("r"), help="Also the class ids in this file, one per line ('-': stdin).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_admin
def classes_delete(admin: Admin, class_ids: tuple[str, ...], from_file: IO[str] | None, yes: bool) -> None:
    """Delete classes as deleteclass does: template, thumbnails and search-index entry."""
    from bws.v1 import enrollment_pb2

    wanted = [_bcid(c) for c in class_ids]
    if from_file is not None:
        wanted += [_bcid(line) for line in from_file if line.strip()]
    if not wanted:
        raise ValueError("name at least one class id (or --from-file)")
    if not yes and not click.confirm(f"Delete {len(wanted)} class(es) for good?", err=True):
        raise click.exceptions.Exit(EXIT_ATTENTION)
    stub = admin.enrollment()
    outcome = []
    for class_id in wanted:
        deleted = stub.DeleteTemplate(enrollment_pb2.DeleteTemplateRequest(class_id=class_id), timeout=30).deleted
        admin.audit("deleteclass", class_id, "deleted" if deleted else "nothing to delete")
        outcome.append({"class_id": class_id, "deleted": deleted})
    admin.emit({"classes": outcome}, "\n".join(f"{o['class_id']}: {'deleted' if o['deleted'] else 'no template'}"
                                               for o in outcome))


# -- backup --------------------------------------------------------------------------------


@cli.group()
def backup() -> None:
    """Export and import templates as one encrypted archive (key: BWS_BACKUP_KEY).

    Make the backup key once with 'bws-admin keys new' and keep it apart from the archives.
    """


def _backup_key(key_file: str | None) -> bytes:
    """The backup key: from --key-file (``-``: the first line of standard input, ahead of an
    archive read from there too), else BWS_BACKUP_KEY."""
    if key_file == "-":
        raw = sys.stdin.buffer.readline().decode("ascii", "replace").strip()  # the archive's stream too
    elif key_file:
        with open(key_file, encoding="ascii", errors="replace") as file:
            raw = file.read().strip()
    else:
        raw = _required("BWS_BACKUP_KEY", "base64 of 32 random bytes (bws-admin keys new), or give --key-file")
    try:
        key = base64.b64decode(raw, validate=True)
    except binascii.Error:
        raise SettingsError("the backup key must be base64") from None
    if len(key) != 32:
        raise SettingsError("the backup key must decode to exactly 32 bytes")
    return key


key_file_option = click.option(
    "--key-file", type=click.Path(allow_dash=True, dir_okay=False),
    help="Read the backup key from this file instead of BWS_BACKUP_KEY; '-': the first line of standard input "
         "(before the archive, when that comes from standard input too).")


@backup.command("export")
@click.argument("archive", type=click.File("wb", atomic=True))
@click.option("--scope", default="", help="Only this storage or storage/partition (default: every template).")
@key_file_option
@pass_admin
def backup_export(admin: Admin, archive: IO[bytes], scope: str, key_file: str | None) -> None:
    """Write the templates (and thumbnails) into ARCHIVE ('-': stdout), streamed."""
    key, templates = _backup_key(key_file), admin.templates()
    from bws.admin.backup import export
    from bws.bcid import scope_prefix

    total = sum(1 for _ in admin.store.iter_keys(TEMPLATES + scope_prefix(scope))) if sys.stderr.isatty() else None
    with admin.progress("exporting", total) as step:
        report = export(admin.store, templates, archive, key, scope, step)
    admin.audit("backup export", scope or None, f"{report.templates} templates")
    summary = f"{report.templates} template(s) and {report.thumbnails} thumbnail set(s) exported"
    click.echo(json.dumps(asdict(report), indent=1) if admin.as_json else summary,
               err=archive.name == "<stdout>")


@backup.command("import")
@click.argument("archive", type=click.File("rb"))
@click.option("--on-conflict", type=click.Choice(["keep", "replace"]), default="keep", show_default=True,
              help="A class that has a different template: keep it (and report it) or replace it.")
@key_file_option
@pass_admin
def backup_import(admin: Admin, archive: IO[bytes], on_conflict: str, key_file: str | None) -> None:
    """Restore the templates of ARCHIVE ('-': stdin); run it again to resume."""
    key, templates = _backup_key(key_file), admin.templates()
    from bws.admin.backup import restore

    admin.store.ensure_bucket()  # an empty deployment may have no bucket yet
    try:
        size = os.fstat(archive.fileno()).st_size if sys.stderr.isatty() else None
    except (OSError, ValueError):
        size = None  # a pipe: no total to show
    with admin.progress("importing", size) as step:
        report = restore(admin.store, templates, _Counted(archive, step), key, on_conflict)
    admin.audit("backup import", None, f"{report.added} added, {report.replaced} replaced, {report.skipped} "
                                       f"skipped, {report.conflicts} conflicting")
    lines = [f"{report.templates} template(s) read: {report.added} added, {report.replaced} replaced, "
             f"{report.skipped} skipped (already there), {report.conflicts} conflicting"]
    lines += [f"  conflict: {c['class_id']}: {c['reason']}" for c in report.conflicting]
    admin.emit(asdict(report), "\n".join(lines))
    if report.conflicts:
        raise click.exceptions.Exit(EXIT_ATTENTION)


class _Counted:
    """A file whose reads advance a progress bar by the bytes read."""

    def __init__(self, file: IO[bytes], step: Callable[[int], None]) -> None:
        self._file, self._step = file, step

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self._step(len(data))
        return data


@backup.command("verify")
@click.argument("archive", type=click.File("rb"))
@key_file_option
@pass_admin
def backup_verify(admin: Admin, archive: IO[bytes], key_file: str | None) -> None:
    """Check that ARCHIVE decrypts and every checksum holds, without importing anything."""
    from bws.admin.archive import MANIFEST, manifest_of, read_archive

    counts = {"templates": 0, "thumbnails": 0}
    manifest: dict[str, Any] = {}
    for name, data in read_archive(archive, _backup_key(key_file)):
        if name == MANIFEST:
            manifest = manifest_of(data)
        else:
            counts[name.split("/", 1)[0]] = counts.get(name.split("/", 1)[0], 0) + 1
    admin.emit({"valid": True, "manifest": manifest, **counts},
               f"The archive is intact: {counts['templates']} template(s), {counts['thumbnails']} thumbnail set(s), "
               f"made {manifest.get('created')} from bucket {manifest.get('bucket')} (scope {manifest.get('scope')}).")


# -- keys ----------------------------------------------------------------------------------


@cli.group()
def keys() -> None:
    """Template keys: make one, see which keys seal the templates, rotate online."""


@keys.command("new")
@pass_admin
def keys_new(admin: Admin) -> None:
    """Print a new random key (base64 of 32 bytes): for BWS_TEMPLATE_KEY or BWS_BACKUP_KEY."""
    key = base64.b64encode(os.urandom(32)).decode()
    admin.emit({"key": key}, key)


@keys.command("status")
@pass_admin
def keys_status(admin: Admin) -> None:
    """Count the templates and thumbnails each key sealed (by key id)."""
    templates = admin.templates()
    from bws.admin.rotation import key_census

    total = sum(1 for _ in admin.store.iter_keys(TEMPLATES)) * 2 if sys.stderr.isatty() else None
    with admin.progress("counting", total) as step:
        census = key_census(admin.store, step)

    def named(found: str) -> str:
        if found == templates.key_id:
            return "BWS_TEMPLATE_KEY"
        known = all(c in "0123456789abcdef" for c in found) and templates.key_by_id(bytes.fromhex(found))
        return "one of BWS_TEMPLATE_READ_KEYS" if known else "not configured here"

    lines = [f"{found}  {count} object(s)  {named(found)}" for found, count in census.items()]
    admin.emit({"current": templates.key_id, "census": census}, "\n".join(lines) or "(no templates)")


@keys.command("rotate")
@click.option("--limit", type=click.IntRange(1), help="Re-seal at most this many objects in this run.")
@click.option("--restart", is_flag=True, help="Ignore the saved progress and start from the first template.")
@pass_admin
def keys_rotate(admin: Admin, limit: int | None, restart: bool) -> None:
    """Re-seal every template sealed with another key with BWS_TEMPLATE_KEY, online; resumable.

    First give every enrollment service the new key as BWS_TEMPLATE_KEY and the old one in
    BWS_TEMPLATE_READ_KEYS (docs/operating.md has the steps).
    """
    templates = admin.templates()
    from bws.admin.rotation import rotate

    if not os.environ.get("BWS_TEMPLATE_READ_KEYS", "").strip():
        click.echo("bws-admin: note: BWS_TEMPLATE_READ_KEYS is empty: objects sealed with a key not configured "
                   "here cannot be re-sealed", err=True)
    total = sum(1 for _ in admin.store.iter_keys(TEMPLATES)) * 2 if sys.stderr.isatty() else None
    with admin.progress("re-sealing", total) as step:
        report = rotate(admin.store, templates, limit, restart, step)
    admin.audit("keys rotate", None, f"{report.resealed} re-sealed, complete={report.complete}")
    data = {**asdict(report), "left_on_other_keys": report.left_on_other_keys}
    lines = [f"{report.resealed} object(s) re-sealed with key {report.key_id}, {report.current} already were"
             + (f" (resumed after {report.resumed_after})" if report.resumed_after else "")]
    if not report.complete:
        lines.append("Stopped at --limit: run it again to go on.")
    elif report.left_on_other_keys:
        lines.append(f"{report.left_on_other_keys} object(s) are still sealed with other keys (a service still "
                     "writing with the old key?): run it again; bws-admin keys status shows which")
    else:
        lines.append("Nothing is left on other keys: remove the old key from BWS_TEMPLATE_READ_KEYS.")
    admin.emit(data, "\n".join(lines))
    if report.complete and report.left_on_other_keys:
        raise click.exceptions.Exit(EXIT_ATTENTION)


# -- audit ---------------------------------------------------------------------------------


def _moment(value: str | None, default: datetime) -> datetime:
    from bws.audit import parse_time

    if not value:
        return default
    try:
        return parse_time(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a time: use ISO 8601, e.g. 2026-12-01 or 2026-12-01T08:00:00Z") from None


@cli.command("audit")
@click.option("--class", "bcid", help="Only this class (storage/partition/classid), or a storage/partition.")
@click.option("--app", "app_id", help="Only this app (client id; admin:<operator> for bws-admin).")
@click.option("--action", help="Only this action, e.g. enrollment, verification, deleteclass, enroll (BWS 3).")
@click.option("--since", help="From this time (ISO 8601; default: 24 hours ago).")
@click.option("--until", help="Up to this time (default: now).")
@click.option("--limit", type=click.IntRange(1), default=1000, show_default=True, help="At most this many records.")
@pass_admin
def audit(admin: Admin, bcid: str | None, app_id: str | None, action: str | None, since: str | None,
          until: str | None, limit: int) -> None:
    """Query the audit trail: who did what to which class, and how it ended."""
    from itertools import islice

    from bws.audit import query

    now = datetime.now(UTC)
    found = list(islice(query(admin.store, _moment(since, now - timedelta(days=1)), _moment(until, now),
                              app=app_id, bcid=bcid, action=action), limit))
    lines = [f"{r.time}  {r.api:<7} {r.app:<20} {r.action:<24} {r.bcid or '-':<24} {r.outcome}  [{r.request_id}]"
             for r in found]
    admin.emit([asdict(r) for r in found], "\n".join(lines) or "(no records)")


# -- doctor --------------------------------------------------------------------------------


@cli.command("doctor")
@pass_admin
def doctor(admin: Admin) -> None:
    """Check the deployment end to end and say what to fix."""
    from bws.admin.doctor import run_checks

    results = run_checks(admin)
    width = max((len(r.name) for r in results), default=0)
    lines = []
    for r in results:
        lines.append(f"{r.status:<4}  {r.name:<{width}}  {r.detail}")
        if r.fix:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {r.fix}")
    failed = [r for r in results if r.status == "FAIL"]
    lines.append(f"{len(failed)} check(s) failed" if failed else "all checks passed")
    admin.emit([asdict(r) for r in results], "\n".join(lines))
    if failed:
        raise click.exceptions.Exit(EXIT_ATTENTION)


def main() -> None:
    cli(prog_name="bws-admin")
