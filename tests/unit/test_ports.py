"""The ports the tests' servers listen on: never from the ephemeral range, never twice."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.ports import free_port


def test_ports_lie_below_the_ephemeral_range_and_are_not_handed_out_twice() -> None:
    ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(100)]
    assert len(set(ports)) == len(ports)
    assert max(ports) + 1 < ephemeral


def test_a_port_whose_neighbour_is_taken_is_passed_over() -> None:
    nxt = free_port() + 2  # the next one in turn
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", nxt + 1))
        taken.listen()
        assert free_port() == nxt + 2
