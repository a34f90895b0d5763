"""The hosted capture page (/uui) in headless Chromium, against the real stack.

Each run issues the token first, reads the challenge of its first try, writes a fake-camera
video of a synthetic head following (or defying) those directions, and only then launches
Chromium with that video as the webcam. The page must capture, upload, run the task and come
back to the return URL (the dev return page ``/uui/done``) with the right outcome.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page

from bws.devrun import Stack
from tests.browser import fakecam
from tests.browser.harness import ARTIFACTS, Browser, Run
from tests.support.client import BwsClient, claims_of

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]  # the first test may install Chromium

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
SCREENSHOT = Path(__file__).resolve().parent / "screenshots" / "capture-page.png"
RETURN_TIMEOUT_MS = 90_000


def capture_url(stack: Stack, token: str, state: str, return_url: str | None = None) -> str:
    query = {"access_token": token, "return_url": return_url or f"{stack.url}/uui/done", "state": state}
    return f"{stack.url}/uui?{urllib.parse.urlencode(query)}"


def challenges(token: str) -> list[list[str]]:
    return json.loads(claims_of(token)["challenge"])


def first_challenge(token: str) -> list[str]:
    return challenges(token)[0]


def until_returned(stack: Stack, screenshot: Path | None = None) -> Callable[[Page], None]:
    """Wait for the redirect to the return page; optionally screenshot the first arrow on the way."""
    def wait(page: Page) -> None:
        if screenshot is not None:
            page.wait_for_selector('body[data-phase="capturing"][data-step="1"] #arrow:not([hidden])',
                                   timeout=RETURN_TIMEOUT_MS)
            page.wait_for_timeout(400)
            save_screenshot(page.screenshot(), screenshot)
        page.wait_for_url(lambda url: url.startswith(f"{stack.url}/uui/done?"), timeout=RETURN_TIMEOUT_MS)
        page.wait_for_selector("body[data-outcome]")
    return wait


def save_screenshot(png: bytes, path: Path) -> None:
    """The picture of the page in docs/api.md (256 colours, ~130 KB): kept in test-artifacts always, in
    the tree when missing or with BWS_UPDATE_SCREENSHOTS=1, so a test run leaves the tree clean."""
    small = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256).save(small, "PNG", optimize=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / path.name).write_bytes(small.getvalue())
    if not path.exists() or os.environ.get("BWS_UPDATE_SCREENSHOTS") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(small.getvalue())


def assert_frames_follow(run: Run, video: fakecam.Video, tags: list[list[str]]) -> None:
    """The page uploaded one frame per step of each try, tagged ``tags[try]``, each taken from the
    video while the head showed that step's pose (of that try)."""
    expected = [(number, step, tag) for number, try_tags in enumerate(tags) for step, tag in enumerate(try_tags)]
    assert [u.tag for u in run.uploads] == [tag for _, _, tag in expected], run.console
    assert [u.index for u in run.uploads] == sorted({u.index for u in run.uploads})
    poses = [video.pose_of(u.frame_number) for u in run.uploads]
    assert all(number == seen and abs(pose - step) <= 0.25
               for (number, step, _), (seen, pose) in zip(expected, poses, strict=True)), poses


@dataclass
class Enrollment:
    bcid: str
    token: str
    video: fakecam.Video
    run: Run
    error: str | None


@pytest.fixture(scope="module")
def enrollment(stack: Stack, client: BwsClient, module_browser: Browser,
               tmp_path_factory: pytest.TempPathFactory) -> Enrollment:
    """One enrollment through the page (liveness + challenge), shared by the tests that need it."""
    bcid = f"bws.1.{secrets.randbelow(10**9)}"
    token = client.token(bcid=bcid, task="enroll", challenge=True)
    video = fakecam.head_video(tmp_path_factory.mktemp("enroll") / "camera.y4m", first_challenge(token))
    error = None
    try:
        run = module_browser.run("enrollment", capture_url(stack, token, "enroll-1"),
                                  until_returned(stack, screenshot=SCREENSHOT), camera=video.path)
    except PlaywrightError as failed:
        run, error = module_browser.runs[-1], str(failed)
    return Enrollment(bcid, token, video, run, error)


# -- whole flows ------------------------------------------------------------------------------


def test_enrollment_with_liveness_and_challenge_returns_without_error(
        enrollment: Enrollment, client: BwsClient, browser: Browser) -> None:
    browser.runs.append(enrollment.run)  # its artifacts, should this test fail
    assert enrollment.error is None, enrollment.error
    outcome = enrollment.run.outcome
    assert outcome == {"access_token": enrollment.token, "state": "enroll-1"}, outcome
    assert_frames_follow(enrollment.run, enrollment.video, [["any", *enrollment.video.directions]])
    result = client.basic_call("GET", f"/extension/result?access_token={enrollment.token}").json
    assert result == {"Action": "enrollment", "BCID": enrollment.bcid.replace(".", "/"), "Success": True}


