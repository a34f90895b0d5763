"""Challenges over the real processes, sent the way BioID's hosted capture page sends them.

The page (``shared/docs/bioid-capture-page.md``) never resets its tag between tries, so a
retry's first photo carries the last direction of the try before; when a try's first photo is
refused it moves on to its next challenge without calling the server; and it can only show
challenges of the pattern ``A, opposite(A), B on the other axis, ...``. The uploads below are
what the page sends in each case: raw data URLs with its tags, then the task with the token.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests import facegen
from tests.e2e.test_enroll import OPPOSITE, frames_png
from tests.support import images
from tests.support.client import BwsClient, claims_of

pytestmark = pytest.mark.e2e

AXIS = {"left": 0, "right": 0, "up": 1, "down": 1}


def challenges(token: str) -> list[list[str]]:
    return json.loads(claims_of(token)["challenge"])


def followed(directions: list[str], seed: int) -> list[bytes]:
    """A head turning through ``directions`` (the reference photo first)."""
    return frames_png(facegen.live_sequence(facegen.source_photo("astronaut"), directions,
                                            rng=np.random.default_rng(seed)))


def upload_try(client: BwsClient, token: str, frames: list[bytes], tags: list[str], first_index: int) -> None:
    for offset, (frame, tag) in enumerate(zip(frames, tags, strict=True)):
        reply = client.upload(token, frame, tag=tag, index=first_index + offset,
                              as_type="application/x-www-form-urlencoded; charset=UTF-8")
        assert reply.status == 200 and reply.json["Accepted"], reply.body


def test_issued_challenges_are_ones_the_page_can_show(client: BwsClient, bcid: str) -> None:
    token = client.token(bcid=bcid, task="enroll", challenge=True, challenges=5, maxtries=4)
    for sequence in challenges(token):
        assert sequence[1] == OPPOSITE[sequence[0]] and sequence[3] == OPPOSITE[sequence[2]], sequence
        assert AXIS[sequence[2]] != AXIS[sequence[0]] and AXIS[sequence[4]] != AXIS[sequence[2]], sequence


def test_a_retry_whose_first_photo_carries_the_last_direction_succeeds(client: BwsClient, bcid: str) -> None:
    token = client.token(bcid=bcid, task="enroll", challenge=True, maxtries=2)
    first, second = challenges(token)
    upload_try(client, token, followed([OPPOSITE[d] for d in first], 21), ["any", *first], 1)
    assert client.enroll(token).json == {"Success": False, "Error": "ChallengeResponseFailed"}
    upload_try(client, token, followed(second, 22), [first[-1], *second], 1)  # the page's index restarts too
    assert client.enroll(token).json == {"Success": True}


def test_after_a_refused_first_photo_the_next_challenge_is_judged(client: BwsClient, bcid: str) -> None:
    """Pressing START before the face is in the picture: the page's first photo is refused, it
    goes on to its second challenge, and the server's first try must be judged against that."""
    token = client.token(bcid=bcid, task="enroll", challenge=True, maxtries=3)
    first, second, _ = challenges(token)
    refused = client.upload(token, images.encode(images.cat()), tag="any", index=1)
    assert refused.json == {"Accepted": False, "Error": "NoFaceFound"}
    upload_try(client, token, followed(second, 23), [first[0], *second], 1)
    assert client.enroll(token).json == {"Success": True}


def test_a_used_challenge_is_not_judged_again(client: BwsClient, bcid: str) -> None:
    """Try 2 shows try 1's challenge, followed: it was used, so the try fails (tries stay exact)."""
    while True:
        token = client.token(bcid=bcid, task="enroll", challenge=True, maxtries=2)
        first, second = challenges(token)
        if first != second:
            break
    upload_try(client, token, followed([OPPOSITE[d] for d in first], 24), ["any", *first], 1)
    assert client.enroll(token).json == {"Success": False, "Error": "ChallengeResponseFailed"}
    upload_try(client, token, followed(first, 25), [first[-1], *first], 1)
    assert client.enroll(token).json == {"Success": False, "Error": "ChallengeResponseFailed"}
    upload_try(client, token, followed(second, 26), [first[-1], *second], 1)
    reply = client.enroll(token)
    assert reply.status == 403 and "exceeded" in reply.json["Message"]


def test_a_try_cut_short_by_a_refused_photo_fails_and_the_next_one_succeeds(client: BwsClient, bcid: str) -> None:
    """A refused later photo makes the page call the task with what it has: that try fails its
    challenge and uses it up; the retry shows the next one."""
    token = client.token(bcid=bcid, task="enroll", challenge=True, maxtries=2)
    first, second = challenges(token)
    frames = followed(first, 27)
    upload_try(client, token, frames[:2], ["any", first[0]], 1)
    assert client.upload(token, images.encode(images.cat()), tag=first[1], index=3).json["Accepted"] is False
    assert client.enroll(token).json == {"Success": False, "Error": "ChallengeResponseFailed"}
    upload_try(client, token, followed(second, 28), [first[2], *second], 1)  # the tag moved on
    assert client.enroll(token).json == {"Success": True}
