"""The object store goes down mid-session: clear errors, nothing lost or half-written.

Runs its own stack, since it stops and restarts SeaweedFS.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from bws.devrun import Stack
from tests.e2e.conftest import running_stack, store_of
from tests.support import images
from tests.support.client import BwsClient, claims_of
from tests.support.storage import kept_for_token

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def own_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    with running_stack("storage-down", request) as running:
        yield running


def test_storage_down_gives_clear_errors_and_loses_nothing(own_stack: Stack) -> None:
    client = BwsClient(own_stack.url, own_stack.app_id, own_stack.app_secret)
    store = store_of(own_stack)
    token = client.token(bcid="bws.1.99", task="enroll", livedetection=False)
    face = images.encode(images.astronaut())
    assert client.upload(token, face, index=0).json["Accepted"]

    own_stack.stop_process("seaweedfs")
    try:
        upload = client.upload(token, face, index=1)
        assert upload.status == 503, upload.body
        assert "storage" in upload.json["Message"].lower()
        enroll = client.enroll(token)
        assert enroll.status == 503 and "storage" in enroll.json["Message"].lower()
        ready = client.request("GET", "/readyz")
        assert ready.status == 503 and "object store" in ready.json["Message"]
    finally:
        own_stack.start_storage()

    # Nothing half-written: the one accepted sample is still there, unclaimed, and enrolls.
    deadline = time.monotonic() + 30
    while client.request("GET", "/readyz").status != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    samples = store.samples(claims_of(token)["jti"])
    assert [s.index for s in samples] == [0]
    assert client.enroll(token).json == {"Success": True}
    assert kept_for_token(store, claims_of(token)["jti"]) == []