def test_verification_of_the_enrolled_person_succeeds(
        enrollment: Enrollment, stack: Stack, client: BwsClient, browser: Browser, tmp_path: Path) -> None:
    assert enrollment.error is None and "error" not in enrollment.run.outcome, "the enrollment failed"
    token = client.token(bcid=enrollment.bcid, task="verify", challenge=True)
    video = fakecam.head_video(tmp_path / "camera.y4m", first_challenge(token), seed=1)
    run = browser.run("verification", capture_url(stack, token, "verify-1"), until_returned(stack),
                      camera=video.path)
    assert run.outcome == {"access_token": token, "state": "verify-1"}, run.outcome
    assert_frames_follow(run, video, [["any", *video.directions]])
    result = client.basic_call("GET", f"/extension/result?access_token={token}").json
    assert result["Action"] == "verification" and result["Success"] is True, result


def test_turning_the_wrong_way_ends_with_challenge_response_failed(
        stack: Stack, client: BwsClient, browser: Browser, bcid: str, tmp_path: Path) -> None:
    token = client.token(bcid=bcid, task="enroll", challenge=True, maxtries=1)
    directions = first_challenge(token)
    video = fakecam.head_video(tmp_path / "camera.y4m", [OPPOSITE[d] for d in directions], seed=2)
    run = browser.run("wrong-way", capture_url(stack, token, "wrong-1"), until_returned(stack), camera=video.path)
    assert run.outcome == {"access_token": token, "state": "wrong-1", "error": "ChallengeResponseFailed"}
    assert [u.tag for u in run.uploads] == ["any", *directions]


def test_a_failed_try_is_retried_with_the_next_challenge(
        stack: Stack, client: BwsClient, browser: Browser, bcid: str, tmp_path: Path) -> None:
    """Try 1 turns the wrong way (ChallengeResponseFailed); the page shows why, captures anew
    for try 2 with that try's own directions, and that try enrolls."""
    token = client.token(bcid=bcid, task="enroll", challenge=True, maxtries=2)
    first, second = challenges(token)
    video = fakecam.head_video(tmp_path / "camera.y4m", [OPPOSITE[d] for d in first], second, seed=3)
    messages: list[str] = []

    def until(page: Page) -> None:
        page.wait_for_selector('body[data-phase="retrying"]', timeout=RETURN_TIMEOUT_MS)
        messages.append(page.locator("#problem").inner_text())
        until_returned(stack)(page)

    run = browser.run("retry", capture_url(stack, token, "retry-1"), until, camera=video.path)
    assert "did not follow the arrows" in messages[0]
    assert run.outcome == {"access_token": token, "state": "retry-1"}, run.outcome
    assert_frames_follow(run, video, [["any", *first], ["any", *second]])
    assert client.basic_call("GET", f"/extension/result?access_token={token}").json["Success"] is True


def test_liveness_without_a_challenge_takes_two_frames_with_a_small_movement(
        stack: Stack, client: BwsClient, browser: Browser, tmp_path: Path) -> None:
    token = client.token(task="livenessdetection")  # liveness on by default, no challenge, no BCID
    video = fakecam.head_video(tmp_path / "camera.y4m", ["right"], seed=4)
    run = browser.run("liveness", capture_url(stack, token, "live-1"), until_returned(stack), camera=video.path)
    assert run.outcome == {"access_token": token, "state": "live-1"}, run.outcome
    assert_frames_follow(run, video, [["any", "any"]])


# -- no camera ------------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "message"), [
    ("missing-file", "No camera was found"),
    ("no-permission", "You have not allowed this page to use your camera"),
])
def test_without_a_camera_the_page_says_so_and_cancel_returns_user_abort(
        case: str, message: str, stack: Stack, client: BwsClient, browser: Browser, bcid: str,
        tmp_path: Path) -> None:
    token = client.token(bcid=bcid, task="enroll", challenge=True)
    seen: dict[str, str] = {}

    def until(page: Page) -> None:
        page.wait_for_selector('body[data-phase="camera-error"]', timeout=30_000)
        seen["problem"] = page.locator("#problem").inner_text()
        seen["url"] = page.url
        assert page.locator("#retry").is_visible()
        page.locator("#cancel").click()
        page.wait_for_url(lambda url: url.startswith(f"{stack.url}/uui/done?"), timeout=10_000)

    if case == "missing-file":
        run = browser.run(case, capture_url(stack, token, "cam"), until, camera=tmp_path / "missing.y4m")
    else:  # a camera, but nobody grants the permission (headless denies the prompt)
        video = fakecam.head_video(tmp_path / "camera.y4m", ["left"])
        run = browser.run(case, capture_url(stack, token, "cam"), until, camera=video.path, fake_ui=False)
    assert message in seen["problem"], seen
    assert seen["url"].startswith(f"{stack.url}/uui?")
    assert run.outcome == {"access_token": token, "state": "cam", "error": "user_abort"}
    assert run.uploads == []


