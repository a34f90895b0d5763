"""Slow and stalled clients over real processes: they hold a connection for a bounded time, never
the places other clients' work needs, and never the whole server.

Runs its own stack with short timeouts and a small connection cap.
"""

from __future__ import annotations

import socket
import time
import urllib.parse
from collections.abc import Iterator

import pytest

from bws.devrun import Stack
from bws.images import to_data_url
from tests.e2e.conftest import client_of, running_stack
from tests.support import images
from tests.support.client import BwsClient

pytestmark = pytest.mark.e2e

KEEPALIVE_S, BODY_TIMEOUT_S, MAX_CONNECTIONS = 2, 3, 40


@pytest.fixture(scope="module")
def own_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    with running_stack("slow-clients", request, BWS_KEEPALIVE_SECONDS=str(KEEPALIVE_S),
                       BWS_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT_S), BWS_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
                       BWS_MAX_CONCURRENT_UPLOADS="2") as running:
        yield running


@pytest.fixture(scope="module")
def client(own_stack: Stack) -> BwsClient:
    return client_of(own_stack)


def address(stack: Stack) -> tuple[str, int]:
    host, port = urllib.parse.urlsplit(stack.url).netloc.split(":")
    return host, int(port)


def read_reply(connection: socket.socket, timeout: float) -> bytes:
    """What the server sends until it closes the connection (or ``timeout`` passes)."""
    connection.settimeout(timeout)
    received = b""
    try:
        while chunk := connection.recv(65536):
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return received


def test_stalled_uploads_hold_no_admission_place_and_get_408(own_stack: Stack, client: BwsClient) -> None:
    """Two uploads send their headers and half their body, then nothing: as many as there are
    upload places. Another client's uploads go through meanwhile; the stalled ones get 408."""
    token = client.token(bcid="bws.1.7101", task="enroll", livedetection=False)
    body = to_data_url(images.encode(images.astronaut())).encode()
    stalled = []
    for index in range(2):
        connection = socket.create_connection(address(own_stack), timeout=10)
        connection.sendall(f"POST /extension/upload?tag=any&index={index} HTTP/1.1\r\nHost: x\r\n"
                           f"Authorization: Bearer {token}\r\nContent-Type: text/plain\r\n"
                           f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:len(body) // 2])
        stalled.append(connection)
    time.sleep(0.5)
    other = client.token(bcid="bws.1.7102", task="enroll", livedetection=False)
    for index in range(3):
        reply = client.upload(other, images.encode(images.astronaut()), index=index)
        assert reply.status == 200 and reply.json["Accepted"], reply.body
    for connection in stalled:
        with connection:
            reply = read_reply(connection, BODY_TIMEOUT_S + 10)
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]


def test_slow_headers_are_cut_off_and_connections_are_capped(own_stack: Stack, client: BwsClient) -> None:
    """More connections than the cap, each sending a few bytes of headers and then nothing: those
    beyond the cap are told 503 at once, the others are closed after the keep-alive time, and the
    gateway answers again, with a few summary lines in its log instead of one per connection."""
    slow = []
    for _ in range(MAX_CONNECTIONS + 20):
        connection = socket.create_connection(address(own_stack), timeout=10)
        connection.sendall(b"GET /livez HTTP/1.1\r\nHo")
        slow.append(connection)
    time.sleep(0.3)
    refused = [c for c in slow if read_reply(c, 0.2).startswith(b"HTTP/1.1 503")]
    assert len(refused) >= 20, len(refused)
    began = time.monotonic()
    for connection in slow:
        with connection:
            assert read_reply(connection, KEEPALIVE_S + 10) in (b"", ) or connection in refused
    assert time.monotonic() - began < KEEPALIVE_S + 10
    assert client.request("GET", "/livez").status == 200
    log = own_stack.log_path("gateway").read_text()
    assert 1 <= log.count("connections refused") <= 3, log.count("connections refused")
