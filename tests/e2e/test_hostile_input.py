"""Careless and hostile clients over the real processes: each gets a clear 4xx, never a 500 or a
traceback, and nothing secret or biometric ends up in the logs."""

from __future__ import annotations

import json
import re
import secrets
import time
import urllib.parse

import grpc
import numpy as np
import pytest

from bws import images
from bws.devrun import Stack
from bws.storage import ObjectStore
from bws.v1 import common_pb2, enrollment_pb2, enrollment_pb2_grpc, liveness_pb2, liveness_pb2_grpc
from tests import facegen
from tests.e2e.test_enroll import frames_png
from tests.support.client import BwsClient

pytestmark = pytest.mark.e2e

HUGE_NUMBER = "9" * 5000  # more digits than Python turns into an int


@pytest.mark.parametrize("bcid", [
    f"bws.1.{HUGE_NUMBER}", f"bws.{HUGE_NUMBER}.1", "bws.9223372036854775808.1", "bws.1.9223372036854775808",
    "b" * 300 + ".1.1", "bws.1." + "1" * 300,
])
@pytest.mark.parametrize("call", ["token", "isenrolled", "deleteclass"])
def test_a_bcid_out_of_bounds_is_400_everywhere(client: BwsClient, call: str, bcid: str) -> None:
    query = urllib.parse.urlencode({"id": client.app_id, "bcid": bcid, "task": "enroll"})
    method, path = {"token": ("GET", "/extension/token"), "isenrolled": ("GET", "/extension/isenrolled"),
                    "deleteclass": ("DELETE", "/extension/deleteclass")}[call]
    reply = client.request(method, f"{path}?{query}", headers=client.basic())
    assert reply.status == 400, reply.body
    assert "bcid" in reply.json["Message"]


def test_the_largest_bcid_gets_a_token(client: BwsClient) -> None:
    assert client.token_reply(bcid="bws.9223372036854775807.9223372036854775807", task="enroll").status == 200


def test_json_nested_deep_is_400_not_500(client: BwsClient) -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    reply = client.basic_call("POST", "/extension/livedetection", body=body)
    assert reply.status == 400 and "liveimage1" in reply.json["Message"]


@pytest.mark.parametrize("state", ["a\x01b", "\x1b[31m", "x" * 3000, "\ufffe"])
def test_a_state_xml_cannot_carry_is_400(client: BwsClient, state: str) -> None:
    query = urllib.parse.urlencode({"state": state})
    reply = client.request("POST", f"/extension/livedetection?{query}", body=b"{}",
                           headers=client.basic() | {"Accept": "application/xml"})
    assert reply.status == 400 and "state" in reply.json["Message"]


def test_tokens_in_query_strings_never_reach_the_log(client: BwsClient, stack: Stack) -> None:
    token = client.token(task="livenessdetection")
    client.basic_call("GET", f"/extension/result?access_token={token}")
    client.request("GET", "/uui?" + urllib.parse.urlencode({"access_token": token, "return_url": "x"}))
    time.sleep(0.2)  # the access log line is written after the reply
    log = stack.log_path("gateway").read_text()
    assert "access_token=[redacted]" in log
    assert token not in log and token.split(".")[2] not in log


def test_no_score_or_class_id_in_the_services_logs(client: BwsClient, stack: Stack) -> None:
    """Biometric outcomes per person (scores, who was recognized) stay out of routine logs."""
    class_id = f"{secrets.randbelow(10**8) + 10**9}"  # ten digits: not a number the logs hold otherwise
    bcid = f"bws.1.{class_id}"
    frames = frames_png(facegen.live_sequence(facegen.source_photo("astronaut"), ["left", "right"],
                                              rng=np.random.default_rng(51)))
    for task in ("enroll", "verify", "identify"):
        token = client.token(bcid=bcid, task=task)
        client.upload_all(token, frames, ["any"] * len(frames))
        reply = client.call(task, token)
        assert reply.json["Success"] is True, (task, reply.body)
        if task == "identify":
            assert json.dumps(reply.json["Matches"]).count(class_id) == 1
    assert client.basic_call("DELETE", f"/extension/deleteclass?bcid={bcid}").status == 200
    time.sleep(0.2)
    for name in ("liveness_service", "enroll_service", "gateway"):
        lines = [line for line in stack.log_path(name).read_text().splitlines() if ": settings: " not in line]
        leaks = [line for line in lines if re.search(r"score\W{1,3}\d", line, re.IGNORECASE) or
                 (class_id in line and not ('"GET /extension/token?' in line or '"DELETE /extension/' in line))]
        assert leaks == [], (name, leaks[:3])


@pytest.fixture(scope="module")
def bomb() -> bytes:
    from tests.unit.test_images import png_bomb

    return png_bomb(20_000, 20_000)  # 400 megapixels in about 400 KB


def test_an_image_bomb_is_refused_at_upload_without_decoding(client: BwsClient, bomb: bytes, bcid: str) -> None:
    token = client.token(bcid=bcid, task="enroll", livedetection=False)
    reply = client.upload(token, bomb)
    assert reply.status == 400 and "too large" in reply.json["Message"]
    body = json.dumps({"liveimage1": images.to_data_url(bomb), "liveimage2": images.to_data_url(bomb)}).encode()
    reply = client.basic_call("POST", "/extension/livedetection", body=body)
    assert reply.status == 400 and "too large" in reply.json["Message"]


def test_the_services_refuse_an_image_bomb_from_its_header(stack: Stack, store: ObjectStore, bomb: bytes) -> None:
    """Sent straight to the liveness service (as from another client of the gRPC API), and stored
    for the enrollment service to read: both refuse it from its header."""
    ref = common_pb2.SampleRef(key=store.new_sample_key("bomb-" + secrets.token_hex(4), 0, "any"), tag="any")
    with grpc.insecure_channel(f"127.0.0.1:{stack.liveness_port}") as channel:
        reply = liveness_pb2_grpc.LivenessServiceStub(channel).InspectSample(
            liveness_pb2.InspectSampleRequest(sample=ref, data=bomb), timeout=30)
    assert not reply.accepted and reply.errors[0].error_code == "InvalidSampleData"
    assert "too large" in reply.errors[0].message
    store.put(ref.key, bomb, "image/png")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{stack.enroll_port}") as channel:
            enrolled = enrollment_pb2_grpc.EnrollmentServiceStub(channel).Enroll(
                enrollment_pb2.EnrollRequest(class_id=f"bws/1/{secrets.randbelow(10**9) + 1}", samples=[ref]),
                timeout=30)
        assert enrolled.errors and enrolled.enrolled_images == 0
    finally:
        store.delete([ref.key])
