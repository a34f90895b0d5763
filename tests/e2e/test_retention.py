"""Abandoned samples are removed once no token can use them (not only by the daily S3 rule).

Runs its own stack with 10-second tokens, so that the sweep (after twice the token lifetime)
is seen within the test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from bws.devrun import Stack
from tests.e2e.conftest import running_stack, store_of
from tests.support import images
from tests.support.client import BwsClient, claims_of

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def own_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    with running_stack("retention", request, BWS_TOKEN_LIFETIME_SECONDS="10") as running:
        yield running


def test_abandoned_samples_are_deleted_after_twice_the_token_lifetime(own_stack: Stack) -> None:
    client = BwsClient(own_stack.url, own_stack.app_id, own_stack.app_secret)
    store = store_of(own_stack)
    token = client.token(bcid="bws.1.600", task="enroll", livedetection=False)
    assert client.upload(token, images.encode(images.astronaut())).json["Accepted"]
    jti = claims_of(token)["jti"]
    uploaded = time.monotonic()
    assert len(store.samples(jti)) == 1
    while store.samples(jti) and time.monotonic() - uploaded < 45:
        time.sleep(0.5)
    assert store.samples(jti) == []
    assert time.monotonic() - uploaded >= 10  # kept while the token could still use it
