"""Set up once per test process, before any test starts a child.

Signals: a process started in the background by a non-interactive shell inherits SIGINT and
SIGQUIT as ignored, and ignored signals stay ignored across exec: a child a test interrupts
would never stop. Every test process and child gets default signal handling here.

The brokers the tests start run a JVM that starts fast and idles cheaply (one GC thread, the
quick JIT alone): half the CPU the suite's brokers used.

The stack: under pytest-xdist (`-n`) every worker process runs its own Kafka broker and
redis-server, on ports and in a directory of its own, so tests that restart or flush them
never reach another worker's. The environment set here is what every `Settings()` and every
child a test starts reads."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGQUIT, signal.SIG_DFL)

os.environ.setdefault("KAFKA_JVM_PERFORMANCE_OPTS", "-XX:+UseSerialGC -XX:TieredStopAtLevel=1")

ROOT = Path(__file__).resolve().parents[1]
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ... under xdist
if WORKER.startswith("gw"):
    number = int(WORKER[2:])
    os.environ["VOICEMON_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{19092 + 10 * number}"
    os.environ["VOICEMON_REDIS_URL"] = f"redis://127.0.0.1:{16379 + number}/0"
    os.environ["TEST_STACK_HOME"] = str(ROOT / "var" / "xdist" / WORKER)

# The modules that take a minute or more, started first: pytest-xdist (`--dist loadscope
# --no-loadscope-reorder`, the Makefile) hands whole modules to its workers in the order
# collected, and a long module handed out last would run alone at the end.
SLOWEST_FIRST = (
    "test_soak",
    "test_simulation",
    "test_ingest",
    "test_redis_topologies",
    "test_dlq_refusals",
    "test_cli_errors",
    "test_closer_retention",
    "test_consumer_lag",
    "test_event",
    "test_scale_out",
    "test_dashboards",
    "test_closer",
    "test_cli_tools",
    "test_producer_faults",
    "test_producer_install",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.stem
        return SLOWEST_FIRST.index(name) if name in SLOWEST_FIRST else len(SLOWEST_FIRST)

    items.sort(key=rank)
