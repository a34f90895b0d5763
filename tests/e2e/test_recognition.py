"""verify, identify, isenrolled, deleteclass, result, status over the real processes."""

from __future__ import annotations

import json
import secrets
from urllib.parse import urlencode

import numpy as np
import pytest

from bws.images import to_data_url
from tests import facegen
from tests.support import images
from tests.support.client import BwsClient, claims_of

pytestmark = pytest.mark.e2e

ASTRONAUT = images.encode(images.astronaut())
ASTRONAUT_JPEG = images.encode(images.astronaut(), ".jpg")
GRACE = images.encode(images.grace_hopper())


def enroll(client: BwsClient, bcid: str, image: bytes) -> None:
    token = client.token(bcid=bcid, task="enroll", livedetection=False)
    assert client.upload(token, image).json["Accepted"]
    assert client.enroll(token).json == {"Success": True}


def call_with(client: BwsClient, endpoint: str, task: str, bcid: str, image: bytes, **params) -> dict:
    token = client.token(bcid=bcid, task=task, livedetection=False, **params)
    assert client.upload(token, image).json["Accepted"]
    reply = client.call(endpoint, token)
    assert reply.status == 200, reply.body
    return reply.json


# -- verify -----------------------------------------------------------------------------


def test_verify_of_the_enrolled_person_succeeds(client: BwsClient, bcid: str) -> None:
    enroll(client, bcid, ASTRONAUT)
    assert call_with(client, "verify", "verify", bcid, ASTRONAUT_JPEG) == {"Success": True}


def test_verify_of_another_person_is_not_recognized_without_error(client: BwsClient, bcid: str) -> None:
    enroll(client, bcid, ASTRONAUT)
    assert call_with(client, "verify", "verify", bcid, GRACE) == {"Success": False}


def test_verify_without_a_template_is_no_template_available(client: BwsClient, bcid: str) -> None:
    assert call_with(client, "verify", "verify", bcid, ASTRONAUT) == {"Success": False,
                                                                     "Error": "NoTemplateAvailable"}


def test_verify_with_autoenroll_adds_the_samples_to_the_template(client: BwsClient, bcid: str) -> None:
    enroll(client, bcid, ASTRONAUT)
    before = client.basic_call("GET", f"/extension/isenrolled?bcid={bcid}").json["EnrolledImages"]
    assert call_with(client, "verify", "verify", bcid, ASTRONAUT_JPEG, autoenroll=True) == {"Success": True}
    assert client.basic_call("GET", f"/extension/isenrolled?bcid={bcid}").json["EnrolledImages"] == before + 1


def test_verify_with_an_enroll_token_is_403(client: BwsClient, bcid: str) -> None:
    token = client.token(bcid=bcid, task="enroll", livedetection=False)
    client.upload(token, ASTRONAUT)
    assert client.call("verify", token).status == 403


# -- identify ---------------------------------------------------------------------------


def test_identify_finds_the_person_best_first_within_the_partition(client: BwsClient) -> None:
    partition = secrets.randbelow(10**6) + 1000
    enroll(client, f"bws.{partition}.1", ASTRONAUT)
    enroll(client, f"bws.{partition}.2", GRACE)
    enroll(client, f"bws.{partition + 1}.3", ASTRONAUT)  # another partition: never a match
    reply = call_with(client, "identify", "identify", f"bws.{partition}.0", ASTRONAUT_JPEG)
    assert reply["Success"] is True
    assert [m["BCID"] for m in reply["Matches"]] == [f"bws/{partition}/1"]
    assert 0 < reply["Matches"][0]["Score"] <= 1


def test_identify_in_an_empty_partition_finds_nobody(client: BwsClient) -> None:
    reply = call_with(client, "identify", "identify", f"bws.{secrets.randbelow(10**6) + 2_000_000}.0", GRACE)
    assert reply == {"Success": False, "Matches": []}


def test_identify_answers_xml_with_nested_matches(client: BwsClient) -> None:
    partition = secrets.randbelow(10**6) + 3_000_000
    enroll(client, f"bws.{partition}.9", GRACE)
    token = client.token(bcid=f"bws.{partition}.0", task="identify", livedetection=False)
    client.upload(token, GRACE)
    reply = client.call("identify", token, accept="application/xml")
    assert f"<Match><BCID>bws/{partition}/9</BCID>" in reply.text


# -- isenrolled, deleteclass ------------------------------------------------------------


def test_isenrolled_is_200_after_enrollment_and_404_before(client: BwsClient, bcid: str) -> None:
    assert client.basic_call("GET", f"/extension/isenrolled?bcid={bcid}&trait=Face").status == 404
    enroll(client, bcid, ASTRONAUT)
    reply = client.basic_call("GET", f"/extension/isenrolled?bcid={bcid}&trait=Face")
    assert reply.status == 200 and reply.json["EnrolledImages"] == 1


@pytest.mark.parametrize("query", ["bcid=nonsense", "bcid=bws.1.1&trait=Voice", ""])
def test_isenrolled_with_a_bad_bcid_or_trait_is_400(client: BwsClient, query: str) -> None:
    assert client.basic_call("GET", f"/extension/isenrolled?{query}").status == 400


def test_deleteclass_removes_every_trace(client: BwsClient, store, bcid: str) -> None:
    partition = bcid.split(".")[1]
    enroll(client, bcid, ASTRONAUT)
    assert client.basic_call("DELETE", f"/extension/deleteclass?bcid={bcid}").status == 200
    assert client.basic_call("GET", f"/extension/isenrolled?bcid={bcid}").status == 404
    assert not store.exists("templates/" + bcid.replace(".", "/"))
    assert call_with(client, "verify", "verify", bcid, ASTRONAUT)["Error"] == "NoTemplateAvailable"
    found = call_with(client, "identify", "identify", f"bws.{partition}.0", ASTRONAUT)
    assert bcid.replace(".", "/") not in [m["BCID"] for m in found["Matches"]]


