"""The full token → upload → enroll flow with the services using the integration S3 server."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from bws.devrun import Stack
from tests.integration.conftest import ARTIFACTS, S3Server
from tests.support import images
from tests.support.client import BwsClient, claims_of
from tests.support.storage import kept_for_token

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(s3_server: S3Server) -> Iterator[Stack]:
    running = Stack(workdir=ARTIFACTS / f"integration-{secrets.token_hex(3)}", app_id="it-app",
                    app_secret=secrets.token_urlsafe(18), external_s3=s3_server.endpoint,
                    extra_env={"BWS_S3_BUCKET": "it-flow"})
    running.secrets.s3_access_key, running.secrets.s3_secret_key = s3_server.access_key, s3_server.secret_key
    yield running.start()
    running.stop()


def test_token_upload_enroll_verify_against_the_s3_server(stack: Stack, s3_server: S3Server) -> None:
    client = BwsClient(stack.url, stack.app_id, stack.app_secret)
    token = client.token(bcid="bws.3.1", task="enroll", livedetection=False)
    assert client.upload(token, images.encode(images.astronaut())).json["Accepted"]
    assert client.enroll(token).json == {"Success": True}
    store = s3_server.store("it-flow")
    assert kept_for_token(store, claims_of(token)["jti"]) == []
    assert store.exists("templates/bws/3/1")

    token = client.token(bcid="bws.3.1", task="verify", livedetection=False)
    assert client.upload(token, images.encode(images.astronaut(), ".jpg")).json["Accepted"]
    assert client.call("verify", token).json == {"Success": True}
