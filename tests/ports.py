"""Ports for the servers the tests start.

A port the kernel hands out for ``bind(("127.0.0.1", 0))`` comes from its ephemeral range,
where outgoing connections take their source ports too: between the pick and the server's
bind, a client elsewhere can take it (a broker then fails with "Address already in use"). The
ports here come from below that range, a block for each pytest-xdist worker so that workers
never pick the same one, in turn within the block so that a port handed out and not bound
yet is not handed out again. A port comes with the one after it free as well: a broker's
controller listens there.
"""

from __future__ import annotations

import itertools
import os
import socket

BLOCK = 1000
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ... under xdist
_FIRST = 20_000 + (BLOCK * (1 + int(_WORKER[2:])) if _WORKER.startswith("gw") else 0)
_turns = itertools.cycle(range(_FIRST, _FIRST + BLOCK, 2))


def free_port() -> int:
    """A port no server listens on, with the port after it free too."""
    for port in itertools.islice(_turns, BLOCK // 2):
        if _bindable(port) and _bindable(port + 1):
            return port
    raise RuntimeError(f"no free pair of ports in {_FIRST}-{_FIRST + BLOCK - 1}")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
