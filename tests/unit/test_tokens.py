"""Token claims, flags and checks (gateway/tokens.py)."""

from __future__ import annotations

import json
import time

import jwt
import pytest

from gateway import tokens

SECRET = "s" * 64
AUD = "https://bws.example"


def request(**changes) -> tokens.TokenRequest:
    base = dict(app_id="app", bcid=tokens.Bcid.parse("bws.1.2"), task=tokens.TASK_ENROLL, livedetection=True,
                challenge=False, challenges=3, maxtries=3, autoenroll=False, traits=1)
    return tokens.TokenRequest(**(base | changes))


@pytest.mark.parametrize("text,expected", [
    ("bws.1.2", "bws/1/2"), ("bws/10/20", "bws/10/20"), ("my_store.0.7", "my_store/0/7"),
])
def test_bcid_parses_both_separators(text: str, expected: str) -> None:
    assert str(tokens.Bcid.parse(text)) == expected


@pytest.mark.parametrize("text", ["", "bws", "bws.1", "bws.a.2", "bws.1.2.3", "../1/2", "bws 1 2"])
def test_bcid_rejects_malformed_ids(text: str) -> None:
    assert tokens.Bcid.parse(text) is None


def test_issued_token_round_trips_with_its_flags() -> None:
    token = tokens.issue(request(challenge=True, maxtries=5), secret=SECRET, audience=AUD, lifetime=600)
    claims = tokens.verify(token, secret=SECRET, audience=AUD)
    assert claims.kind == tokens.TASK_ENROLL and claims.maxtries == 5
    assert claims.requires_liveness and claims.task & tokens.FLAG_CHALLENGE
    assert len(claims.challenge) == 5 and all(len(seq) == 3 for seq in claims.challenge)
    assert claims.directions_for_try(2) == claims.challenge[1]


def test_challenge_sequences_never_repeat_a_direction_twice_in_a_row() -> None:
    for _ in range(200):
        seq = tokens.random_directions(7)
        assert all(a != b for a, b in zip(seq, seq[1:], strict=False))


def test_challenge_implies_liveness() -> None:
    assert tokens.task_flags(request(livedetection=False, challenge=True)) & tokens.FLAG_LIVEDETECTION


def test_maxtries_zero_bits_mean_three() -> None:
    token = jwt.encode({"iss": AUD, "aud": AUD, "sub": "a", "jti": "j", "iat": int(time.time()),
                        "nbf": int(time.time()), "exp": int(time.time()) + 60, "task": 0x20},
                       SECRET, algorithm="HS256")
    assert tokens.verify(token, secret=SECRET, audience=AUD).maxtries == 3


def test_challenge_claim_is_a_json_string() -> None:
    token = tokens.issue(request(challenge=True), secret=SECRET, audience=AUD, lifetime=600)
    payload = jwt.decode(token, options={"verify_signature": False})
    assert isinstance(payload["challenge"], str)
    assert len(json.loads(payload["challenge"])) == 3


@pytest.mark.parametrize("case", ["expired", "other-secret", "other-audience", "alg-none", "hs512", "garbage"])
def test_verify_refuses_bad_tokens(case: str) -> None:
    good = tokens.issue(request(), secret=SECRET, audience=AUD, lifetime=600)
    claims = jwt.decode(good, options={"verify_signature": False})
    bad = {
        "expired": lambda: tokens.issue(request(), secret=SECRET, audience=AUD, lifetime=-30),
        "other-secret": lambda: jwt.encode(claims, "o" * 64, algorithm="HS256"),
        "other-audience": lambda: tokens.issue(request(), secret=SECRET, audience="https://x", lifetime=600),
        "alg-none": lambda: jwt.encode(claims, None, algorithm="none"),
        "hs512": lambda: jwt.encode(claims, SECRET, algorithm="HS512"),
        "garbage": lambda: "a.b.c",
    }[case]()
    with pytest.raises(tokens.TokenInvalid):
        tokens.verify(bad, secret=SECRET, audience=AUD)
