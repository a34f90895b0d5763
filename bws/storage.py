"""The one object-store client of the project (S3 API through the ``minio`` SDK).

Layout inside the bucket (keys, not bytes, travel between processes; the one exception is the
upload, whose bytes the gateway sends along to the inspection while it stores them):

- ``uploads/{token_id}/{index:06d}-{nanos:x}-{random}-{tag}`` — a sample uploaded with a token,
  and beside it, when the services share their analyses (``BWS_SHARE_ANALYSES``, several
  replicas), ``....face``: what the upload inspection found in it (face box, landmarks, mesh,
  aligned crop), so that another replica need not decode and detect the image again; and
  ``....emb``: its embedding, computed ahead of the call that will use it.
- ``tokens/{token_id}/try-{n}`` — try ``n`` of a token, created atomically by the call that uses it,
  so concurrent calls (on any number of gateway replicas) never use more tries than allowed.
  It names the samples the call listed, one per line: they are that call's, and a concurrent
  call with a later try leaves them alone (``claim_try``). Samples are deleted after the call.
- ``tokens/{token_id}/result`` — the outcome of the token's last biometric call (JSON).
- ``templates/{storage}/{partition}/{class_id}`` — an encrypted biometric template.
- ``indexes/{storage}/{partition}/log/{nanos}-{random}-{class_id}`` — the change log that keeps
  every enrollment service replica's in-memory search index current (see enroll_service/matching.py);
  ``indexes/{storage}/{partition}/snapshot/{nanos}``: the index itself, sealed, which a new replica
  loads before it reads the log (enroll_service/snapshots.py).
- ``audit/{date}/{hour}/{nanos}-{random}.jsonl`` — the audit trail, append-only (bws/audit.py).
- ``admin/...`` — the progress of long admin work, to resume it (``bws-admin keys rotate``).

A lifecycle rule expires ``uploads/`` and ``tokens/`` after a day, so abandoned
samples do not linger, change-log entries after ``INDEX_LOG_EXPIRY_DAYS`` and audit records
after ``BWS_AUDIT_RETENTION_DAYS``. Atomic creation
uses S3 conditional writes (``If-None-Match: *`` and ``If-Match: <etag>``), which MinIO and
SeaweedFS both honour.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import urllib3
from minio import Minio
from minio.commonconfig import ENABLED, Filter
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule

from bws.metrics import STORE_OPERATIONS
from bws.sealing import Readable
from bws.settings import StorageSettings

log = logging.getLogger(__name__)

UPLOADS = "uploads/"
TOKENS = "tokens/"
TEMPLATES = "templates/"
THUMBNAILS = "thumbnails/"
INDEXES = "indexes/"
AUDIT = "audit/"
ADMIN = "admin/"
# Running replicas read the change log as it grows (before each search); a replica that has
# not read it for half this time builds its index from the templates instead. So old entries
# can go, and the log does not grow with every enrollment ever made.
INDEX_LOG_EXPIRY_DAYS = 7
SAMPLE_TAGS = ("any", "up", "down", "left", "right")


class StorageUnavailable(RuntimeError):
    """The object store did not answer or refused a request; nothing was half-written."""


class PreconditionFailed(Exception):
    """A conditional write lost: the object already exists, or changed since it was read."""


@dataclass(frozen=True, order=True)
class StoredSample:
    """A sample in the store; ordering follows the client's index, then arrival."""

    index: int
    arrival: int
    key: str
    tag: str

    @classmethod
    def from_key(cls, key: str) -> StoredSample | None:
        """Parse an ``uploads/`` key; None for keys that are not samples."""
        name = key.rsplit("/", 1)[-1]
        parts = name.split("-")
        if len(parts) != 4 or parts[3] not in SAMPLE_TAGS:
            return None
        try:
            return cls(index=int(parts[0]), arrival=int(parts[1], 16), key=key, tag=parts[3])
        except ValueError:
            return None


