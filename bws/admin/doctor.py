"""``bws-admin doctor``: check a deployment end to end, from where the tool runs, and say what
to fix. Each check is OK, WARN (works, but unwise), FAIL (broken, or unsafe) or SKIP (cannot
be checked from here: say, the enrollment service's key in a gateway pod).

Checked: each process's settings as the process would read them; the object store and its
bucket; the bucket's expiry rules; the clock against the store's; the two services' health and
readiness (gRPC) and the gateway's /readyz; the model files' SHA-256; key and secret strength
(no default S3 credentials, the token secret, app secrets, the template key); that the
templates in the store are sealed with a key configured here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import grpc
import urllib3
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bws.settings import EnrollSettings, GatewaySettings, LivenessSettings, SettingsError, StorageSettings
from bws.storage import AUDIT, INDEXES, TEMPLATES, TOKENS, UPLOADS, StorageUnavailable

# Replicas' clocks may differ this much (enroll_service/matching.py's change log, JWT leeway).
MAX_SKEW_SECONDS, WARN_SKEW_SECONDS = 30.0, 5.0
DEFAULT_S3_CREDENTIALS = {"minioadmin", "admin", "any", "seaweedfs", "changeme", "password", "secret"}
TIMEOUT = 3.0


@dataclass
class Check:
    name: str
    status: str  # OK, WARN, FAIL, SKIP
    detail: str
    fix: str = ""


def _settings(results: list[Check]) -> dict[str, Any]:
    found = {}
    for name, kind in (("gateway", GatewaySettings), ("enrollment service", EnrollSettings),
                       ("liveness service", LivenessSettings)):
        try:
            found[name] = kind.from_env()
            results.append(Check(f"settings: {name}", "OK", "valid"))
        except SettingsError as error:
            if "must be set" in str(error):
                results.append(Check(f"settings: {name}", "SKIP", f"not configured here ({error})"))
            else:
                results.append(Check(f"settings: {name}", "FAIL", str(error), "correct the variable it names"))
    return found


def _store(admin: Any, results: list[Check]) -> bool:
    try:
        StorageSettings.from_env()
    except SettingsError as error:
        results.append(Check("object store", "FAIL", str(error), "set BWS_S3_ENDPOINT and its credentials"))
        return False
    try:
        admin.store.ping()
    except StorageUnavailable as error:
        cause = error.__cause__ or error
        results.append(Check("object store", "FAIL", f"{error}: {cause}",
                             "check BWS_S3_ENDPOINT, the credentials, and that the bucket exists"))
        return False
    results.append(Check("object store", "OK", f"{admin.store.settings.endpoint}, bucket {admin.store.bucket}"))
    return True


def _lifecycle(admin: Any, results: list[Check]) -> None:
    wanted = {UPLOADS, TOKENS, INDEXES, AUDIT}
    try:
        config = admin.store.client.get_bucket_lifecycle(admin.store.bucket)
    except Exception as error:  # the SDK raises S3Error, or a parse error for an odd server reply
        results.append(Check("expiry rules", "FAIL", f"cannot read the bucket's lifecycle: {error}",
                             "start a service (each applies the rules) or check the store's lifecycle support"))
        return
    prefixes = {getattr(rule.rule_filter, "prefix", None) for rule in (config.rules if config else [])
                if rule.status == "Enabled"}
    missing = sorted(wanted - prefixes)
    if missing:
        results.append(Check("expiry rules", "FAIL", f"no expiry rule for {', '.join(missing)}: abandoned samples "
                             "or old audit records would stay", "restart a service: it applies the rules at start"))
    else:
        results.append(Check("expiry rules", "OK", "uploads/, tokens/, indexes/ and audit/ expire"))


def _clock(admin: Any, results: list[Check]) -> None:
    settings = admin.store.settings
    url = f"{'https' if settings.secure else 'http'}://{settings.endpoint}/"
    try:
        began = time.time()
        response = urllib3.request("HEAD", url, timeout=TIMEOUT, retries=False)
        local = (began + time.time()) / 2
        theirs = parsedate_to_datetime(response.headers["Date"]).timestamp()
    except (urllib3.exceptions.HTTPError, KeyError, TypeError, ValueError) as error:
        results.append(Check("clock", "SKIP", f"the store sent no usable Date header ({error})"))
        return
    skew = local - theirs
    status = "FAIL" if abs(skew) > MAX_SKEW_SECONDS else "WARN" if abs(skew) > WARN_SKEW_SECONDS else "OK"
    results.append(Check("clock", status, f"{skew:+.1f} s against the object store (1 s resolution)",
                         "" if status == "OK" else "run NTP (chrony, systemd-timesyncd) on every node"))


def _grpc_health(name: str, variable: str, default: str, results: list[Check]) -> None:
    address = os.environ.get(variable, "").strip()
    target = address or default
    channel = grpc.insecure_channel(target)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        states = {}
        for probe in ("liveness", "readiness"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=probe), timeout=TIMEOUT)
            states[probe] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    except grpc.RpcError as error:
        if not address:
            results.append(Check(name, "SKIP", f"{variable} is not set here and {default} does not answer"))
        else:
            results.append(Check(name, "FAIL", f"{target} does not answer ({error.code().name})",  # type: ignore[attr-defined]
                                 f"check the {name}'s pods (kubectl get pods; its log) and {variable}"))
        return
    finally:
        channel.close()
    ok = all(state == "SERVING" for state in states.values())
    results.append(Check(name, "OK" if ok else "FAIL", f"{target}: alive {states['liveness']}, "
                         f"ready {states['readiness']}", "" if ok else f"see the {name}'s log: it is not ready"))


def _gateway(settings: GatewaySettings | None, results: list[Check]) -> None:
    if settings is None:
        results.append(Check("gateway", "SKIP", "the gateway's settings are not here"))
        return
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    url = f"http://{host}:{settings.port}/readyz"
    try:
        response = urllib3.request("GET", url, timeout=TIMEOUT, retries=False)
    except urllib3.exceptions.HTTPError as error:
        results.append(Check("gateway", "FAIL", f"{url} does not answer ({error})", "check the gateway's pod and log"))
        return
    ok = response.status == 200
    results.append(Check("gateway", "OK" if ok else "FAIL", f"{url}: {response.status}",
                         "" if ok else f"it says: {response.data[:200].decode(errors='replace')}"))


def _models(results: list[Check]) -> None:
    from bws.models import EXPANDED, SHIPPED, ModelError

    for model in (*SHIPPED, *EXPANDED):
        try:
            model.path()
        except ModelError as error:
            results.append(Check(f"model {model.name}", "FAIL", str(error),
                                 "reinstall (make install) or rebuild the image"))
            continue
        results.append(Check(f"model {model.name}", "OK", f"SHA-256 {model.sha256[:16]}…"))


def _keys(found: dict[str, Any], results: list[Check]) -> None:
    from bws.admin.apps import WEAK_SECRET_BITS, check, strength_bits

    access, secret = os.environ.get("BWS_S3_ACCESS_KEY", ""), os.environ.get("BWS_S3_SECRET_KEY", "")
    if access or secret:
        default = access.lower() in DEFAULT_S3_CREDENTIALS or secret.lower() in DEFAULT_S3_CREDENTIALS
        short = len(secret) < 16
        results.append(Check("S3 credentials", "FAIL" if default or short else "OK",
                             "a default or short S3 credential" if default or short else "not a known default",
                             "make a long random S3 user for the services" if default or short else ""))
    gateway = found.get("gateway")
    if gateway is not None:
        bits = strength_bits(gateway.token_secret)
        results.append(Check("token secret", "OK" if bits >= WEAK_SECRET_BITS else "WARN", f"about {bits:.0f} bits",
                             "" if bits >= WEAK_SECRET_BITS else "use 32 random bytes (openssl rand -base64 32)"))
        _, warnings = check(os.environ["BWS_APPS"])
        weak_apps = [w for w in warnings if "weaker" in w or "shorter" in w]
        results.append(Check("app credentials", "WARN" if weak_apps else "OK",
                             "; ".join(weak_apps) or f"{len(gateway.apps)} app(s), strong secrets and keys",
                             "bws-admin app rotate <id>" if weak_apps else ""))
    enroll = found.get("enrollment service")
    if enroll is not None:
        keys = (enroll.template_key, *enroll.template_read_keys)
        weak = [k for k in keys if len(set(k)) < 16]
        results.append(Check("template keys", "FAIL" if weak else "OK",
                             f"{len(weak)} key(s) with few distinct bytes: not random" if weak
                             else f"{len(keys)} key(s), 256 bits each",
                             "make one with bws-admin keys new, then rotate (docs/operating.md)" if weak else ""))


def _sealed_with_known_keys(admin: Any, found: dict[str, Any], results: list[Check], sample: int = 20) -> None:
    from itertools import islice

    from enroll_service.templates import key_id, sealed_key_id

    enroll = found.get("enrollment service")
    if enroll is None:
        results.append(Check("templates' keys", "SKIP", "BWS_TEMPLATE_KEY is not here"))
        return
    known = {key_id(k) for k in (enroll.template_key, *enroll.template_read_keys)}
    unknown, seen = 0, 0
    for key in islice(admin.store.iter_keys(TEMPLATES), sample):
        head = admin.store.get_range(key, 12)
        seen += 1
        if head is not None and sealed_key_id(head) not in known | {None}:
            unknown += 1
    if unknown:
        results.append(Check("templates' keys", "FAIL", f"{unknown} of the first {seen} templates are sealed with "
                             "a key configured neither as BWS_TEMPLATE_KEY nor in BWS_TEMPLATE_READ_KEYS",
                             "configure the key they were sealed with (bws-admin keys status shows their ids)"))
    else:
        results.append(Check("templates' keys", "OK", f"the first {seen} template(s) open with the keys here"))


def run_checks(admin: Any) -> list[Check]:
    results: list[Check] = []
    found = _settings(results)
    steps: list[Callable[[], None]] = []
    if _store(admin, results):
        steps += [lambda: _lifecycle(admin, results), lambda: _clock(admin, results),
                  lambda: _sealed_with_known_keys(admin, found, results)]
    steps += [lambda: _grpc_health("liveness service", "BWS_LIVENESS_ADDRESS", GatewaySettings.liveness_address,
                                   results),
              lambda: _grpc_health("enrollment service", "BWS_ENROLL_ADDRESS", GatewaySettings.enroll_address,
                                   results),
              lambda: _gateway(found.get("gateway"), results), lambda: _models(results),
              lambda: _keys(found, results)]
    for step in steps:
        step()
    return results
