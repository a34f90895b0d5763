"""Apps and their credentials: ``BWS_APPS`` entries made, rotated and checked.

Nothing here is stored anywhere: each function takes the current ``BWS_APPS`` value and returns
the new one, for the operator to put into the Secret the gateway reads. Secrets and keys come
from ``secrets`` (the OS's CSPRNG): a secret is 256 bits (43 URL-safe characters), a BWS 3 key
512 bits (enough for HS512). A rotation puts the new secret (or key) first and keeps the old
ones, which keep working until ``retire`` removes them.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
from collections import Counter
from typing import Any

from bws.settings import MIN_CLIENT_KEY_BYTES, App, SettingsError, parse_apps

SECRET_BYTES = 32
CLIENT_KEY_BYTES = 64
WEAK_SECRET_BITS = 128  # below this estimate, check() warns


class AppsError(ValueError):
    """The request does not fit the current BWS_APPS (an unknown or duplicate app id)."""


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def new_client_key() -> str:
    return base64.b64encode(secrets.token_bytes(CLIENT_KEY_BYTES)).decode()


def load(raw: str | None) -> list[dict[str, Any]]:
    """The entries of a BWS_APPS value ([] for none), checked as the gateway checks them."""
    if raw is None or not raw.strip():
        return []
    parse_apps(raw)  # raises SettingsError with the gateway's own message
    return list(json.loads(raw))


def dump(entries: list[dict[str, Any]]) -> str:
    """BWS_APPS as one line of JSON, the entries in the order given."""
    parse_apps(json.dumps(entries))  # what is handed out always passes the gateway's check
    return json.dumps(entries, separators=(",", ":"))


def create(entries: list[dict[str, Any]], app_id: str, storage: str, partitions: list[int] | None,
           origins: list[str], bws3_partition: int | None) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Add an app; returns the new entries and its credentials (secret, and the BWS 3 key)."""
    if any(entry.get("id") == app_id for entry in entries):
        raise AppsError(f"an app with the id {app_id!r} exists already (rotate its secret instead)")
    credentials = {"secret": new_secret()}
    entry: dict[str, Any] = {"id": app_id, "secret": credentials["secret"], "storage": storage,
                             "partitions": "*" if partitions is None else partitions}
    if origins:
        entry["allowed_origins"] = origins
    if bws3_partition is not None:
        credentials["bws3_key"] = new_client_key()
        entry["bws3"] = {"keys": [credentials["bws3_key"]], "partition": bws3_partition}
    return [*entries, entry], credentials


def _entry(entries: list[dict[str, Any]], app_id: str) -> dict[str, Any]:
    for entry in entries:
        if entry.get("id") == app_id:
            return entry
    raise AppsError(f"no app has the id {app_id!r}")


def rotate(entries: list[dict[str, Any]], app_id: str, bws3_key: bool = False) -> tuple[list[dict[str, Any]], str]:
    """Put a new secret (or, with ``bws3_key``, a new BWS 3 key) first; the old ones stay valid.
    Returns the new entries and the new credential."""
    entry = _entry(entries, app_id)
    if bws3_key:
        if "bws3" not in entry:
            raise AppsError(f"the app {app_id!r} is not a BWS 3 client (create one with --bws3-partition)")
        fresh = new_client_key()
        entry["bws3"]["keys"] = [fresh, *entry["bws3"]["keys"]]
    else:
        fresh = new_secret()
        old = entry["secret"] if isinstance(entry["secret"], list) else [entry["secret"]]
        entry["secret"] = [fresh, *old]
    return entries, fresh


def retire(entries: list[dict[str, Any]], app_id: str, bws3_key: bool = False) -> tuple[list[dict[str, Any]], int]:
    """Keep only the newest secret (or BWS 3 key) of an app; returns how many were removed."""
    entry = _entry(entries, app_id)
    if bws3_key:
        if "bws3" not in entry:
            raise AppsError(f"the app {app_id!r} is not a BWS 3 client")
        removed = len(entry["bws3"]["keys"]) - 1
        entry["bws3"]["keys"] = entry["bws3"]["keys"][:1]
    else:
        old = entry["secret"] if isinstance(entry["secret"], list) else [entry["secret"]]
        removed = len(old) - 1
        entry["secret"] = old[0]
    return entries, removed


def remove(entries: list[dict[str, Any]], app_id: str) -> list[dict[str, Any]]:
    _entry(entries, app_id)
    return [entry for entry in entries if entry.get("id") != app_id]


def strength_bits(secret: str) -> float:
    """A rough strength estimate: length × log2 of the alphabet its characters come from."""
    alphabet = 0
    alphabet += 26 if any(c.islower() for c in secret) else 0
    alphabet += 26 if any(c.isupper() for c in secret) else 0
    alphabet += 10 if any(c.isdigit() for c in secret) else 0
    alphabet += 32 if any(not c.isalnum() for c in secret) else 0
    repeats = max(Counter(secret).values(), default=0) / max(len(secret), 1)
    bits = len(secret) * math.log2(max(alphabet, 2))
    return bits / 2 if repeats > 0.25 else bits


def check(raw: str) -> tuple[tuple[App, ...], list[str]]:
    """Parse BWS_APPS as the gateway does (SettingsError when it would refuse to start) and say
    what is allowed but unwise."""
    apps = parse_apps(raw)
    warnings = []
    for app in apps:
        if any(strength_bits(secret) < WEAK_SECRET_BITS for secret in app.secrets):
            warnings.append(f"app {app.app_id!r}: a secret looks weaker than {WEAK_SECRET_BITS} bits; "
                            f"rotate it (bws-admin app rotate {app.app_id})")
        if len(app.secrets) > 1:
            warnings.append(f"app {app.app_id!r}: {len(app.secrets)} secrets are valid (a rotation under way); "
                            f"retire the old ones once clients use the newest")
        if len(app.client_keys) > 1:
            warnings.append(f"app {app.app_id!r}: {len(app.client_keys)} BWS 3 keys are valid (a rotation under way)")
        if any(len(key) < 2 * MIN_CLIENT_KEY_BYTES for key in app.client_keys):
            warnings.append(f"app {app.app_id!r}: a BWS 3 key is shorter than 512 bits, too short for HS512")
        if app.partitions is None:
            warnings.append(f"app {app.app_id!r} may use any partition of storage {app.storage!r}")
    storages = Counter(app.storage for app in apps)
    for storage, count in storages.items():
        if count > 1:
            warnings.append(f"{count} apps share storage {storage!r}: they can reach each other's classes "
                            "where their partitions overlap")
    return apps, warnings


__all__ = ["AppsError", "SettingsError", "check", "create", "dump", "load", "new_client_key", "new_secret",
           "remove", "retire", "rotate"]
