"""Browser fixtures: Debian's Chromium (installed with apt when missing: CI starts from a bare
machine, as root), Playwright, the real stack. On a failed test, every page run of that test
leaves its final screenshot, its console log and the frames it uploaded in
``test-artifacts/browser/<test name>/``; the stack's logs are in ``test-artifacts/browser-stack-*/``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Playwright, sync_playwright

from bws.devrun import Stack
from tests.browser.harness import ARTIFACTS, CHROMIUM, REPO, Browser
from tests.support.client import BwsClient

FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    report = yield
    item.stash.setdefault(FAILED, False)
    if report.failed:
        item.stash[FAILED] = True
    return report


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium, installed with apt when missing (CI runs on a bare machine as root)."""
    if not Path(CHROMIUM).exists():
        if shutil.which("apt-get") is None or os.geteuid() != 0:
            pytest.fail(f"{CHROMIUM} is missing; install Debian's chromium (apt-get install chromium) as root")
        subprocess.run("apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium",
                       shell=True, check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return CHROMIUM


@pytest.fixture(scope="module")
def playwright(chromium: str) -> Iterator[Playwright]:
    """Per module: Playwright's sync API runs its own event loop, which must be gone before any
    asyncio test of another directory runs."""
    with sync_playwright() as running:
        yield running


# A second app, whose capture pages may only return to its own site.
OTHER_APP = {"id": "other-app", "secret": "other-app-secret-0123", "storage": "bws", "partitions": "*",
             "allowed_origins": ["https://app.example"]}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """The real stack (per module, so it is gone before other directories' tests); its app may
    return to the stack's own URL (the dev return page)."""
    running = Stack(workdir=REPO / "test-artifacts" / f"browser-stack-{secrets.token_hex(3)}",
                    app_id="browser-app", app_secret=secrets.token_urlsafe(18), extra_apps=[OTHER_APP]).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(stack: Stack) -> BwsClient:
    return BwsClient(stack.url, stack.app_id, stack.app_secret)


@pytest.fixture(scope="module")
def other_client(stack: Stack) -> BwsClient:
    return BwsClient(stack.url, str(OTHER_APP["id"]), str(OTHER_APP["secret"]))


@pytest.fixture(scope="module")
def module_browser(playwright: Playwright) -> Browser:
    """For module fixtures that run a page (their runs are saved with the tests that use them)."""
    return Browser(playwright)


@pytest.fixture
def browser(playwright: Playwright, request: pytest.FixtureRequest) -> Iterator[Browser]:
    """A browser for one test; on failure its runs are saved to test-artifacts/browser/."""
    used = Browser(playwright)
    yield used
    if request.node.stash.get(FAILED, False):
        name = re.sub(r"[^\w.-]+", "_", request.node.name)
        for run in used.runs:
            run.save(ARTIFACTS / name)


@pytest.fixture
def bcid() -> str:
    return f"bws.1.{secrets.randbelow(10**9)}"
