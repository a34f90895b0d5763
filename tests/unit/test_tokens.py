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
    first, second = claims.challenge[:2]
    assert claims.challenge_for_try([], ["any", *first]) == first
    assert claims.challenge_for_try([["any", *first]], ["left", *second]) == second


AXIS = {"left": 0, "right": 0, "up": 1, "down": 1}


@pytest.mark.parametrize("count", [2, 3, 4, 5, 7])
def test_challenges_follow_the_pattern_of_bioids_page(count: int) -> None:
    """A, opposite(A), B on the other axis, opposite(B), ...: never A, opposite(A), A, which the
    page cannot show (its blue head would not move)."""
    seen = set()
    for _ in range(400):
        sequence = tokens.challenge_sequence(count)
        assert len(sequence) == count
        for k in range(0, count, 2):
            if k + 1 < count:
                assert sequence[k + 1] == tokens.OPPOSITE[sequence[k]], sequence
            if k >= 2:
                assert AXIS[sequence[k]] != AXIS[sequence[k - 2]], sequence
        seen.add(tuple(sequence[:3]))
    assert len(seen) == (4 if count == 2 else 8)  # 4 first directions × 2 on the other axis


SEQUENCES = (("left", "right", "up"), ("down", "up", "left"), ("left", "right", "down"), ("left", "right", "up"))


@pytest.mark.parametrize(("tries", "expected"), [
    # the reference's tag does not matter: a retry's first photo carries the last direction
    ([["any", "left", "right", "up"], ["up", "down", "up", "left"]], [0, 1]),
    # a refused first photo moved the page on to the second sequence without a server call
    ([["any", "down", "up", "left"]], [1]),
    # then its try 1 is judged against the first unused sequence the tags follow
    ([["any", "down", "up", "left"], ["left", "left", "right", "up"]], [1, 0]),
    # never a used one: the same directions again go to the next identical sequence
    ([["any", "left", "right", "up"], ["up", "left", "right", "up"], ["up", "left", "right", "up"]], [0, 3, None]),
    # a try cut short after a refused later photo uses up the sequence it started
    ([["any", "left"], ["right", "left", "right", "down"]], [0, 2]),
    # tags that follow no sequence use none
    ([["any", "up", "up", "up"], ["any", "left", "right", "up"]], [None, 0]),
    ([["any"]], [0]),
])
def test_each_try_is_judged_against_the_unused_sequence_its_tags_follow(
        tries: list[list[str]], expected: list[int | None]) -> None:
    assert tokens.assign_challenges(SEQUENCES, tries) == expected


def test_a_try_whose_tags_follow_no_unused_sequence_is_judged_against_an_unused_one() -> None:
    token = tokens.verify(tokens.issue(request(challenge=True, maxtries=3), secret=SECRET, audience=AUD,
                                       lifetime=600), secret=SECRET, audience=AUD)
    first = token.challenge[0]
    wrong = ["any", *[tokens.OPPOSITE[d] for d in first]]  # never the pattern's start: A then A's opposite
    judged = token.challenge_for_try([["any", *first]], wrong)
    assert judged in token.challenge[1:] and judged[1:] != tuple(wrong[1:])
    assert tokens.verify(tokens.issue(request(), secret=SECRET, audience=AUD, lifetime=600), secret=SECRET,
                         audience=AUD).challenge_for_try([], ["any", "left"]) == ()


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


@pytest.mark.parametrize("text", [
    "bws.1." + "9" * 5000,  # more digits than Python converts: once a 500
    "bws.9223372036854775808.1",  # partition above 2^63 - 1
    "bws.1.9223372036854775808",  # class id above 2^63 - 1 (BWS 3 class ids are int64)
    "s" * 65 + ".1.2",  # a storage name too long for a tidy object key
    "bwś.1.2",  # storage names are ASCII
])
def test_bcid_refuses_values_out_of_bounds(text: str) -> None:
    assert tokens.Bcid.parse(text) is None


def test_bcid_takes_the_largest_int64() -> None:
    bcid = tokens.Bcid.parse(f"{'s' * 64}.9223372036854775807.9223372036854775807")
    assert bcid is not None and bcid.partition == bcid.class_id == 2**63 - 1
