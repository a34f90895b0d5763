"""Biometric Class IDs (BCIDs): ``storage.partition.classid`` or ``storage/partition/classid``.

Shared by the gateway (which parses what clients send) and the enrollment service (which checks
the canonical form it is given). The bounds keep every BCID a valid object key and within
BWS 3's int64 class ids: storage a name of 1–64 ASCII letters, digits or underscores; partition
and class id 0..2^63−1. (Classic clients ask identify tokens for class 0 of a partition; BWS 3
class ids are positive, so a class 0 enrolled through the classic API is not reachable there.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_INT64 = 2**63 - 1
_NAME = r"[A-Za-z0-9_]{1,64}"
_NUMBER = r"\d{1,19}"
_BCID = re.compile(rf"^({_NAME})[./]({_NUMBER})[./]({_NUMBER})$")
_CANONICAL = re.compile(rf"^({_NAME})/({_NUMBER})/({_NUMBER})$")
_STORAGE = re.compile(rf"^{_NAME}$")


@dataclass(frozen=True)
class Bcid:
    """A Biometric Class ID within the bounds above."""

    storage: str
    partition: int
    class_id: int

    @classmethod
    def parse(cls, text: str) -> Bcid | None:
        """Either separator; None when malformed or out of bounds."""
        return _bounded(_BCID.match(text.strip()))

    @classmethod
    def parse_canonical(cls, text: str) -> Bcid | None:
        """Only the canonical ``storage/partition/classid`` (what the services are given)."""
        return _bounded(_CANONICAL.match(text))

    def __str__(self) -> str:
        """The canonical form, also the enrollment service's class id."""
        return f"{self.storage}/{self.partition}/{self.class_id}"


def _bounded(match: re.Match[str] | None) -> Bcid | None:
    if not match:
        return None
    partition, class_id = int(match.group(2)), int(match.group(3))
    if partition > MAX_INT64 or class_id > MAX_INT64:
        return None
    return Bcid(match.group(1), partition, class_id)


def valid_partition(storage: str, partition: int) -> bool:
    """Whether a storage name and partition are within the bounds of a BCID."""
    return bool(_STORAGE.match(storage)) and 0 <= partition <= MAX_INT64


def scope_prefix(scope: str) -> str:
    """A scope of classes, ``""`` (all), ``storage`` or ``storage/partition``, as the key suffix
    that selects it (``"bws/1/"``); ValueError when it is neither."""
    parts = [p for p in scope.strip().strip("/").split("/") if p]
    valid = len(parts) <= 2 and (not parts or _STORAGE.match(parts[0]) is not None) and (
        len(parts) < 2 or (parts[1].isdigit() and valid_partition(parts[0], int(parts[1]))))
    if not valid:
        raise ValueError(f"the scope must be a storage or storage/partition, e.g. bws/1, got {scope!r}")
    return "".join(p + "/" for p in parts)
