"""GET /extension/enroll over the real processes: the seed's behaviour, point by point.

Liveness-on paths use sequences rendered by ``tests.facegen`` from a real photo: a head
turning (live), the flat photo moved in front of the camera (attack), a head turning the
wrong way (challenge not followed).
"""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import jwt
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bws.devrun import Stack
from bws.storage import ObjectStore
from gateway import tokens
from tests import facegen
from tests.support import images
from tests.support.client import BwsClient, claims_of
from tests.support.storage import kept_for_token

pytestmark = pytest.mark.e2e

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def frames_png(frames: list[np.ndarray]) -> list[bytes]:
    return [images.encode(f) for f in frames]


def enroll_token(client: BwsClient, bcid: str, **params) -> str:
    return client.token(bcid=bcid, task="enroll", **params)


def upload_face(client: BwsClient, token: str, count: int = 1) -> None:
    photos = [images.astronaut(), images.encode(images.astronaut(), ".jpg")]
    for index in range(count):
        frame = photos[index % 2]
        reply = client.upload(token, frame if isinstance(frame, bytes) else images.encode(frame), index=index)
        assert reply.json["Accepted"], reply.body


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return facegen.source_photo("astronaut")


# -- success ----------------------------------------------------------------------------


def test_enroll_without_liveness_succeeds_and_removes_the_samples(client: BwsClient, store: ObjectStore,
                                                                  bcid: str) -> None:
    token = enroll_token(client, bcid, livedetection=False)
    upload_face(client, token, 2)
    reply = client.enroll(token)
    assert reply.status == 200
    assert reply.json == {"Success": True}
    jti = claims_of(token)["jti"]
    # Nothing stays: neither the samples nor what was stored beside them (inspection, embedding).
    assert kept_for_token(store, jti) == []
    assert store.exists("templates/" + bcid.replace(".", "/"))


