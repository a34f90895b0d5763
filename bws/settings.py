"""Settings of every process, read once from environment variables into frozen dataclasses.

One place for all of them: the README's settings table is written from this file. A missing
required value stops the process at start with a message naming the variable; secrets come
only from the environment (or the Kubernetes Secrets that fill it) and never appear in logs.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _get(env: Mapping[str, str], name: str, default: str | None = None) -> str:
    value = env.get(name, "").strip()
    if value:
        return value
    if default is None:
        raise SettingsError(f"the environment variable {name} must be set")
    return default


def _int(env: Mapping[str, str], name: str, default: int, low: int = 0) -> int:
    raw = _get(env, name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < low:
        raise SettingsError(f"{name} must be at least {low}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = _get(env, name, str(default))
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None


def parse_bool(raw: str) -> bool | None:
    """``true``/``false`` (also 1/0, yes/no, on/off), case-insensitive; None for anything else.

    Used for settings and for query flags alike, so that the string "false" is never true.
    """
    lowered = raw.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    return None


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _get(env, name, "true" if default else "false")
    value = parse_bool(raw)
    if value is None:
        raise SettingsError(f"{name} must be true or false, got {raw!r}")
    return value


def redacted(settings: object) -> dict[str, object]:
    """The settings as a dict for the start-up log, with every secret replaced by '***'."""
    out: dict[str, object] = {}
    for f in fields(settings):  # type: ignore[arg-type]
        value = getattr(settings, f.name)
        if f.metadata.get("secret"):
            value = "***"
        elif hasattr(value, "__dataclass_fields__"):
            value = redacted(value)
        out[f.name] = value
    return out


def _secret(**kwargs: Any) -> Any:
    """A dataclass field whose value ``redacted`` hides."""
    return field(metadata={"secret": True}, **kwargs)


@dataclass(frozen=True)
class StorageSettings:
    """The S3-compatible object store shared by all processes (read by all three)."""

    endpoint: str  # BWS_S3_ENDPOINT, host:port
    access_key: str = _secret()  # BWS_S3_ACCESS_KEY
    secret_key: str = _secret()  # BWS_S3_SECRET_KEY
    bucket: str = "bws-data"  # BWS_S3_BUCKET
    secure: bool = False  # BWS_S3_SECURE: use TLS
    region: str = "us-east-1"  # BWS_S3_REGION
    upload_expiry_days: int = 1  # BWS_UPLOAD_EXPIRY_DAYS: abandoned samples and token state expire
    # BWS_SHARE_ANALYSES: store what the services compute from a sample (inspection, embedding)
    # beside it, so that another replica can use it. Worth it with several replicas of a service
    # (the Kubernetes manifests turn it on); with one, the replica's memory serves every call
    # and the extra writes would only cost, so it is off by default.
    share_analyses: bool = False
    # BWS_S3_TIMEOUT_SECONDS: how long one request waits for the store to answer. A store that
    # stalls (accepts connections, never answers) then fails a call within that, not a minute.
    timeout_seconds: float = 5.0
    # BWS_AUDIT_RETENTION_DAYS: how long the audit trail (audit/) is kept; the bucket's
    # lifecycle rule deletes older records.
    audit_retention_days: int = 365

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> StorageSettings:
        return cls(
            endpoint=_get(env, "BWS_S3_ENDPOINT"),
            access_key=_get(env, "BWS_S3_ACCESS_KEY"),
            secret_key=_get(env, "BWS_S3_SECRET_KEY"),
            bucket=_get(env, "BWS_S3_BUCKET", "bws-data"),
            secure=_bool(env, "BWS_S3_SECURE", False),
            region=_get(env, "BWS_S3_REGION", "us-east-1"),
            upload_expiry_days=_int(env, "BWS_UPLOAD_EXPIRY_DAYS", 1, low=1),
            share_analyses=_bool(env, "BWS_SHARE_ANALYSES", False),
            timeout_seconds=_float(env, "BWS_S3_TIMEOUT_SECONDS", 5.0),
            audit_retention_days=_int(env, "BWS_AUDIT_RETENTION_DAYS", 365, low=1),
        )


@dataclass(frozen=True)
class App:
    """A client application allowed to use the service (BWS "App ID" and secret)."""

    app_id: str
    secrets: tuple[str, ...] = field(repr=False)  # the newest first; more than one during a rotation
    storage: str  # the BCID storage name the app may use, e.g. "bws"
    partitions: tuple[int, ...] | None  # partitions the app may use; None = any
    allowed_origins: tuple[str, ...] = ()  # origins the capture page may redirect back to
    # BWS 3: the keys the app signs its JWTs with (several during a rotation), and the partition
    # of ``storage`` its class ids live in. No keys: the app is not a BWS 3 client.
    client_keys: tuple[bytes, ...] = field(default=(), repr=False)
    bws3_partition: int = 0

    @property
    def secret(self) -> str:
        """The newest secret (the one to hand out)."""
        return self.secrets[0]

    def may_use(self, storage: str, partition: int) -> bool:
        return storage == self.storage and (self.partitions is None or partition in self.partitions)


MIN_CLIENT_KEY_BYTES = 32  # 256 bits: HS256 needs at least that much key (RFC 7518, 3.2)


def _bws3_client(app_id: str, raw: object, storage: str, partitions: tuple[int, ...] | None
                 ) -> tuple[tuple[bytes, ...], int]:
    """The ``bws3`` part of an app: ``{"keys": [base64, ...], "partition": N}``."""
    if raw is None:
        return (), 0
    if not isinstance(raw, dict) or not isinstance(raw.get("keys"), list) or not raw["keys"]:
        raise SettingsError(f"BWS_APPS: bws3 of app {app_id!r} must hold a non-empty list of keys")
    keys = []
    for encoded in raw["keys"]:
        try:
            key = base64.b64decode(str(encoded), validate=True)
        except binascii.Error:
            raise SettingsError(f"BWS_APPS: a bws3 key of app {app_id!r} is not base64") from None
        if len(key) < MIN_CLIENT_KEY_BYTES:
            raise SettingsError(f"BWS_APPS: a bws3 key of app {app_id!r} is shorter than 256 bits")
        keys.append(key)
    partition = raw.get("partition")
    if not isinstance(partition, int) or partition < 0 or (partitions is not None and partition not in partitions):
        raise SettingsError(f"BWS_APPS: the bws3 partition of app {app_id!r} is required and must be one of its "
                            "partitions")
    return tuple(keys), partition


def parse_apps(raw: str) -> tuple[App, ...]:
    """``BWS_APPS``: a JSON list of ``{"id", "secret", "storage", "partitions"?,
    "allowed_origins"?, "bws3"?}`` objects.

    ``secret`` is a string, or a list of them during a rotation (each is accepted; the first is
    the newest). ``bws-admin app create`` and ``app rotate`` write these entries.

    ``partitions`` is a list of integers; leave it out (or use "*") to allow any partition.
    ``bws3`` makes the app a BWS 3 client: ``{"keys": [base64 of >= 32 bytes, ...],
    "partition": N}``; its class ids are those of ``storage``/N.
    """
    try:
        items = json.loads(raw)
        if not isinstance(items, list) or not items:
            raise ValueError("a non-empty JSON list is expected")
        apps = []
        for item in items:
            raw_partitions = item.get("partitions", "*")
            partitions = None if raw_partitions == "*" else tuple(int(p) for p in raw_partitions)
            keys, bws3_partition = _bws3_client(str(item["id"]), item.get("bws3"), str(item["storage"]), partitions)
            apps.append(
                App(
                    app_id=str(item["id"]),
                    secrets=_secrets(item["secret"]),
                    storage=str(item["storage"]),
                    partitions=partitions,
                    allowed_origins=tuple(str(o) for o in item.get("allowed_origins", [])),
                    client_keys=keys,
                    bws3_partition=bws3_partition,
                )
            )
    except SettingsError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise SettingsError(f"BWS_APPS is not a valid app list: {error}") from None
    for app in apps:
        if any(len(secret) < 16 for secret in app.secrets):
            raise SettingsError(f"BWS_APPS: a secret of app {app.app_id!r} is shorter than 16 characters")
    ids = [app.app_id for app in apps]
    if len(set(ids)) != len(ids):
        raise SettingsError("BWS_APPS: two apps have the same id")
    return tuple(apps)


def _secrets(raw: object) -> tuple[str, ...]:
    values = raw if isinstance(raw, list) else [raw]
    if not values or not all(isinstance(v, str) for v in values):
        raise ValueError("secret must be a string or a non-empty list of strings")
    return tuple(values)


@dataclass(frozen=True)
class GatewaySettings:
    """The HTTP gateway (process `gateway`)."""

    storage: StorageSettings
    apps: tuple[App, ...] = field(metadata={"secret": True})  # BWS_APPS
    token_secret: str = _secret()  # BWS_TOKEN_SECRET: HS256 key, at least 32 characters
    host: str = "127.0.0.1"  # BWS_HTTP_HOST
    port: int = 8080  # BWS_HTTP_PORT
    public_url: str = ""  # BWS_PUBLIC_URL: the `aud` of tokens; default http://host:port
    token_lifetime_seconds: int = 600  # BWS_TOKEN_LIFETIME_SECONDS
    liveness_address: str = "127.0.0.1:50051"  # BWS_LIVENESS_ADDRESS
    enroll_address: str = "127.0.0.1:50052"  # BWS_ENROLL_ADDRESS
    grpc_timeout_seconds: float = 30.0  # BWS_GRPC_TIMEOUT_SECONDS: deadline of each gRPC call
    max_upload_bytes: int = 8 * 1024 * 1024  # BWS_MAX_UPLOAD_BYTES: larger bodies get 413
    max_samples_per_token: int = 32  # BWS_MAX_SAMPLES_PER_TOKEN
    # Admission: as many requests in flight as the services behind this gateway replica have
    # model workers; more are refused at once (ExecutionOfJobTimedOut, or 503 for an upload).
    # With a wait, as many again may wait for a place that long: fewer refusals under moderate
    # load, slower accepted requests under overload. See tests/bench/load.py.
    max_concurrent_calls: int = 2  # BWS_MAX_CONCURRENT_CALLS: biometric calls in flight
    max_concurrent_uploads: int = 2  # BWS_MAX_CONCURRENT_UPLOADS: uploads in flight
    admission_wait_seconds: float = 0.0  # BWS_ADMISSION_WAIT_MS (in ms): how long a request may wait
    cors_origins: tuple[str, ...] = ("*",)  # BWS_CORS_ORIGINS: comma list, "*" = any origin
    # Slow and idle clients. A connection is closed when its request's headers (or the next
    # request's, on a kept-alive connection) have not arrived this long after the connection or
    # the last reply; a body that has not arrived in full within its timeout gets 408. Beyond
    # max_connections open connections, new ones are answered 503 and closed at once.
    keepalive_seconds: float = 15.0  # BWS_KEEPALIVE_SECONDS
    body_timeout_seconds: float = 20.0  # BWS_BODY_TIMEOUT_SECONDS
    max_connections: int = 512  # BWS_MAX_CONNECTIONS
    # BWS 3: its gRPC API listens on host:grpc_port. Client-signed JWTs may live at most
    # jwt_max_lifetime_seconds (exp - iat, or exp - now without iat); clocks may differ by
    # jwt_leeway_seconds. A BWS 3 request (REST body or gRPC message) holds at most
    # max_request_bytes and max_samples_per_token images.
    grpc_port: int = 9090  # BWS_GRPC_PORT
    jwt_max_lifetime_seconds: int = 3600  # BWS_JWT_MAX_LIFETIME_SECONDS
    jwt_leeway_seconds: int = 30  # BWS_JWT_LEEWAY_SECONDS
    max_request_bytes: int = 16 * 1024 * 1024  # BWS_MAX_REQUEST_BYTES
    # BWS_AUDIT_FLUSH_SECONDS: audit records are written to the store in a batch this often
    # (and at a stop); a killed gateway loses at most this much of the trail (bws/audit.py).
    audit_flush_seconds: float = 2.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> GatewaySettings:
        host = _get(env, "BWS_HTTP_HOST", "127.0.0.1")
        port = _int(env, "BWS_HTTP_PORT", 8080)
        token_secret = _get(env, "BWS_TOKEN_SECRET")
        if len(token_secret) < 32:
            raise SettingsError("BWS_TOKEN_SECRET must be at least 32 characters long")
        return cls(
            storage=StorageSettings.from_env(env),
            apps=parse_apps(_get(env, "BWS_APPS")),
            token_secret=token_secret,
            host=host,
            port=port,
            public_url=_get(env, "BWS_PUBLIC_URL", f"http://{host}:{port}").rstrip("/"),
            token_lifetime_seconds=_int(env, "BWS_TOKEN_LIFETIME_SECONDS", 600, low=10),
            liveness_address=_get(env, "BWS_LIVENESS_ADDRESS", "127.0.0.1:50051"),
            enroll_address=_get(env, "BWS_ENROLL_ADDRESS", "127.0.0.1:50052"),
            grpc_timeout_seconds=_float(env, "BWS_GRPC_TIMEOUT_SECONDS", 30.0),
            max_upload_bytes=_int(env, "BWS_MAX_UPLOAD_BYTES", 8 * 1024 * 1024, low=1024),
            max_samples_per_token=_int(env, "BWS_MAX_SAMPLES_PER_TOKEN", 32, low=2),
            max_concurrent_calls=_int(env, "BWS_MAX_CONCURRENT_CALLS", 2, low=1),
            max_concurrent_uploads=_int(env, "BWS_MAX_CONCURRENT_UPLOADS", 2, low=1),
            admission_wait_seconds=_int(env, "BWS_ADMISSION_WAIT_MS", 0, low=0) / 1000,
            cors_origins=tuple(
                o.strip() for o in _get(env, "BWS_CORS_ORIGINS", "*").split(",") if o.strip()
            ),
            keepalive_seconds=_float(env, "BWS_KEEPALIVE_SECONDS", 15.0),
            body_timeout_seconds=_float(env, "BWS_BODY_TIMEOUT_SECONDS", 20.0),
            max_connections=_int(env, "BWS_MAX_CONNECTIONS", 512, low=8),
            grpc_port=_int(env, "BWS_GRPC_PORT", 9090),
            jwt_max_lifetime_seconds=_int(env, "BWS_JWT_MAX_LIFETIME_SECONDS", 3600, low=1),
            jwt_leeway_seconds=_int(env, "BWS_JWT_LEEWAY_SECONDS", 30),
            max_request_bytes=_int(env, "BWS_MAX_REQUEST_BYTES", 16 * 1024 * 1024, low=1024),
            audit_flush_seconds=_float(env, "BWS_AUDIT_FLUSH_SECONDS", 2.0),
        )


@dataclass(frozen=True)
class LivenessThresholds:
    """The liveness decision's thresholds (liveness_service/liveness.py); the defaults are the
    shipped values. Each can be set as ``BWS_LIVENESS_<NAME>`` (e.g. BWS_LIVENESS_MIN_TURN_DEGREES).

    The pair test's three were calibrated on fixed-step renders (tests/facegen: 8–20° steps) and
    six kinds of flat-photo attacks. The pooled and direction ones on photos taken the way
    BioID's capture page takes them (tests/facegen/page.py; seeds 20,001–40,000: 480 tries of
    people following it promptly or slowly, 4–6° per step for the slow ones) and 1,040 attack
    tries of eight kinds: the attacks' pooled depth reached 0.0115, slow followers' is 0.0165 or
    more in 95 % of tries; a still head's turn reads at most 1.7°. ``make bench-liveness``
    measures them again on other seeds and prints the range each one may take.
    """

    # One pair of samples is live when all three hold:
    # RMS homography residual / interocular distance: live pairs are above.
    min_planarity_residual: float = 0.015
    # 1 − rigid_ratio (the share of the homography residual a rigid 3D rotation explains):
    # live pairs are above.
    min_rigid_ratio_score: float = 0.30
    # Head turn (yaw or pitch) as MediaPipe's pose matrix reads it, in head degrees: a tilted
    # print barely moves it.
    min_turn_degrees: float = 5.0
    # Or the try is live when its pairs together show it: the three largest "explained depths"
    # (homography residual less rigid residual, in interocular distances) add up to this, and
    # the largest turn is at least min_pooled_turn_degrees. For photos taken 4–6° apart.
    min_pooled_depth: float = 0.014
    min_pooled_turn_degrees: float = 3.5
    # The least turn (degrees) that counts as following a challenge direction: above what a
    # still head reads (≤ 1.7°), below the 4–5° at which BioID's page photographs a slow user.
    min_direction_degrees: float = 2.0
    # A followed direction's turn must be at least this times the turn on the other axis away
    # from the reference's pose (measured to about 1° at these turns).
    min_axis_dominance: float = 0.75
    # Samples whose iris centres are closer than this (px) are too small to measure.
    min_interocular_px: float = 40.0
    # A jump between two samples larger than this (landmark centroid shift / interocular
    # distance) is not one face moving.
    max_face_shift: float = 1.5
    # A size change larger than this (|ln| of the interocular-distance ratio) is not one face.
    max_scale_change: float = 0.4
    # A rigid-3D residual / interocular distance above this: no rigid motion of the first face
    # explains the second one; a different face.
    max_rigid_residual: float = 0.045


    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> LivenessThresholds:
        defaults = cls()
        return cls(**{f.name: _float(env, f"BWS_LIVENESS_{f.name.upper()}", getattr(defaults, f.name))
                      for f in fields(cls)})


@dataclass(frozen=True)
class LivenessSettings:
    """The liveness service (process `liveness_service`)."""

    storage: StorageSettings
    listen: str = "127.0.0.1:50051"  # BWS_LIVENESS_LISTEN
    metrics_listen: str = "127.0.0.1:9101"  # BWS_LIVENESS_METRICS_LISTEN: Prometheus /metrics ("off" = none)
    mirrored_frames: bool = True  # BWS_MIRRORED_FRAMES: uploads are mirror images (BWS web clients)
    min_face_size_px: int = 40  # BWS_MIN_FACE_SIZE_PX: smaller faces are ignored (background)
    thresholds: LivenessThresholds = field(default_factory=LivenessThresholds)  # BWS_LIVENESS_<THRESHOLD>
    workers: int = 2  # BWS_LIVENESS_WORKERS: threads running the models, each with its own models
    max_queue: int = 16  # BWS_LIVENESS_MAX_QUEUE: calls waiting beyond that get RESOURCE_EXHAUSTED

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> LivenessSettings:
        return cls(
            storage=StorageSettings.from_env(env),
            listen=_get(env, "BWS_LIVENESS_LISTEN", "127.0.0.1:50051"),
            metrics_listen=_get(env, "BWS_LIVENESS_METRICS_LISTEN", "127.0.0.1:9101"),
            mirrored_frames=_bool(env, "BWS_MIRRORED_FRAMES", True),
            min_face_size_px=_int(env, "BWS_MIN_FACE_SIZE_PX", 40, low=1),
            thresholds=LivenessThresholds.from_env(env),
            workers=_int(env, "BWS_LIVENESS_WORKERS", 2, low=1),
            max_queue=_int(env, "BWS_LIVENESS_MAX_QUEUE", 16),
        )


# Cosine similarity for LEVEL_1..LEVEL_5 of BWS 3 PhotoVerify, as `make bench-match` measured
# them on 20,670 impostor pairs of single faces (102 identities): levels 1-4 are the scores
# that leave 103, 51, 20 and 2 impostors above; level 5 (0.001 %) is beyond what the data can
# resolve and sits 0.05 above the highest impostor seen (0.696; the OpenVINO engine, bfloat16 on
# AVX-512 BF16 CPUs).
PHOTO_LEVEL_THRESHOLDS = (0.524, 0.554, 0.580, 0.631, 0.746)


@dataclass(frozen=True)
class EnrollSettings:
    """The enrollment service (process `enroll_service`)."""

    storage: StorageSettings
    template_key: bytes = _secret()  # BWS_TEMPLATE_KEY: base64 of 32 random bytes (AES-256-GCM)
    # BWS_TEMPLATE_READ_KEYS: comma list of further template keys, used only to read: the old
    # key while ``bws-admin keys rotate`` re-seals templates with the new one (docs/operating.md).
    template_read_keys: tuple[bytes, ...] = _secret(default=())
    listen: str = "127.0.0.1:50052"  # BWS_ENROLL_LISTEN
    metrics_listen: str = "127.0.0.1:9102"  # BWS_ENROLL_METRICS_LISTEN: Prometheus /metrics ("off" = none)
    max_template_images: int = 20  # BWS_MAX_TEMPLATE_IMAGES: the newest embeddings kept per class
    match_threshold: float = 0.40  # BWS_MATCH_THRESHOLD: cosine similarity for a match (see README)
    min_face_size_px: int = 40  # BWS_MIN_FACE_SIZE_PX
    workers: int = 2  # BWS_ENROLL_WORKERS: threads running the models, each with its own models
    max_queue: int = 16  # BWS_ENROLL_MAX_QUEUE: calls waiting beyond that get RESOURCE_EXHAUSTED
    # BWS_ENCODER_VERSION: the face encoder new templates are made with (bws/faces.py ENCODERS).
    # Templates of another version are not compared; enrolling upgrades them from thumbnails.
    encoder_version: int = 1
    # BWS_STORE_THUMBNAILS: keep the aligned faces a template was made from (encrypted like it),
    # so that it can be upgraded to another encoder; off: only the embeddings are kept.
    store_thumbnails: bool = True
    # BWS_PHOTO_LEVEL_THRESHOLDS: the cosine similarity each BWS 3 PhotoVerify level needs
    # (LEVEL_1..LEVEL_5, false-accept rates 0.5 / 0.25 / 0.1 / 0.01 / 0.001 %), ascending;
    # measured by ``make bench-match`` (see docs/bws3.md for which levels its data resolves).
    photo_level_thresholds: tuple[float, ...] = PHOTO_LEVEL_THRESHOLDS
    # BWS_INDEX_SNAPSHOT_MIN_CLASSES, BWS_INDEX_SNAPSHOT_EVERY_CHANGES: a partition's search
    # index of at least that many classes is kept as a snapshot in the store, written again
    # after that many changes (or a day), which a new replica loads instead of every template.
    index_snapshot_min_classes: int = 10_000
    index_snapshot_every_changes: int = 10_000

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> EnrollSettings:
        return cls(
            storage=StorageSettings.from_env(env),
            template_key=template_keys(env)[0],
            template_read_keys=template_keys(env)[1],
            listen=_get(env, "BWS_ENROLL_LISTEN", "127.0.0.1:50052"),
            metrics_listen=_get(env, "BWS_ENROLL_METRICS_LISTEN", "127.0.0.1:9102"),
            max_template_images=_int(env, "BWS_MAX_TEMPLATE_IMAGES", 20, low=1),
            match_threshold=_float(env, "BWS_MATCH_THRESHOLD", 0.40),
            min_face_size_px=_int(env, "BWS_MIN_FACE_SIZE_PX", 40, low=1),
            workers=_int(env, "BWS_ENROLL_WORKERS", 2, low=1),
            max_queue=_int(env, "BWS_ENROLL_MAX_QUEUE", 16),
            encoder_version=_encoder_version(env),
            store_thumbnails=_bool(env, "BWS_STORE_THUMBNAILS", True),
            photo_level_thresholds=_levels(env),
            index_snapshot_min_classes=_int(env, "BWS_INDEX_SNAPSHOT_MIN_CLASSES", 10_000, low=1),
            index_snapshot_every_changes=_int(env, "BWS_INDEX_SNAPSHOT_EVERY_CHANGES", 10_000, low=1),
        )


def template_keys(env: Mapping[str, str]) -> tuple[bytes, tuple[bytes, ...]]:
    """BWS_TEMPLATE_KEY and BWS_TEMPLATE_READ_KEYS (the enrollment service's, and bws-admin's)."""
    return (template_key(_get(env, "BWS_TEMPLATE_KEY"), "BWS_TEMPLATE_KEY"),
            tuple(template_key(raw.strip(), "BWS_TEMPLATE_READ_KEYS")
                  for raw in env.get("BWS_TEMPLATE_READ_KEYS", "").split(",") if raw.strip()))


def template_key(raw: str, name: str) -> bytes:
    """A template key: base64 of exactly 32 bytes (AES-256)."""
    try:
        key = base64.b64decode(raw, validate=True)
    except binascii.Error:
        raise SettingsError(f"{name} must be base64") from None
    if len(key) != 32:
        raise SettingsError(f"{name} must decode to exactly 32 bytes")
    return key


def _levels(env: Mapping[str, str]) -> tuple[float, ...]:
    raw = _get(env, "BWS_PHOTO_LEVEL_THRESHOLDS", ",".join(map(str, PHOTO_LEVEL_THRESHOLDS)))
    try:
        levels = tuple(float(part) for part in raw.split(","))
    except ValueError:
        levels = ()
    if len(levels) != 5 or list(levels) != sorted(levels):
        raise SettingsError(f"BWS_PHOTO_LEVEL_THRESHOLDS must be 5 ascending numbers, got {raw!r}")
    return levels


def _encoder_version(env: Mapping[str, str]) -> int:
    from bws.faces import ENCODERS  # the face engine's module, imported only by the enroll service

    version = _int(env, "BWS_ENCODER_VERSION", 1, low=1)
    if version not in ENCODERS:
        raise SettingsError(f"BWS_ENCODER_VERSION must be one of {sorted(ENCODERS)}, got {version}")
    return version
