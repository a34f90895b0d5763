"""BioID's hosted capture page with a head-movement challenge, in headless Chromium, against the
real stack: people who follow its blue head, promptly or slowly, enroll, verify and pass
liveness detection; retries and a first photo taken before the face was in the picture work; a
flat photo moved the asked way is refused.

The page is a stand-in written from its documented behaviour (``bioidpage/``: its crop, motion
trigger, 1 s pause, tags, retries), served from its own origin as BioID's is, calling the
gateway cross-origin. Its camera is a video planned with the same logic replayed offline
(``tests.facegen.page``): the person reacts to the cues the page will show when it takes its
photos, so the video's head does what a person in front of the page does. The person presses
START for each try at a planned frame; the page reads the frame number from the video. Each
person makes as many tries as the token allows, as people do when the page says "Retrying":
a try of a slow follower is refused now and then (about 1 in 80 in ``make bench-liveness``),
and the page's next try must then succeed.
"""

from __future__ import annotations

import functools
import http.server
import json
import secrets
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Page

from bws.devrun import Stack
from tests.browser import fakecam
from tests.browser.harness import Browser, Run
from tests.facegen import page as bioid
from tests.facegen.render import face_engine
from tests.support.client import BwsClient, claims_of

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

PAGE_DIR = Path(__file__).resolve().parent / "bioidpage"
TAIL_S = 12.0  # the video holds the last pose this long after the last planned photo
RETURN_TIMEOUT_MS = 120_000


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # the test's output stays readable
        pass


@pytest.fixture(scope="module")
def page_origin() -> Iterator[str]:
    """The stand-in page on its own loopback origin (a secure context for the camera)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(PAGE_DIR)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _accept(image: np.ndarray) -> bool:
    detector, _ = face_engine()
    return bool(detector.detect(image, min_face_size=40))


@dataclass
class Session:
    token: str
    run: Run
    plan: list[bioid.Capture]
    result: dict[str, object] | None

    @property
    def outcome(self) -> dict[str, str]:
        return self.run.outcome

    def tags(self) -> list[str]:
        return [upload.tag for upload in self.run.uploads]


def run_page(browser: Browser, stack: Stack, client: BwsClient, page_origin: str, tmp_path: Path, name: str,
             token: str, person: bioid.Follower, tries: list[bioid.PlannedTry]) -> Session:
    """Plan the person's tries against the token's challenges, film them, and run the page."""
    challenges = json.loads(claims_of(token)["challenge"])
    plan = bioid.session(bioid.Page(), person, challenges, tries, accept=_accept)
    end = max((p.time for c in plan for p in c.photos), default=0.0) + TAIL_S
    starts, moment = [], 0.0
    for planned, capture in zip(tries, plan, strict=True):
        starts.append(round((moment + planned.after_s) * bioid.FPS))
        moment = capture.photos[-1].time if capture.photos else moment + planned.after_s + bioid.TRY_LIMIT_S
    video = tmp_path / f"{name}.y4m"  # ~0.46 MB a frame: deleted after the run
    fakecam.write_y4m(video, (fakecam.stamp(person.frame(k / bioid.FPS), k) for k in range(round(end * bioid.FPS))),
                      fps=bioid.FPS)
    query = urllib.parse.urlencode({
        "api": f"{stack.url}/extension/", "access_token": token, "return_url": f"{page_origin}/done.html",
        "state": name, "start_frames": ",".join(map(str, starts)),
    })

    def until_returned(page: Page) -> None:
        page.wait_for_url(lambda url: url.startswith(f"{page_origin}/done.html"), timeout=RETURN_TIMEOUT_MS)

    try:
        run = browser.run(name, f"{page_origin}/index.html?{query}", until_returned, camera=video)
    finally:
        video.unlink()
    reply = client.basic_call("GET", f"/extension/result?access_token={token}")
    return Session(token, run, plan, reply.json if reply.status == 200 else None)


def following(tries: int, first_after: float = 2.0) -> list[bioid.PlannedTry]:
    """A person who presses START after ``first_after`` s and follows every try."""
    return [bioid.PlannedTry(first_after), *[bioid.PlannedTry(5.0) for _ in range(tries - 1)]]


def tries_used(session: Session) -> int:
    return sum(line.startswith("log: bioid: start") for line in session.run.console)


def planned_turns(capture: bioid.Capture) -> list[float]:
    """The largest true turn (degrees, either axis) between consecutive planned photos."""
    poses = [p.pose for p in capture.photos]
    return [max(abs(b[0] - a[0]), abs(b[1] - a[1])) for a, b in zip(poses, poses[1:], strict=False)]


def person(name: str, speed: bioid.Speed, seed: int, **options: object) -> bioid.Follower:
    return bioid.Follower(bioid.framed_photo(name), speed, np.random.default_rng(seed), **options)  # type: ignore[arg-type]


@pytest.fixture
def bcid() -> str:
    return f"bws.1.{secrets.randbelow(10**9)}"


# -- people who follow the page ---------------------------------------------------------------


@pytest.mark.parametrize(("speed", "photo"), [("prompt", "astronaut"), ("slow", "grace_hopper")])
def test_a_person_who_follows_the_page_enrolls_and_then_verifies(
        speed: str, photo: str, stack: Stack, client: BwsClient, browser: Browser, page_origin: str,
        bcid: str, tmp_path: Path) -> None:
    token = client.token(bcid=bcid, task="enroll", challenge=True)
    enrolled = run_page(browser, stack, client, page_origin, tmp_path, f"enroll-{speed}", token,
                        person(photo, bioid.SPEEDS[speed], 31), following(3))
    planned = enrolled.plan[0]
    assert planned.ended == "complete", planned
    if speed == "slow":  # photographed mid-turn, as the page does with a slow follower
        assert max(planned_turns(planned)) < 9.0, planned_turns(planned)
    assert enrolled.outcome == {"access_token": token, "state": f"enroll-{speed}"}, enrolled.run.console
    assert enrolled.tags()[:4] == ["any", *json.loads(claims_of(token)["challenge"])[0]]
    assert enrolled.result == {"Action": "enrollment", "BCID": bcid.replace(".", "/"), "Success": True}
    if speed == "prompt":
        assert tries_used(enrolled) == 1

    # A slow follower's photos are taken mid-turn, and whether the page's capture ticks meet
    # the scripted movement where it expects depends on how loaded the machine is: now and then
    # (about 1 session in 4 on this 2-core machine while the server works) every try of a
    # session catches the previous turn still going, and is judged ChallengeResponseFailed.
    # Such a person presses the button again: a second session (a new token) must verify.
    sessions = 2 if speed == "slow" else 1
    for session in range(sessions):
        token = client.token(bcid=bcid, task="verify", challenge=True)
        verified = run_page(browser, stack, client, page_origin, tmp_path, f"verify-{speed}-{session}", token,
                            person(photo, bioid.SPEEDS[speed], 32 + session), following(3))
        if verified.outcome.get("error") != "ChallengeResponseFailed" or session == sessions - 1:
            break
    assert verified.outcome == {"access_token": token, "state": f"verify-{speed}-{session}"}, verified.run.console
    assert verified.result is not None and verified.result["Success"] is True, verified.result


@pytest.mark.parametrize("speed", ["prompt", "slow"])
def test_liveness_detection_with_a_challenge_passes_a_person_who_follows(
        speed: str, stack: Stack, client: BwsClient, browser: Browser, page_origin: str, tmp_path: Path) -> None:
    token = client.token(task="livenessdetection", challenge=True)
    session = run_page(browser, stack, client, page_origin, tmp_path, f"live-{speed}", token,
                       person("astronaut", bioid.SPEEDS[speed], 33), following(3))
    assert session.outcome == {"access_token": token, "state": f"live-{speed}"}, session.run.console
    assert session.result is not None and session.result["Success"] is True, session.result


# -- retries --------------------------------------------------------------------------------------


def test_a_retry_after_a_failed_try_succeeds(stack: Stack, client: BwsClient, browser: Browser, page_origin: str,
                                            bcid: str, tmp_path: Path) -> None:
    """Try 1 turns the other way (ChallengeResponseFailed); the retry's first photo carries try
    1's last direction as its tag, as the page never resets it; try 2 follows and enrolls."""
    token = client.token(bcid=bcid, task="enroll", challenge=True, maxtries=2)
    first, second = json.loads(claims_of(token)["challenge"])
    session = run_page(browser, stack, client, page_origin, tmp_path, "retry", token,
                       person("astronaut", bioid.PROMPT, 34),
                       [bioid.PlannedTry(2.0, contrary=True), bioid.PlannedTry(6.0)])
    assert session.tags() == ["any", *first, first[-1], *second]
    assert session.outcome == {"access_token": token, "state": "retry"}, session.run.console
    assert session.result is not None and session.result["Success"] is True, session.result


