"""What a test checks in the bucket after the service has answered."""

from __future__ import annotations

import time

from bws.storage import ObjectStore


def kept_for_token(store: ObjectStore, token_id: str, timeout: float = 10.0) -> list[str]:
    """The keys still stored for a token's samples once the call is over: [] when the service
    deleted them all (it does so just after its reply, so this waits for that, briefly)."""
    deadline = time.monotonic() + timeout
    while True:
        kept = store.list_keys(f"uploads/{token_id}/")
        if not kept or time.monotonic() > deadline:
            return kept
        time.sleep(0.05)
