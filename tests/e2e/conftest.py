"""End-to-end fixtures: the real stack (SeaweedFS, both gRPC services, gateway) on loopback."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bws.devrun import Stack
from bws.settings import StorageSettings
from bws.storage import ObjectStore
from tests.support.bws3 import Bws3Client
from tests.support.client import BwsClient

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


# A second app that may only use partition 5 of the storage "bws".
LIMITED_APP = {"id": "limited-app", "secret": "limited-app-secret-0123", "storage": "bws", "partitions": [5]}
# A BWS 3 client in the middle of a key rotation: both keys sign valid JWTs.
BWS3_ROTATING_KEYS = (secrets.token_bytes(32), secrets.token_bytes(64))
BWS3_ROTATING_APP = {"id": "rotating-app", "secret": "rotating-app-secret-0123", "storage": "bws", "partitions": [7],
                     "bws3": {"keys": [base64.b64encode(k).decode() for k in BWS3_ROTATING_KEYS], "partition": 7}}


def start_stack(name: str, **extra_env: str) -> Stack:
    workdir = ARTIFACTS / f"{name}-{secrets.token_hex(3)}"
    return Stack(workdir=workdir, app_id="test-app", app_secret=secrets.token_urlsafe(18),
                 extra_env=extra_env, extra_apps=[LIMITED_APP, BWS3_ROTATING_APP]).start()


def dump_logs(stack: Stack, lines: int = 40) -> None:
    for log in sorted(stack.workdir.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print(f"\n==== {log} (last {len(tail)} lines)\n" + "\n".join(tail))


@contextmanager
def running_stack(name: str, request: pytest.FixtureRequest, **extra_env: str) -> Iterator[Stack]:
    """A stack for a fixture: stopped at the end, its logs printed when a test failed."""
    running = start_stack(name, **extra_env)
    try:
        yield running
    finally:
        running.stop()
        if request.session.testsfailed:
            dump_logs(running)


def client_of(stack: Stack) -> BwsClient:
    """A client with the stack's own app's credentials."""
    return BwsClient(stack.url, stack.app_id, stack.app_secret)


def bws3_of(stack: Stack) -> Bws3Client:
    """A BWS 3 client: the stack's own app, signing with its key (class ids in bws/1)."""
    return Bws3Client(stack.url, f"127.0.0.1:{stack.grpc_port}", stack.app_id, stack.client_key)


def store_of(stack: Stack) -> ObjectStore:
    """Direct access to a stack's bucket, to check what the service left in it."""
    return ObjectStore(StorageSettings(endpoint=stack.s3_endpoint, access_key=stack.secrets.s3_access_key,
                                       secret_key=stack.secrets.s3_secret_key, bucket="bws-data"))


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    # Room for the tests that send several calls at once on purpose (tries, concurrency);
    # admission itself is tested on its own stack (test_overload.py).
    with running_stack("e2e", request, BWS_MAX_CONCURRENT_CALLS="8", BWS_MAX_CONCURRENT_UPLOADS="8") as running:
        yield running


@pytest.fixture(scope="session")
def client(stack: Stack) -> BwsClient:
    return client_of(stack)


@pytest.fixture(scope="session")
def store(stack: Stack) -> ObjectStore:
    return store_of(stack)


@pytest.fixture(scope="session")
def limited_client(stack: Stack) -> BwsClient:
    return BwsClient(stack.url, str(LIMITED_APP["id"]), str(LIMITED_APP["secret"]))


@pytest.fixture
def bcid() -> str:
    """A fresh class id per test, so tests never share a template."""
    return f"bws.1.{secrets.randbelow(10**9)}"