def test_deleteclass_of_an_unknown_class_is_still_200(client: BwsClient, bcid: str) -> None:
    assert client.basic_call("DELETE", f"/extension/deleteclass?bcid={bcid}").status == 200


# -- an app stays within its storage and partitions -------------------------------------


def test_an_app_cannot_touch_another_partition(limited_client: BwsClient) -> None:
    assert limited_client.token_reply(bcid="bws.5.1", task="enroll").status == 200
    assert limited_client.token_reply(bcid="bws.6.1", task="enroll").status == 403
    assert limited_client.basic_call("GET", "/extension/isenrolled?bcid=bws.6.1").status == 403
    assert limited_client.basic_call("DELETE", "/extension/deleteclass?bcid=bws.6.1").status == 403


def test_result_of_another_apps_token_is_403(client: BwsClient, limited_client: BwsClient) -> None:
    token = client.token(bcid="bws.1.1", task="enroll")
    assert limited_client.basic_call("GET", f"/extension/result?access_token={token}").status == 403


# -- result, status ---------------------------------------------------------------------


def test_result_reports_the_last_call_and_204_before_any(client: BwsClient, bcid: str) -> None:
    token = client.token(bcid=bcid, task="enroll", livedetection=False)
    assert client.basic_call("GET", f"/extension/result?access_token={token}").status == 204
    client.upload(token, ASTRONAUT)
    client.enroll(token)
    reply = client.basic_call("GET", f"/extension/result?access_token={token}")
    assert reply.json == {"Action": "enrollment", "BCID": bcid.replace(".", "/"), "Success": True}


def test_status_reports_version_and_features(client: BwsClient) -> None:
    reply = client.basic_call("GET", "/extension/status")
    assert reply.status == 200 and reply.json["Version"] and "Identification" in reply.json["Features"]
    assert client.request("GET", "/extension/status").status == 401


# -- livedetection (two images, app credentials) ----------------------------------------


def test_livedetection_of_one_photo_twice_is_false(client: BwsClient) -> None:
    body = json.dumps({"liveimage1": to_data_url(ASTRONAUT), "liveimage2": to_data_url(ASTRONAUT)}).encode()
    reply = client.basic_call("POST", "/extension/livedetection", body)
    assert reply.status == 200 and reply.json is False


def test_livedetection_with_state_returns_a_result_object(client: BwsClient) -> None:
    body = urlencode({"liveimage1": to_data_url(ASTRONAUT), "liveimage2": to_data_url(ASTRONAUT)}).encode()
    reply = client.basic_call("POST", "/extension/livedetection?state=xyz", body,
                              "application/x-www-form-urlencoded")
    assert reply.json == {"Success": False, "State": "xyz", "Error": "LiveDetectionFailed"}


@pytest.mark.parametrize("body", [b"{}", b'{"liveimage1": "data:image/png;base64,AAAA"}', b"garbage"])
def test_livedetection_with_missing_or_bad_images_is_400(client: BwsClient, body: bytes) -> None:
    reply = client.basic_call("POST", "/extension/livedetection", body)
    assert reply.status == 400 and reply.json["Message"]


# -- liveness on the other calls --------------------------------------------------------


def live_pngs(directions: list[str], seed: int) -> list[bytes]:
    frames = facegen.live_sequence(facegen.source_photo("astronaut"), directions, rng=np.random.default_rng(seed))
    return [images.encode(f) for f in frames]


def test_livenessdetection_passes_a_turning_head_and_fails_a_still_photo(client: BwsClient) -> None:
    token = client.token(task="livenessdetection", challenge=True)
    directions = json.loads(claims_of(token)["challenge"])[0]
    client.upload_all(token, live_pngs(directions, 21), ["any", *directions])
    assert client.call("livenessdetection", token).json == {"Success": True}

    token = client.token(task="livenessdetection")
    still = images.encode(facegen.source_photo("astronaut"))
    client.upload_all(token, [still, still], ["any", "any"])
    assert client.call("livenessdetection", token).json == {"Success": False, "Error": "LiveDetectionFailed"}


def test_livenessdetection_with_a_verify_token_is_403(client: BwsClient, bcid: str) -> None:
    token = client.token(bcid=bcid, task="verify")
    client.upload(token, ASTRONAUT)
    assert client.call("livenessdetection", token).status == 403


def test_verify_with_a_challenge_checks_liveness_first(client: BwsClient, bcid: str) -> None:
    enroll(client, bcid, images.encode(facegen.source_photo("astronaut")))
    token = client.token(bcid=bcid, task="verify", challenge=True, maxtries=2)
    directions = json.loads(claims_of(token)["challenge"])
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    client.upload_all(token, live_pngs([opposite[d] for d in directions[0]], 22), ["any", *directions[0]])
    assert client.call("verify", token).json == {"Success": False, "Error": "ChallengeResponseFailed"}
    client.upload_all(token, live_pngs(directions[1], 23), ["any", *directions[1]])  # try 2, its own challenge
    assert client.call("verify", token).json == {"Success": True}


def test_livedetection_of_a_turning_head_is_true(client: BwsClient) -> None:
    first, second = live_pngs(["left"], 24)
    body = json.dumps({"liveimage1": to_data_url(first), "liveimage2": to_data_url(second)}).encode()
    reply = client.basic_call("POST", "/extension/livedetection", body)
    assert reply.status == 200 and reply.json is True
