"""The integration suite's S3 server: MinIO in a container when a Docker engine answers,
otherwise SeaweedFS on free loopback ports. The suite never skips as a whole: when neither can
be started, the fixture fails.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bws.devrun import Stack
from bws.settings import StorageSettings
from bws.storage import ObjectStore

log = logging.getLogger(__name__)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass(frozen=True)
class S3Server:
    kind: str  # "minio" or "seaweedfs"
    endpoint: str
    access_key: str
    secret_key: str

    def store(self, bucket: str) -> ObjectStore:
        return ObjectStore(StorageSettings(endpoint=self.endpoint, access_key=self.access_key,
                                           secret_key=self.secret_key, bucket=bucket))


def docker_answers() -> bool:
    """Whether a Docker engine answers its ping (at DOCKER_HOST or the default socket)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            connection = socket.socket(socket.AF_UNIX)
            target: object = host.removeprefix("unix://")
        else:
            name, _, port = host.split("://", 1)[-1].rpartition(":")
            connection = socket.socket(socket.AF_INET)
            target = (name, int(port))
        with connection:
            connection.settimeout(3)
            connection.connect(target)
            connection.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            status_line = connection.recv(1024).split(b"\r\n", 1)[0]
    except (OSError, ValueError) as error:
        log.info("no Docker engine at %s (%s): using SeaweedFS", host, error)
        return False
    return status_line.startswith(b"HTTP/1.") and b" 200" in status_line


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    access_key, secret_key = "it" + secrets.token_hex(6), secrets.token_urlsafe(24)
    if docker_answers():
        from testcontainers.minio import MinioContainer

        with MinioContainer(access_key=access_key, secret_key=secret_key) as minio:
            config = minio.get_config()
            yield S3Server("minio", config["endpoint"], access_key, secret_key)
        return
    storage = Stack(workdir=ARTIFACTS / f"integration-s3-{secrets.token_hex(3)}", app_id="it",
                    app_secret=secrets.token_urlsafe(18))
    storage.secrets.s3_access_key, storage.secrets.s3_secret_key = access_key, secret_key
    storage.start_storage()
    try:
        yield S3Server("seaweedfs", storage.s3_endpoint, access_key, secret_key)
    finally:
        storage.stop()


@pytest.fixture
def store(s3_server: S3Server) -> ObjectStore:
    """A fresh bucket per test."""
    made = s3_server.store("it-" + secrets.token_hex(6))
    made.ensure_bucket()
    return made
