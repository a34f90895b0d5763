"""The in-process memory of recent per-sample results: bounded, short-lived, forgotten on use."""

from __future__ import annotations

import time

from bws.recent import RecentSamples


def test_values_are_kept_until_used_when_consumed() -> None:
    recent: RecentSamples[int] = RecentSamples(capacity=4)
    recent.put("a", 1)
    assert recent.get("a") == 1  # a plain read keeps it
    assert recent.get("a", consume=True) == 1
    assert recent.get("a") is None


def test_the_oldest_values_go_beyond_the_capacity() -> None:
    recent: RecentSamples[int] = RecentSamples(capacity=2)
    for number, key in enumerate("abc"):
        recent.put(key, number)
    assert recent.get("a") is None and recent.get("b") == 1 and recent.get("c") == 2 and len(recent) == 2


def test_values_expire() -> None:
    recent: RecentSamples[int] = RecentSamples(ttl_seconds=0.05)
    recent.put("a", 1)
    time.sleep(0.1)
    assert recent.get("a") is None and len(recent) == 0
