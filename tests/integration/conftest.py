"""Real services for integration tests: the local Kafka broker and redis-server are started
once per session (idempotently); each test gets its own topics, group, Redis DB and store."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import STACK_HOME, Pipeline
from voicemon.devtools.localstack import LocalStack
from voicemon.settings import Settings
from voicemon.store import Client, connect
from voicemon.store_migrations import migrate
from voicemon.windows import DAY_MS

ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack() -> Iterator[Settings]:
    """The local stack, started if it is not running. A pytest-xdist worker's own stack is
    stopped when the worker ends; the checkout's (var/) is left for the next run."""
    settings = Settings()
    local = LocalStack(settings, STACK_HOME)
    own = STACK_HOME != ROOT / "var"
    if own and not any(local.status().values()):
        shutil.rmtree(STACK_HOME, ignore_errors=True)  # a fresh broker: no topics of old runs
    local.up()
    yield settings
    if own:
        local.down()


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Client:
    """The test process's own embedded store (a process can open only one chDB path)."""
    client = connect(f"chdb://{tmp_path_factory.mktemp('store')}")
    migrate(client)
    return client


@pytest.fixture
def clean_store(store: Client) -> Client:
    for table in (
        "pipeline_events",
        "stored_event_ids",
        "snapshots",
        "stage_snapshots",
        "organizations",
    ):
        store.command(f"TRUNCATE TABLE voicemon.{table}")
    return store


# Tests that reason about windows act at this fixed time of day (UTC), whatever the hour they
# run at: the time of day keeps every scenario (yesterday closed at 01:30, an hour 4 h back on
# the same day, ...) the same, and today's date late in the day keeps the rows they write
# inside the TTLs of the real clock (never more than 20 minutes behind it).
TIME_OF_DAY_MS = (23 * 60 + 40) * 60_000 + 13_579


@pytest.fixture
def now_ms() -> int:
    today = int(time.time() * 1000) // DAY_MS * DAY_MS
    return today + TIME_OF_DAY_MS


@pytest.fixture
def pipeline(stack: Settings, tmp_path: Path) -> Iterator[Pipeline]:
    harness = Pipeline(stack, tmp_path)
    yield harness
    harness.stop_workers()
