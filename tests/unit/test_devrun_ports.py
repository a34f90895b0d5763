"""The ports a test or dev stack listens on cannot be taken by the stack's own connections."""

import socket

from bws.devrun import _ephemeral_range, free_port


def test_free_ports_are_distinct_and_outside_the_range_connections_take_source_ports_from() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    ephemeral = _ephemeral_range()
    assert not [port for port in ports if port in ephemeral]


def test_a_free_port_can_be_listened_on() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", free_port()))
        server.listen()
