"""Overload: calls beyond the gateway's limit are refused at once, losing nothing.

Runs its own stack with room for one biometric call and one upload at a time.
"""

from __future__ import annotations

import signal
import threading
import time
import urllib.request
from collections.abc import Iterator

import cv2
import pytest

from bws.devrun import Stack
from tests import facegen
from tests.e2e.conftest import running_stack, store_of
from tests.e2e.test_service_lifecycle import wait_until_busy
from tests.support import images
from tests.support.client import BwsClient, Reply, claims_of

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def own_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    with running_stack("overload", request, BWS_MAX_CONCURRENT_CALLS="1", BWS_MAX_CONCURRENT_UPLOADS="1") as running:
        yield running


def wait_until_admitted(stack: Stack, kind: str, timeout: float = 30.0) -> None:
    """Wait until a request of this kind holds one of the gateway's places (from its metrics)."""
    wanted = f'bws_gateway_admitted_requests{{kind="{kind}"}} '
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{stack.url}/metrics", timeout=5) as reply:
            for line in reply.read().decode().splitlines():
                if line.startswith(wanted) and float(line.split()[-1]) >= 1:
                    return
        time.sleep(0.02)
    raise AssertionError(f"no {kind} was admitted")


def test_a_call_beyond_capacity_is_refused_at_once_and_keeps_its_try(own_stack: Stack) -> None:
    client = BwsClient(own_stack.url, own_stack.app_id, own_stack.app_secret)
    store = store_of(own_stack)
    # A slow call holds the only slot: 24 samples that skipped the upload inspection, so the
    # enrollment service decodes and detects each of them.
    slow_token = client.token(bcid="bws.1.500", task="enroll", livedetection=False)
    frame = cv2.imencode(".png", facegen.source_photo("astronaut"))[1].tobytes()
    for index in range(24):
        store.put_sample(claims_of(slow_token)["jti"], index, "any", frame, "image/png")
    slow: dict[str, Reply] = {}
    holder = threading.Thread(target=lambda: slow.update(reply=client.enroll(slow_token)))
    holder.start()
    wait_until_busy(own_stack.enroll_metrics_port)

    token = client.token(bcid="bws.1.501", task="enroll", livedetection=False, maxtries=1)
    assert client.upload(token, images.encode(images.astronaut())).json["Accepted"]
    began = time.perf_counter()
    refused = client.enroll(token)
    elapsed = time.perf_counter() - began
    holder.join(60)

    assert refused.status == 200 and refused.json == {"Success": False, "Error": "ExecutionOfJobTimedOut"}
    assert elapsed < 0.5  # at once (the benchmark measures it: well under 100 ms)
    deadline = time.monotonic() + 10  # deleted once the accepted call is done (a second at most)
    while store.samples(claims_of(token)["jti"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.samples(claims_of(token)["jti"]) == []  # nothing left behind
    assert slow["reply"].json == {"Success": True}
    # The refused call did not burn the token's only try.
    assert client.upload(token, images.encode(images.astronaut())).json["Accepted"]
    assert client.enroll(token).json == {"Success": True}


def test_an_upload_beyond_capacity_is_503_with_retry_after_and_stores_nothing(own_stack: Stack) -> None:
    client = BwsClient(own_stack.url, own_stack.app_id, own_stack.app_secret)
    store = store_of(own_stack)
    token = client.token(bcid="bws.1.502", task="enroll", livedetection=False)
    # An upload holds the only place while it is inspected: the liveness service is stalled, so
    # its inspection waits. (A place is taken only once the body is in: see test_slow_clients.)
    held: dict[str, Reply] = {}
    own_stack.send_signal("liveness_service", signal.SIGSTOP)
    try:
        holder = threading.Thread(target=lambda: held.update(reply=client.upload(
            token, images.encode(images.astronaut()), index=0)))
        holder.start()
        wait_until_admitted(own_stack, "upload")
        refused = client.upload(token, images.encode(images.astronaut()), index=1)
        assert refused.status == 503 and refused.headers.get("Retry-After") == "1"
        assert "busy" in refused.json["Message"]
    finally:
        own_stack.send_signal("liveness_service", signal.SIGCONT)
    holder.join(30)
    assert held["reply"].json["Accepted"]
    assert [s.index for s in store.samples(claims_of(token)["jti"])] == [0]  # the refused one left nothing
    assert client.upload(token, images.encode(images.astronaut()), index=1).json["Accepted"]  # room again
