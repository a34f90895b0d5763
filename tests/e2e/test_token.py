"""GET /extension/token over the real gateway: the claims clients read, and every refusal."""

from __future__ import annotations

import json
import time

import pytest

from tests.support.client import BwsClient, claims_of

pytestmark = pytest.mark.e2e


def test_token_claims_follow_the_bws_contract(client: BwsClient, stack) -> None:
    token = client.token(bcid="bws.1.42", task="enroll", livedetection=True, challenge=True, maxtries=4,
                         traits="Face,Periocular")
    claims = claims_of(token)
    assert claims["task"] == 0x20 | 0x100 | 0x200 | 4
    assert claims["traits"] == 3
    assert claims["aud"] == stack.url
    assert 590 <= claims["exp"] - time.time() <= 610
    assert claims["bcid"] == "bws/1/42"
    challenge = json.loads(claims["challenge"])  # a string holding JSON, one sequence per try
    assert isinstance(claims["challenge"], str) and len(challenge) == 4
    assert all(len(seq) == 3 and set(seq) <= {"up", "down", "left", "right"} for seq in challenge)


def test_token_defaults_to_verify_with_liveness_and_three_tries(client: BwsClient) -> None:
    claims = claims_of(client.token(bcid="bws/7/8"))
    assert claims["task"] == 0x100 | 3
    assert "challenge" not in claims


def test_token_livedetection_false_turns_liveness_off(client: BwsClient) -> None:
    assert claims_of(client.token(bcid="bws.1.1", task="enroll", livedetection=False))["task"] == 0x20 | 3


def test_token_for_livenessdetection_needs_no_bcid(client: BwsClient) -> None:
    assert claims_of(client.token(task="livenessdetection"))["task"] & 0xF0 == 0x80


@pytest.mark.parametrize("params", [
    {"bcid": "not-a-bcid"}, {"bcid": "bws.1"}, {"task": "enroll"}, {"bcid": "bws.1.1", "task": "dance"},
    {"bcid": "bws.1.1", "maxtries": 16}, {"bcid": "bws.1.1", "livedetection": "maybe"},
    {"bcid": "bws.1.1", "traits": "Voice"}, {"bcid": "bws.1.1", "challenges": 9},
])
def test_token_with_bad_parameters_is_400_with_a_message(client: BwsClient, params: dict) -> None:
    reply = client.token_reply(**params)
    assert reply.status == 400
    assert reply.json["Message"]


def test_token_with_wrong_secret_is_401(client: BwsClient) -> None:
    reply = client.request("GET", "/extension/token?id=test-app&bcid=bws.1.1",
                           headers=client.basic(secret="wrong-secret-wrong"))
    assert reply.status == 401 and reply.json["Message"]
    assert reply.headers.get("WWW-Authenticate", "").startswith("Basic")


def test_token_without_credentials_is_401(client: BwsClient) -> None:
    assert client.request("GET", "/extension/token?id=test-app&bcid=bws.1.1").status == 401


def test_token_for_a_storage_the_app_may_not_use_is_403(client: BwsClient) -> None:
    reply = client.token_reply(bcid="other.1.1")
    assert reply.status == 403 and reply.json["Message"]
