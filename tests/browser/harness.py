"""Page runs in headless Chromium: launch, watch, record, and keep what a failure needs.

Playwright's own browser download cannot work on these machines, so Debian's Chromium is
launched through ``executable_path`` with the flags of ``shared/docs/browser-testing.md``.
Each run launches a fresh browser with a fresh profile, because the fake camera file is a
launch flag. A run records the console, every uploaded frame, the final URL and a final
screenshot; ``Run.save`` writes them out (the fixtures do it when a test fails).
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np
from playwright.sync_api import Page, Playwright, Request

from tests.browser import fakecam

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]
CAMERA_FLAGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
VIEWPORT = {"width": 430, "height": 900}  # a phone-sized window


@dataclass
class Upload:
    tag: str
    index: int
    image: np.ndarray

    @property
    def frame_number(self) -> int:
        return fakecam.frame_number(self.image)


@dataclass
class Run:
    """One page run: what the browser said, uploaded and ended on."""

    name: str
    console: list[str] = field(default_factory=list)
    uploads: list[Upload] = field(default_factory=list)
    status: int | None = None  # of the first page load
    final_url: str = ""
    screenshot: bytes = b""

    @property
    def outcome(self) -> dict[str, str]:
        """The query of the final URL (the return_url's parameters after the redirect)."""
        return {k: v[0] for k, v in parse_qs(urlsplit(self.final_url).query).items()}

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{self.name}-console.log").write_text("\n".join([*self.console, f"final url: {self.final_url}"]))
        if self.screenshot:
            (folder / f"{self.name}-screenshot.png").write_bytes(self.screenshot)
        for upload in self.uploads:
            name = f"{self.name}-upload{upload.index}-{upload.tag}-frame{upload.frame_number}.jpg"
            cv2.imwrite(str(folder / name), upload.image)


def _decode_upload(url: str, body: str | None) -> Upload | None:
    query = parse_qs(urlsplit(url).query)
    if body is None or "," not in body:
        return None
    image = cv2.imdecode(np.frombuffer(base64.b64decode(body.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    return Upload(query.get("tag", ["?"])[0], int(query.get("index", ["-1"])[0]), image)


class Browser:
    """Launches Chromium for one page run at a time and keeps every run (for the artifacts)."""

    def __init__(self, playwright: Playwright) -> None:
        self.playwright = playwright
        self.runs: list[Run] = []

    def run(self, name: str, url: str, until: Callable[[Page], None], *, camera: Path | None,
            fake_ui: bool = True) -> Run:
        """Open ``url`` with ``camera`` as the webcam (None: no file flag), call ``until(page)``."""
        args = [*FLAGS]
        if fake_ui:
            args.append(CAMERA_FLAGS[0])
        if camera is not None:
            args += [CAMERA_FLAGS[1], f"--use-file-for-fake-video-capture={camera}"]
        run = Run(name)
        self.runs.append(run)
        with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
            context = self.playwright.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=args, viewport=VIEWPORT,
            )
            try:
                page = context.pages[0] if context.pages else context.new_page()
                page.on("console", lambda message: run.console.append(f"{message.type}: {message.text}"))
                page.on("pageerror", lambda error: run.console.append(f"pageerror: {error}"))
                page.on("requestfailed", lambda r: run.console.append(f"requestfailed: {r.url} {r.failure}"))

                def record(request: Request) -> None:
                    if "/extension/upload" in request.url:
                        upload = _decode_upload(request.url, request.post_data)
                        if upload is not None:
                            run.uploads.append(upload)

                page.on("request", record)
                response = page.goto(url)
                run.status = response.status if response else None
                until(page)
            finally:
                run.final_url = page.url
                try:
                    run.screenshot = page.screenshot()
                except Exception as error:  # the page may be gone; the log still helps
                    run.console.append(f"(no screenshot: {error})")
                context.close()
        return run