@dataclass(frozen=True)
class ClaimedTry:
    """A try of a token, the samples it uses, and the tags of the token's earlier tries."""

    number: int  # 1-based; 0 when every try is used (the caller drops the samples)
    samples: list[StoredSample]
    # The tags of each earlier try's samples, in try and sample order (tries given back or in
    # no store any more are not there): which challenge sequences they were judged against
    # follows from them (gateway/tokens.py, assign_challenges).
    earlier_tags: tuple[tuple[str, ...], ...] = ()


def _sample_name(sample: StoredSample) -> str:
    return sample.key.rsplit("/", 1)[-1]


def analysis_key(sample_key: str) -> str:
    """The key of the inspection result stored beside a sample."""
    return sample_key + ".face"


def embedding_key(sample_key: str) -> str:
    """The key of the embedding stored beside a sample (by the enrollment service)."""
    return sample_key + ".emb"


def class_key(class_id: str) -> str:
    """The template key of a canonical class id ``storage/partition/classid``."""
    return TEMPLATES + class_id


def thumbnails_key(class_id: str) -> str:
    """The key of a class's template thumbnails (the aligned faces it was made from)."""
    return THUMBNAILS + class_id


class ObjectStore:
    """Synchronous operations on the bucket; async callers run them in a thread."""

    def __init__(self, settings: StorageSettings) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        # Short timeouts and few retries: a store that is down, or stalls, must give a clear
        # error in seconds, not hang a request for minutes. A request that timed out reading is
        # not repeated (a stalled store would not answer again); refused connections and
        # 502/503/504 are, once or twice.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(3.0, settings.timeout_seconds), read=settings.timeout_seconds),
            retries=urllib3.Retry(total=2, read=0, backoff_factor=0.1, status_forcelist=(502, 503, 504)),
            maxsize=32,
        )
        self._parallel = ThreadPoolExecutor(8, thread_name_prefix="store")
        self.client = Minio(
            settings.endpoint,
            access_key=settings.access_key,
            secret_key=settings.secret_key,
            secure=settings.secure,
            region=settings.region,
            http_client=http,
        )

    # -- set-up and health --------------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Create the bucket when missing and (re)apply the expiry rule for transient data."""
        with _unavailable_on_error("prepare the bucket"):
            if not self.client.bucket_exists(self.bucket):
                try:
                    self.client.make_bucket(self.bucket)
                except S3Error as error:
                    # Another process created it first.
                    if error.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
            days = self.settings.upload_expiry_days
            expiry = {UPLOADS: days, TOKENS: days, INDEXES: INDEX_LOG_EXPIRY_DAYS,
                      AUDIT: self.settings.audit_retention_days}
            rules = [
                Rule(ENABLED, rule_filter=Filter(prefix=prefix), rule_id=f"expire-{prefix[:-1]}",
                     expiration=Expiration(days=after))
                for prefix, after in expiry.items()
            ]
            self.client.set_bucket_lifecycle(self.bucket, LifecycleConfig(rules))

    def ping(self) -> None:
        """Raise StorageUnavailable unless the store answers and the bucket exists."""
        with _unavailable_on_error("reach the bucket"):
            if not self.client.bucket_exists(self.bucket):
                raise StorageUnavailable(f"the bucket {self.bucket!r} does not exist")

    # -- plain objects ------------------------------------------------------------------

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        with _unavailable_on_error("store an object"):
            self.client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type)

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""
        found = self.get_with_etag(key)
        return None if found is None else found[0]

    def get_with_etag(self, key: str) -> tuple[bytes, str] | None:
        with _unavailable_on_error("read an object"):
            try:
                response = self.client.get_object(self.bucket, key)
            except S3Error as error:
                if error.code in ("NoSuchKey", "NoSuchObject"):
                    return None
                raise
            try:
                return response.read(), response.headers.get("ETag", "").strip('"')
            finally:
                response.close()
                response.release_conn()

    def exists(self, key: str) -> bool:
        with _unavailable_on_error("read an object"):
            try:
                self.client.stat_object(self.bucket, key)
            except S3Error as error:
                if error.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                    return False
                raise
            return True

    def put_conditional(self, key: str, data: bytes, *, if_match: str | None = None) -> None:
        """Write ``key`` only if it does not exist (or, with ``if_match``, still has that ETag).

        Raises PreconditionFailed when another writer won. The minio SDK has no parameter for
        conditional writes, so the request goes through its signed low-level call.
        """
        headers: dict[str, str | list[str] | tuple[str]] = {"Content-Type": "application/octet-stream"}
        headers["If-Match" if if_match else "If-None-Match"] = f'"{if_match}"' if if_match else "*"
        with _unavailable_on_error("store an object"):
            try:
                self.client._execute("PUT", self.bucket, key, body=data, headers=headers)
            except S3Error as error:
                if error.code in ("PreconditionFailed", "ConditionalRequestConflict"):
                    raise PreconditionFailed(key) from None
                raise

    def delete(self, keys: Iterable[str]) -> None:
        """Delete objects (missing ones are fine)."""
        objects = [DeleteObject(k) for k in keys]
        if not objects:
            return
        with _unavailable_on_error("delete objects"):
            errors = list(self.client.remove_objects(self.bucket, objects))
            if errors:
                raise StorageUnavailable(f"could not delete {len(errors)} object(s): {errors[0].message}")

    def list_keys(self, prefix: str, start_after: str | None = None) -> list[str]:
        """Keys under ``prefix`` in lexicographic order (after ``start_after``, when given)."""
        return list(self.iter_keys(prefix, start_after))

    def iter_keys(self, prefix: str, start_after: str | None = None) -> Iterator[str]:
        """``list_keys`` one page (1,000 keys) at a time: memory does not grow with the count."""
        with _unavailable_on_error("list objects"):
            for listed in self.client.list_objects(self.bucket, prefix, recursive=True, start_after=start_after):
                if listed.object_name:
                    yield listed.object_name

    def put_stream(self, key: str, source: Readable, part_size: int) -> None:
        """Store what ``source`` yields, of unknown length, in a multipart upload of
        ``part_size`` parts: nothing is visible under ``key`` until the whole is written."""
        with _unavailable_on_error("store an object"):
            self.client.put_object(self.bucket, key, source, length=-1, part_size=part_size)  # type: ignore[arg-type]

    @contextmanager
    def stream(self, key: str) -> Iterator[Readable]:
        """An object as a readable stream, read as it arrives."""
        with _unavailable_on_error("read an object"):
            response = self.client.get_object(self.bucket, key)
            try:
                yield response
            finally:
                response.close()
                response.release_conn()

    def get_range(self, key: str, length: int) -> bytes | None:
        """The first ``length`` bytes of an object (None when it does not exist)."""
        with _unavailable_on_error("read an object"):
            try:
                response = self.client.get_object(self.bucket, key, offset=0, length=length)
            except S3Error as error:
                if error.code in ("NoSuchKey", "NoSuchObject"):
                    return None
                raise
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    # -- samples ------------------------------------------------------------------------

    @staticmethod
    def new_sample_key(token_id: str, index: int, tag: str) -> str:
        """A fresh key for a sample bound to a token (unique: a re-upload never overwrites)."""
        if tag not in SAMPLE_TAGS:
            raise ValueError(f"unknown tag {tag!r}")
        return f"{UPLOADS}{token_id}/{index:06d}-{time.time_ns():x}-{os.urandom(4).hex()}-{tag}"

    def put_sample(self, token_id: str, index: int, tag: str, data: bytes, content_type: str) -> str:
        """Store a sample bound to a token; returns its key."""
        key = self.new_sample_key(token_id, index, tag)
        self.put(key, data, content_type)
        return key

    def sample_objects(self, sample_key: str) -> list[str]:
        """A sample's key and the keys of what the services may have stored beside it."""
        if not self.settings.share_analyses:  # nothing is (each missing key costs the store a lookup)
            return [sample_key]
        return [sample_key, analysis_key(sample_key), embedding_key(sample_key)]

    def samples(self, token_id: str) -> list[StoredSample]:
        """The token's uploaded samples, in order."""
        found = (StoredSample.from_key(k) for k in self.list_keys(f"{UPLOADS}{token_id}/"))
        return sorted(s for s in found if s is not None)

    def release_samples(self, samples: Iterable[StoredSample]) -> None:
        """Delete samples (and what the services stored beside them): a sample serves one call only."""
        self.delete([key for sample in samples for key in self.sample_objects(sample.key)])

    def delete_stale(self, max_age_seconds: float) -> int:
        """Delete samples and token state older than ``max_age_seconds``; how many went.

        The bucket's lifecycle rule is the backstop, at day granularity (and not every S3 server
        applies it): this removes biometric samples as soon as no token can use them any more.
        """
        cutoff = datetime.now(UTC) - timedelta(seconds=max_age_seconds)
        with _unavailable_on_error("list objects"):
            stale = [o.object_name for prefix in (UPLOADS, TOKENS)
                     for o in self.client.list_objects(self.bucket, prefix, recursive=True)
                     if o.object_name and o.last_modified is not None and o.last_modified < cutoff]
        self.delete(stale)
        return len(stale)

    # -- token state --------------------------------------------------------------------

    def claim_try(self, token_id: str, max_tries: int, unwanted: Iterable[str] = ()) -> ClaimedTry | None:
        """Use the token's next free try for the samples uploaded with it, atomically.

        A try is an object created only if it does not exist yet, and it names the samples
        listed for it: a call that wins a later try while another call is under way leaves
        those samples alone. One conditional write claims the try and its samples (a marker per
        sample as well took 8.2 ms per call instead of 5.7 against SeaweedFS, measured).
        None when no sample is left to claim (no try is used then); number 0 when every try is
        used: the samples returned are then the ones no try names, for the caller to drop.
        ``unwanted``: keys of samples the client was told were not kept (left out).
        """
        skip = frozenset(unwanted)
        samples = [s for s in self.samples(token_id) if s.key not in skip]
        if not samples:
            return None
        listed = "\n".join(_sample_name(s) for s in samples).encode()
        number = next((n for n in range(1, max_tries + 1) if self._create(self._try_key(token_id, n), listed)), 0)
        earlier = range(1, number if number else max_tries + 1)
        named = self._parallel.map(self.get, [self._try_key(token_id, n) for n in earlier])
        taken: set[str] = set()
        earlier_tags = []
        for names in named:
            if names:
                own = [name for name in names.decode().split("\n") if name not in taken]
                taken.update(own)
                earlier_tags.append(tuple(name.rsplit("-", 1)[-1] for name in own))
        mine = [s for s in samples if _sample_name(s) not in taken]
        if not mine:  # calls under way have them all: this one has nothing to work on
            if number:
                self.return_try(token_id, number)
            return None
        return ClaimedTry(number, mine, tuple(earlier_tags))

    @staticmethod
    def _try_key(token_id: str, number: int) -> str:
        return f"{TOKENS}{token_id}/try-{number}"

    def _create(self, key: str, data: bytes) -> bool:
        """Write ``key`` unless it exists; whether this call wrote it."""
        try:
            self.put_conditional(key, data)
        except PreconditionFailed:
            return False
        return True

    def return_try(self, token_id: str, number: int) -> None:
        """Give a try back (the server refused the call before doing any work)."""
        self.delete([self._try_key(token_id, number)])

    def put_result(self, token_id: str, result: dict[str, object]) -> None:
        self.put(f"{TOKENS}{token_id}/result", json.dumps(result).encode(), "application/json")

    def get_result(self, token_id: str) -> dict[str, object] | None:
        data = self.get(f"{TOKENS}{token_id}/result")
        return None if data is None else json.loads(data)


_OPERATIONS = {"store an object": "write", "read an object": "read", "delete objects": "delete",
               "list objects": "list", "prepare the bucket": "bucket", "reach the bucket": "ping"}


@contextmanager
def _unavailable_on_error(action: str) -> Iterator[None]:
    """Count the operation (``bws_store_operations_total``) and turn transport and server errors
    of the store into StorageUnavailable."""
    STORE_OPERATIONS.labels(_OPERATIONS.get(action, action)).inc()
    try:
        yield
    except (PreconditionFailed, StorageUnavailable):
        raise
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as error:
        log.warning("object store failed to %s: %s", action, error)
        raise StorageUnavailable(f"the object store could not {action}") from error
