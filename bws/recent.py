"""A small in-process memory of what a service computed moments ago for a sample.

The usual case is that the replica that inspected or embedded a sample at upload also serves
the call that uses it; another replica finds it in the store (``BWS_SHARE_ANALYSES``) or
computes it again. Entries are biometric data, so they are few, short-lived, and dropped once
used.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Generic, TypeVar

Value = TypeVar("Value")


class RecentSamples(Generic[Value]):
    """Values by sample key: at most ``capacity`` of them, each for at most ``ttl_seconds``."""

    def __init__(self, capacity: int = 256, ttl_seconds: float = 300.0) -> None:
        self.capacity = capacity
        self.ttl_seconds = ttl_seconds
        self._entries: OrderedDict[str, tuple[float, Value]] = OrderedDict()

    def put(self, key: str, value: Value) -> None:
        self._entries[key] = (time.monotonic(), value)
        self._entries.move_to_end(key)
        self._expire()

    def get(self, key: str, *, consume: bool = False) -> Value | None:
        """The value, or None; ``consume`` forgets it (its purpose has ended)."""
        self._expire()
        entry = self._entries.pop(key, None) if consume else self._entries.get(key)
        return None if entry is None else entry[1]

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self) -> None:
        oldest_allowed = time.monotonic() - self.ttl_seconds
        while self._entries:
            key, (stored, _) = next(iter(self._entries.items()))
            if stored >= oldest_allowed and len(self._entries) <= self.capacity:
                break
            del self._entries[key]
