"""Ports for the servers the tests start.

A port the kernel hands out for ``bind(("127.0.0.1", 0))`` comes from its ephemeral range,
where outgoing connections take their source ports too: between the pick and the server's
bind, a client elsewhere can take it (a broker then fails with "Address already in use"). The
ports here come from below that range, from 20000 up: a block for each pytest-xdist worker of
the run, so that its workers never pick the same one; from a random place in the block, so
that two runs side by side seldom do; in turn from there, so that a port handed out and not
bound yet is not handed out again. A port comes with the one after it free as well: a
broker's controller listens there.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
from collections.abc import Iterable
from pathlib import Path

FIRST = 20_000


def ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (32768 if it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def block(worker: str, workers: int, end: int) -> range:
    """The ports of pytest-xdist worker ``worker`` (``gw0``, ...; empty: no xdist) of a run
    of ``workers`` workers, between FIRST and ``end`` (pure)."""
    if not worker.startswith("gw"):
        return range(FIRST, end)
    size = (end - FIRST) // max(workers, 1)
    start = FIRST + size * int(worker[2:])
    return range(start, start + size)


_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_PORTS = block(os.environ.get("PYTEST_XDIST_WORKER", ""), _WORKERS, ephemeral_start() - 1)
_PAIRS = _PORTS[::2]
if not _PAIRS:
    raise RuntimeError(f"no ports for the tests between {FIRST} and the ephemeral range")
_turns = itertools.islice(itertools.cycle(_PAIRS), random.randrange(len(_PAIRS)), None)


def free_port() -> int:
    """A port no server listens on, with the port after it free too."""
    return first_free(itertools.islice(_turns, len(_PAIRS)))


def first_free(ports: Iterable[int]) -> int:
    """The first of ``ports`` that can be bound with the port after it."""
    for port in ports:
        if _bindable(port) and _bindable(port + 1):
            return port
    raise RuntimeError(f"no free pair of ports in {_PORTS.start}-{_PORTS.stop - 1}")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
