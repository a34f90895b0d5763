"""Failing parts over real processes: a service crashing mid-call, the gateway restarted
mid-upload, the object store stalling. The replies are clear and bounded, nothing a user relies
on (a try, an uploaded sample) is lost, and the stack recovers without restarting the rest.

Runs its own stack, since it stalls, kills and restarts its processes.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest

from bws.devrun import Stack
from bws.images import to_data_url
from bws.storage import ObjectStore
from tests import facegen
from tests.e2e.conftest import client_of, running_stack, store_of
from tests.e2e.test_enroll import frames_png
from tests.support import images
from tests.support.client import BwsClient, Reply, claims_of
from tests.support.storage import kept_for_token

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def own_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    with running_stack("faults", request) as running:
        yield running


@pytest.fixture(scope="module")
def client(own_stack: Stack) -> BwsClient:
    return client_of(own_stack)


@pytest.fixture(scope="module")
def store(own_stack: Stack) -> ObjectStore:
    return store_of(own_stack)


def calls_in_flight(stack: Stack) -> float:
    with urllib.request.urlopen(f"{stack.url}/metrics", timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith('bws_gateway_admitted{kind="call"}'):
                return float(line.split()[1])
    return 0.0


def live_frames(seed: int) -> list[bytes]:
    return frames_png(facegen.live_sequence(facegen.source_photo("astronaut"), ["left", "right"],
                                            rng=np.random.default_rng(seed)))


@pytest.mark.parametrize("service", ["liveness_service", "enroll_service"])
def test_a_service_crashing_mid_call_costs_no_try_and_no_sample(
        own_stack: Stack, client: BwsClient, store: ObjectStore, service: str) -> None:
    bcid = f"bws.1.{int(time.time() * 1000) % 10**9 + 1}"
    token = client.token(bcid=bcid, task="enroll", maxtries=1)  # liveness: both services take part
    client.upload_all(token, live_frames(61), ["any"] * 3)
    replies: list[Reply] = []
    own_stack.send_signal(service, signal.SIGSTOP)  # the call reaches it and waits for its answer
    try:
        caller = threading.Thread(target=lambda: replies.append(client.enroll(token)))
        caller.start()
        deadline = time.monotonic() + 10
        while calls_in_flight(own_stack) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the liveness check is done by now; the stalled service holds the call
        own_stack.send_signal(service, signal.SIGKILL)
        caller.join(30)
    finally:
        own_stack.restart(service)
    assert replies and replies[0].status == 503, replies
    assert "unavailable" in replies[0].json["Message"]
    # The samples are still there, unclaimed, and the one try is still unused.
    assert len(store.samples(claims_of(token)["jti"])) == 3
    assert client.enroll(token).json == {"Success": True}
    assert kept_for_token(store, claims_of(token)["jti"]) == []


def test_a_gateway_restarted_mid_upload_keeps_nothing_half_written(
        own_stack: Stack, client: BwsClient, store: ObjectStore) -> None:
    token = client.token(bcid="bws.1.6201", task="enroll", livedetection=False)
    body = to_data_url(images.encode(images.astronaut())).encode()
    host, port = urllib.parse.urlsplit(own_stack.url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(f"POST /extension/upload?tag=any&index=0 HTTP/1.1\r\nHost: {host}\r\n"
                           f"Authorization: Bearer {token}\r\nContent-Type: text/plain\r\n"
                           f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:len(body) // 2])
        time.sleep(0.3)
        own_stack.send_signal("gateway", signal.SIGKILL)
        assert connection.recv(1024) == b""  # closed, no reply
    own_stack.restart("gateway")
    assert store.samples(claims_of(token)["jti"]) == []
    assert client.upload(token, images.encode(images.astronaut())).json["Accepted"] is True
    assert client.enroll(token).json == {"Success": True}


def test_a_stalled_store_gives_clear_errors_within_seconds_and_recovers(
        own_stack: Stack, client: BwsClient, store: ObjectStore) -> None:
    """SeaweedFS stopped (SIGSTOP): it accepts connections and never answers. Every request
    must still be answered, 503, well within its client's patience; /readyz within two seconds."""
    token = client.token(bcid="bws.1.6202", task="enroll", livedetection=False)
    face = images.encode(images.astronaut())
    assert client.upload(token, face, index=0).json["Accepted"]
    own_stack.send_signal("seaweedfs", signal.SIGSTOP)
    try:
        ready = client.request("GET", "/readyz", timeout=4)  # raises if it takes longer
        assert ready.status == 503 and "object store" in ready.json["Message"]
        upload = client.upload(token, face, index=1)
        assert upload.status == 503 and "storage" in upload.json["Message"].lower()
        enroll = client.request("GET", "/extension/enroll", headers={"Authorization": f"Bearer {token}"},
                                timeout=20)
        assert enroll.status == 503 and "storage" in enroll.json["Message"].lower()
    finally:
        own_stack.send_signal("seaweedfs", signal.SIGCONT)
    deadline = time.monotonic() + 30
    while client.request("GET", "/readyz").status != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    # The refused upload may have been written by the store once it went on (its request sat
    # in the socket); it is not used, and it is deleted as soon as the store answers.
    assert client.enroll(token).json == {"Success": True}
    assert client.basic_call("GET", "/extension/isenrolled?bcid=bws.1.6202").json["EnrolledImages"] == 1
    deadline = time.monotonic() + 15
    while kept_for_token(store, claims_of(token)["jti"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert kept_for_token(store, claims_of(token)["jti"]) == []


def test_bws3_calls_give_unavailable_when_a_service_or_the_store_fails_and_keep_no_image(
        own_stack: Stack, store: ObjectStore) -> None:
    import grpc

    from bws.bws3 import bwsmessages_pb2, facerecognition_pb2
    from tests.support.bws3 import Bws3Client

    bws3 = Bws3Client(own_stack.url, f"127.0.0.1:{own_stack.grpc_port}", own_stack.app_id, own_stack.client_key)
    face = images.encode(images.astronaut())
    own_stack.stop_process("enroll_service")
    try:
        reply = bws3.enroll(6301, face)
        assert reply.status == 503 and reply.json["code"] == grpc.StatusCode.UNAVAILABLE.value[0], reply.body
        with pytest.raises(grpc.RpcError) as failed:
            bws3.grpc("Enroll", facerecognition_pb2.FaceEnrollmentRequest(
                classId=6301, images=[bwsmessages_pb2.ImageData(image=face)]))
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        own_stack.restart("enroll_service")
    own_stack.send_signal("seaweedfs", signal.SIGSTOP)
    try:
        began = time.monotonic()
        reply = bws3.enroll(6302, face)
        assert reply.status == 503 and "storage" in reply.json["message"].lower()
        assert time.monotonic() - began < 15
    finally:
        own_stack.send_signal("seaweedfs", signal.SIGCONT)
    deadline = time.monotonic() + 30
    while bws3.status(6301).status != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert bws3.enroll(6301, face).json["performedAction"] == "NEW_TEMPLATE_CREATED"
    deadline = time.monotonic() + 15  # the images of every call go, failed ones too
    while [k for k in store.list_keys("uploads/") if "/call-" in k] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [k for k in store.list_keys("uploads/") if "/call-" in k] == []
