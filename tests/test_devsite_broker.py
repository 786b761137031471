"""The private broker's helpers: free ports that an outgoing connection cannot take first."""

from __future__ import annotations

import socket

from devsite.broker import EPHEMERAL_PORTS, PORTS_BELOW_EPHEMERAL, free_port, free_port_range


def test_free_ports_lie_below_the_ephemeral_range_and_can_be_listened_on() -> None:
    candidates = free_port_range()
    first_ephemeral = int(EPHEMERAL_PORTS.read_text().split()[0])
    assert candidates == range(max(1024, first_ephemeral - PORTS_BELOW_EPHEMERAL), first_ephemeral)
    ports = {free_port() for _ in range(20)}
    assert len(ports) > 1  # drawn at random, so that concurrent callers rarely pick the same
    assert all(port in candidates for port in ports)
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))
            sock.listen()