def test_start_before_the_face_is_in_the_picture_then_a_retry_succeeds(
        stack: Stack, client: BwsClient, browser: Browser, page_origin: str, bcid: str, tmp_path: Path) -> None:
    """The first photo shows an empty room (NoFaceFound): the page goes on to its second challenge
    without a server call, and the server judges its first try against that challenge."""
    token = client.token(bcid=bcid, task="enroll", challenge=True, maxtries=3)
    first, second, _ = json.loads(claims_of(token)["challenge"])
    session = run_page(browser, stack, client, page_origin, tmp_path, "early-start", token,
                       person("grace_hopper", bioid.PROMPT, 35, absent_until=3.0),
                       [bioid.PlannedTry(1.0), bioid.PlannedTry(4.0), bioid.PlannedTry(5.0)])
    assert session.plan[0].ended == "refused-first"
    assert session.tags()[:5] == ["any", first[0], *second]
    assert session.outcome == {"access_token": token, "state": "early-start"}, session.run.console
    assert session.result is not None and session.result["Success"] is True, session.result


# -- attacks ----------------------------------------------------------------------------------


def test_a_flat_photo_moved_the_asked_way_is_refused_on_every_try(
        stack: Stack, client: BwsClient, browser: Browser, page_origin: str, bcid: str, tmp_path: Path) -> None:
    token = client.token(bcid=bcid, task="enroll", challenge=True, maxtries=2)
    session = run_page(browser, stack, client, page_origin, tmp_path, "flat-photo", token,
                       person("astronaut", bioid.PROMPT, 36, flat=True),
                       [bioid.PlannedTry(2.0), bioid.PlannedTry(6.0)])
    assert [c.ended for c in session.plan] == ["complete", "complete"]
    assert session.outcome == {"access_token": token, "state": "flat-photo", "error": "LiveDetectionFailed"}, \
        session.run.console
    assert session.result == {"Action": "enrollment", "BCID": bcid.replace(".", "/"), "Success": False,
                              "Error": "LiveDetectionFailed"}
