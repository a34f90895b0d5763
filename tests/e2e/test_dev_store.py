"""The dev run's object store (SeaweedFS on loopback) is closed to other local users, and what
the service deletes does not stay readable in its files.

Runs its own stack, with SeaweedFS compacting every few seconds.
"""

from __future__ import annotations

import struct
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator

import grpc
import pytest

from bws.devrun import Stack
from tests.e2e.conftest import ARTIFACTS, store_of
from tests.support import images
from tests.support.client import BwsClient, claims_of

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def own_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    import secrets

    running = Stack(workdir=ARTIFACTS / f"dev-store-{secrets.token_hex(3)}", app_id="test-app",
                    app_secret=secrets.token_urlsafe(18), vacuum_interval_seconds=3).start()
    yield running
    running.stop()


def with_text(png: bytes, text: bytes) -> bytes:
    """A PNG with a tEXt chunk after its header: the marker travels with the sample's bytes."""
    body = b"Comment\x00" + text
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    return png[:33] + chunk + png[33:]


def test_the_stores_other_ports_refuse_callers_without_credentials(own_stack: Stack) -> None:
    client = BwsClient(own_stack.url, own_stack.app_id, own_stack.app_secret)
    token = client.token(bcid="bws.1.8101", task="enroll", livedetection=False)
    assert client.upload(token, images.encode(images.astronaut())).json["Accepted"]
    sample = store_of(own_stack).samples(claims_of(token)["jti"])[0]
    filer = f"http://127.0.0.1:{own_stack.storage_ports['filer.port']}/buckets/bws-data/"
    for url, method in ((filer + sample.key, "GET"), (filer + "uploads/?pretty=y", "GET"),
                        (filer + sample.key, "DELETE"), (filer + "tokens/x/try-1", "PUT")):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(url, method=method, data=b"" if method == "PUT" else None),
                                   timeout=5)
        refused.value.close()
        assert refused.value.code == 401, (method, url)
    with grpc.insecure_channel(f"127.0.0.1:{own_stack.storage_ports['filer.port.grpc']}") as channel, \
            pytest.raises(grpc.FutureTimeoutError):
        grpc.channel_ready_future(channel).result(timeout=3)  # mutual TLS: no handshake without the certificate


def test_deleted_samples_are_compacted_out_of_the_stores_files(own_stack: Stack) -> None:
    client = BwsClient(own_stack.url, own_stack.app_id, own_stack.app_secret)
    marker = f"sample-marker-{time.time_ns()}".encode()
    token = client.token(bcid="bws.1.8102", task="enroll", livedetection=False)
    assert client.upload(token, with_text(images.encode(images.astronaut()), marker)).json["Accepted"]
    files = [p for p in (own_stack.workdir / "seaweedfs").rglob("*") if p.is_file()]
    assert any(marker in p.read_bytes() for p in files)  # it is there while it is a sample
    assert client.enroll(token).json == {"Success": True}  # the call deletes its samples
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        holding = [p for p in (own_stack.workdir / "seaweedfs").rglob("*") if p.is_file() and marker in p.read_bytes()]
        if not holding:
            return
        time.sleep(1)
    raise AssertionError(f"the deleted sample's bytes are still in the store's files after 60 s: {holding}")
