"""The ports the tests' servers listen on: never from the ephemeral range, never twice, a
block per xdist worker."""

from __future__ import annotations

import itertools
import socket

from tests.ports import FIRST, block, ephemeral_start, first_free, free_port


def test_ports_lie_below_the_ephemeral_range_and_are_not_handed_out_twice() -> None:
    ports = [free_port() for _ in range(100)]
    assert len(set(ports)) == len(ports)
    assert min(ports) >= FIRST and max(ports) + 1 < ephemeral_start()


def test_the_workers_of_a_run_share_the_range_without_overlap() -> None:
    for workers in (1, 2, 6, 13, 40):
        blocks = [block(f"gw{n}", workers, 32_767) for n in range(workers)]
        assert all(len(b) >= 2 for b in blocks)
        assert blocks[0].start == FIRST and blocks[-1].stop <= 32_767
        assert all(a.stop <= b.start for a, b in itertools.pairwise(blocks))
    assert block("", 1, 32_767) == range(FIRST, 32_767)


def test_a_port_whose_neighbour_is_taken_is_passed_over() -> None:
    port, other = free_port(), free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port + 1))
        taken.listen()
        assert first_free([port, other]) == other
    assert first_free([port, other]) == port