# -- the return URL and the page's headers ------------------------------------------------------


def test_a_return_url_on_a_foreign_origin_is_refused_without_redirect(
        stack: Stack, client: BwsClient, browser: Browser, bcid: str) -> None:
    token = client.token(bcid=bcid, task="enroll")
    url = capture_url(stack, token, "evil", return_url="https://evil.example/back")
    seen: dict[str, str] = {}

    def until(page: Page) -> None:
        page.wait_for_timeout(1500)
        seen["text"] = page.locator("body").inner_text()

    run = browser.run("foreign-origin", url, until, camera=None)
    assert run.status == 400
    assert run.final_url == url
    assert "not one of the app's allowed origins" in seen["text"]


@pytest.mark.parametrize("return_url", [
    "https://evil.example/back",
    "{base}.evil.example/back",  # same prefix, other host
    "http://evil.example\\@{host}/back",  # a browser reads the backslash as a slash
    "http://user@{host}/uui/done",
    "javascript:alert(1)//{host}",
    "//evil.example/back",
    "/uui/done",  # relative: not an origin
    "http://{host_only}:1/uui/done",  # another port
    "",
])
def test_the_server_refuses_return_urls_outside_the_apps_origins(
        stack: Stack, client: BwsClient, bcid: str, return_url: str) -> None:
    parts = urllib.parse.urlsplit(stack.url)
    return_url = return_url.format(base=stack.url, host=parts.netloc, host_only=parts.hostname)
    token = client.token(bcid=bcid, task="enroll")
    query = urllib.parse.urlencode({"access_token": token, "return_url": return_url, "state": "s"})
    reply = client.request("GET", f"/uui?{query}")
    assert reply.status == 400, return_url
    assert reply.headers["Content-Type"].startswith("text/html")
    assert "return" in reply.text and "<script" not in reply.text


@pytest.mark.parametrize("return_url", ["{base}/uui/done?x=1#part", "HTTP://{host}/elsewhere", "{base}"])
def test_return_urls_on_the_apps_origin_are_accepted(stack: Stack, client: BwsClient, bcid: str,
                                                     return_url: str) -> None:
    return_url = return_url.format(base=stack.url, host=urllib.parse.urlsplit(stack.url).netloc)
    query = urllib.parse.urlencode({"access_token": client.token(bcid=bcid, task="enroll"), "return_url": return_url})
    reply = client.request("GET", f"/uui?{query}")
    assert reply.status == 200 and 'src="uui/static/capture.js"' in reply.text


def test_the_return_url_must_be_an_origin_of_the_tokens_own_app(
        stack: Stack, other_client: BwsClient, bcid: str) -> None:
    token = other_client.token(bcid=bcid, task="enroll")
    for return_url, status in ((f"{stack.url}/uui/done", 400), ("https://app.example/back?x=1", 200)):
        query = urllib.parse.urlencode({"access_token": token, "return_url": return_url})
        assert other_client.request("GET", f"/uui?{query}").status == status, return_url


def test_an_invalid_or_forged_token_is_refused(stack: Stack, client: BwsClient, bcid: str) -> None:
    token = client.token(bcid=bcid, task="enroll")
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for bad in ("", "not-a-token", forged):
        query = urllib.parse.urlencode({"access_token": bad, "return_url": f"{stack.url}/uui/done"})
        reply = client.request("GET", f"/uui?{query}")
        assert reply.status == 400 and "invalid or has expired" in reply.text


@pytest.mark.parametrize("path", ["/uui?{query}", "/uui/done?state=x", "/uui/static/capture.js",
                                  "/uui/static/capture.css"])
def test_the_page_and_its_assets_have_a_strict_policy(stack: Stack, client: BwsClient, bcid: str,
                                                      path: str) -> None:
    token = client.token(bcid=bcid, task="enroll")
    query = urllib.parse.urlencode({"access_token": token, "return_url": f"{stack.url}/uui/done?x=1"})
    reply = client.request("GET", path.format(query=query))
    assert reply.status == 200
    policy = reply.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self';" in policy and "unsafe" not in policy
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert reply.headers["Referrer-Policy"] == "no-referrer"
    if path.endswith(".js"):
        assert reply.headers["Content-Type"].startswith(("application/javascript", "text/javascript"))