def prepare_sample_calls(stack: Stack) -> float:
    """How many PrepareSample calls the enrollment service has answered (from its metrics)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.enroll_metrics_port}/metrics", timeout=5) as reply:
        families = text_string_to_metric_families(reply.read().decode())
        return sum(sample.value for family in families if family.name == "bws_grpc_server_handled"
                   for sample in family.samples if sample.labels.get("method") == "PrepareSample")


def test_uploads_are_embedded_ahead_of_the_call(client: BwsClient, stack: Stack, bcid: str) -> None:
    before = prepare_sample_calls(stack)
    token = enroll_token(client, bcid, livedetection=False)
    upload_face(client, token, 2)
    deadline = time.monotonic() + 10  # the gateway asks for them after its upload replies
    while prepare_sample_calls(stack) < before + 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.enroll(token).json == {"Success": True}


def test_enroll_answers_xml_when_asked(client: BwsClient, bcid: str) -> None:
    token = enroll_token(client, bcid, livedetection=False)
    upload_face(client, token)
    reply = client.enroll(token, accept="application/xml")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("application/xml")
    assert reply.text.startswith("<EnrollResult ")
    assert 'xmlns:i="http://www.w3.org/2001/XMLSchema-instance"' in reply.text
    assert "<Success>true</Success>" in reply.text


def test_reenrolling_adds_to_the_template(client: BwsClient, store: ObjectStore, bcid: str) -> None:
    for _ in range(2):
        token = enroll_token(client, bcid, livedetection=False)
        upload_face(client, token)
        assert client.enroll(token).json == {"Success": True}
    template = store.get("templates/" + bcid.replace(".", "/"))
    assert template is not None and b"sface" not in template  # encrypted at rest


def test_enroll_with_liveness_succeeds_for_a_turning_head(client: BwsClient, store: ObjectStore,
                                                          photo: np.ndarray, bcid: str) -> None:
    token = enroll_token(client, bcid, livedetection=True)
    frames = facegen.live_sequence(photo, ["left", "right"], rng=np.random.default_rng(1))
    client.upload_all(token, frames_png(frames), ["any"] * len(frames))
    reply = client.enroll(token)
    assert reply.json == {"Success": True}
    assert kept_for_token(store, claims_of(token)["jti"]) == []


def test_enroll_with_a_followed_challenge_succeeds(client: BwsClient, photo: np.ndarray, bcid: str) -> None:
    token = enroll_token(client, bcid, challenge=True)
    directions = json.loads(claims_of(token)["challenge"])[0]
    frames = facegen.live_sequence(photo, directions, rng=np.random.default_rng(2))
    client.upload_all(token, frames_png(frames), ["any", *directions])
    assert client.enroll(token).json == {"Success": True}


def test_enroll_flag_switches_liveness_on(client: BwsClient, bcid: str) -> None:
    token = enroll_token(client, bcid, livedetection=False)
    upload_face(client, token, 1)
    assert client.enroll(token, livedetection=True).json == {"Success": False, "Error": "NotEnoughSamples"}


# -- biometric failures (200 with Success false) ----------------------------------------


def test_enroll_of_a_flat_photo_moved_is_live_detection_failed(client: BwsClient, store: ObjectStore,
                                                               photo: np.ndarray, bcid: str) -> None:
    token = enroll_token(client, bcid)
    frames = facegen.photo_moved(photo, 3, np.random.default_rng(3))
    client.upload_all(token, frames_png(frames), ["any"] * 3)
    assert client.enroll(token).json == {"Success": False, "Error": "LiveDetectionFailed"}
    assert kept_for_token(store, claims_of(token)["jti"]) == []
    assert not store.exists("templates/" + bcid.replace(".", "/"))


def test_enroll_with_the_head_turned_the_wrong_way_is_challenge_response_failed(
        client: BwsClient, photo: np.ndarray, bcid: str) -> None:
    token = enroll_token(client, bcid, challenge=True)
    directions = json.loads(claims_of(token)["challenge"])[0]
    frames = facegen.live_sequence(photo, [OPPOSITE[d] for d in directions], rng=np.random.default_rng(4))
    client.upload_all(token, frames_png(frames), ["any", *directions])
    assert client.enroll(token).json == {"Success": False, "Error": "ChallengeResponseFailed"}


def test_enroll_with_one_sample_and_liveness_is_not_enough_samples(client: BwsClient, bcid: str) -> None:
    token = enroll_token(client, bcid, livedetection=True)
    upload_face(client, token, 1)
    # The flag cannot switch off the liveness the token requires.
    assert client.enroll(token, livedetection=False).json == {"Success": False, "Error": "NotEnoughSamples"}


# -- HTTP errors ------------------------------------------------------------------------


def test_enroll_without_samples_is_400(client: BwsClient, bcid: str) -> None:
    reply = client.enroll(enroll_token(client, bcid))
    assert reply.status == 400 and "No samples" in reply.json["Message"]


def test_enroll_without_a_token_is_401(client: BwsClient) -> None:
    reply = client.request("GET", "/extension/enroll")
    assert reply.status == 401 and reply.json["Message"]


def test_enroll_with_an_expired_token_is_401(client: BwsClient, stack, bcid: str) -> None:
    request = tokens.TokenRequest(app_id=stack.app_id, bcid=tokens.Bcid.parse(bcid), task=tokens.TASK_ENROLL,
                                  livedetection=False, challenge=False, challenges=3, maxtries=3,
                                  autoenroll=False, traits=1)
    expired = tokens.issue(request, secret=stack.secrets.token_secret, audience=stack.url, lifetime=-60)
    reply = client.enroll(expired)
    assert reply.status == 401 and "expired" in reply.json["Message"]


@pytest.mark.parametrize("forge", ["other-secret", "alg-none", "other-audience"])
def test_enroll_with_a_forged_token_is_401(client: BwsClient, stack, bcid: str, forge: str) -> None:
    claims = claims_of(enroll_token(client, bcid, livedetection=False))
    if forge == "other-secret":
        forged = jwt.encode(claims, "x" * 48, algorithm="HS256")
    elif forge == "alg-none":
        forged = jwt.encode(claims, None, algorithm="none")
    else:
        forged = jwt.encode({**claims, "aud": "http://elsewhere"}, stack.secrets.token_secret, algorithm="HS256")
    assert client.enroll(forged).status == 401


def test_enroll_with_a_verify_token_is_403(client: BwsClient, bcid: str) -> None:
    token = client.token(bcid=bcid, task="verify", livedetection=False)
    upload_face(client, token)
    reply = client.enroll(token)
    assert reply.status == 403 and reply.json["Message"]


def test_enroll_after_the_tries_are_used_up_is_403(client: BwsClient, bcid: str) -> None:
    token = enroll_token(client, bcid, livedetection=False, maxtries=1)
    upload_face(client, token)
    assert client.enroll(token).status == 200
    upload_face(client, token)
    reply = client.enroll(token)
    assert reply.status == 403 and "exceeded" in reply.json["Message"]


def test_concurrent_enrolls_never_use_more_tries_than_allowed(client: BwsClient, bcid: str) -> None:
    token = enroll_token(client, bcid, livedetection=False, maxtries=1)
    upload_face(client, token, 4)
    with ThreadPoolExecutor(4) as pool:
        statuses = sorted(r.status for r in pool.map(lambda _: client.enroll(token), range(4)))
    assert statuses.count(200) == 1
    assert set(statuses) <= {200, 400, 403}


def test_enroll_with_a_bad_livedetection_flag_is_400(client: BwsClient, bcid: str) -> None:
    token = enroll_token(client, bcid, livedetection=False)
    upload_face(client, token)
    assert client.enroll(token, livedetection="maybe").status == 400
