"""Per-loop outage state and the retrying loop (voicemon/health.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from voicemon import telemetry
from voicemon.health import Outage, until_done


class Flaky:
    """Work that fails ``failures`` times, then returns ``result``; records the outage seen
    by each attempt."""

    def __init__(self, outage: Outage, failures: int, result: str = "done") -> None:
        self.outage = outage
        self.failures = failures
        self.result = result
        self.calls = 0
        self.seen: list[tuple[bool, str | None]] = []

    async def __call__(self) -> str:
        self.calls += 1
        self.seen.append((self.outage.active, self.outage.reason))
        if self.calls <= self.failures:
            raise ConnectionError(f"down #{self.calls}")
        return self.result


# -- Outage ----------------------------------------------------------------------------------


def test_outage_starts_inactive() -> None:
    outage = Outage("ingest")
    assert not outage.active
    assert outage.reason is None


def test_outage_begin_and_end() -> None:
    outage = Outage("ingest")
    outage.begin(ConnectionError("redis down"))
    assert outage.active
    assert outage.reason == "ConnectionError: redis down"
    outage.begin(TimeoutError("still down"))
    assert outage.reason == "TimeoutError: still down"
    outage.end()
    assert not outage.active
    assert outage.reason is None
    outage.end()
    assert not outage.active


def test_outage_reason_is_truncated() -> None:
    outage = Outage("ingest")
    outage.begin(ValueError("x" * 1000))
    assert outage.reason == ("ValueError: " + "x" * 1000)[:300]
    assert len(outage.reason) == 300


def test_outage_logs_once_per_begin_and_end(caplog: pytest.LogCaptureFixture) -> None:
    outage = Outage("directory")
    with caplog.at_level(logging.DEBUG, logger="voicemon.health"):
        outage.begin(OSError("a"))
        outage.begin(OSError("b"))
        outage.begin(OSError("c"))
        outage.end()
        outage.end()
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert levels == [
        (logging.ERROR, "directory paused, retrying: OSError: a"),
        (logging.WARNING, "directory resumed"),
    ]


def test_outages_are_independent() -> None:
    ingest, directory = Outage("ingest"), Outage("directory")
    ingest.begin(OSError("a"))
    directory.begin(OSError("b"))
    ingest.end()
    assert not ingest.active
    assert directory.active
    assert directory.reason == "OSError: b"


# -- until_done ------------------------------------------------------------------------------


def test_until_done_success_first_time() -> None:
    outage = Outage("ingest")
    work = Flaky(outage, failures=0, result="ok")
    assert asyncio.run(until_done(outage, work)) == "ok"
    assert work.calls == 1
    assert work.seen == [(False, None)]
    assert not outage.active


def test_until_done_clears_an_outage_left_active() -> None:
    outage = Outage("ingest")
    outage.begin(OSError("earlier"))
    assert asyncio.run(until_done(outage, Flaky(outage, failures=0))) == "done"
    assert not outage.active


def test_until_done_retries_with_the_outage_active_meanwhile() -> None:
    outage = Outage("ingest")
    work = Flaky(outage, failures=1, result="ok")
    assert asyncio.run(until_done(outage, work)) == "ok"
    assert work.calls == 2
    # first attempt: no outage yet; the retry runs while the outage is set
    assert work.seen == [(False, None), (True, "ConnectionError: down #1")]
    assert not outage.active


def test_until_done_one_loop_recovering_does_not_clear_another() -> None:
    ingest, directory = Outage("ingest"), Outage("directory")
    gate = asyncio.Event()
    directory_calls = 0

    async def directory_work() -> str:
        nonlocal directory_calls
        directory_calls += 1
        if directory_calls == 1:
            raise ConnectionError("clickhouse down")
        await gate.wait()  # the directory's retry is still in progress
        return "directory"

    async def scenario() -> None:
        directory_task = asyncio.create_task(until_done(directory, directory_work))
        ingest_work = Flaky(ingest, failures=1, result="ingest")
        assert await until_done(ingest, ingest_work) == "ingest"
        while directory_calls < 2:
            await asyncio.sleep(0.01)
        # ingest recovered: its own outage is cleared, the directory's is not
        assert not ingest.active
        assert directory.active
        assert directory.reason == "ConnectionError: clickhouse down"
        gate.set()
        assert await directory_task == "directory"
        assert not directory.active
        assert not ingest.active

    asyncio.run(asyncio.wait_for(scenario(), timeout=10))


def _paused(dependency: str) -> float | None:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("voicemon_ingest_paused", {"dependency": dependency})


def test_an_outage_sets_ingest_paused_for_its_dependency_until_it_ends() -> None:
    from clickhouse_connect.driver.exceptions import OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError

    from voicemon.health import dependency_of

    assert dependency_of(RedisConnectionError("down")) == "redis"
    assert dependency_of(OperationalError("refused")) == "clickhouse"
    assert dependency_of(ValueError("x")) == "other"
    outage = Outage("ingest-gauge-test")
    outage.begin(RedisConnectionError("down"))
    assert _paused("redis") == 1
    outage.begin(OperationalError("refused"))  # the outage moved on to the store
    assert (_paused("redis"), _paused("clickhouse")) == (0, 1)
    outage.end()
    assert (_paused("redis"), _paused("clickhouse")) == (0, 0)


def test_ingest_paused_stays_set_while_any_loop_is_paused_by_the_dependency() -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    ingest, directory = Outage("ingest-shared-test"), Outage("directory-shared-test")
    ingest.begin(RedisConnectionError("down"))
    directory.begin(RedisConnectionError("down"))
    directory.end()  # the directory recovered; ingest is still paused by Redis
    assert _paused("redis") == 1
    ingest.end()
    assert _paused("redis") == 0


def test_observe_many_is_observe_for_every_value() -> None:
    values = [0.0, 0.1, 0.1000001, 0.3, 1, 2.5, 7, 59.9, 3600, 3600.5, 1e9]
    one, many = CollectorRegistry(), CollectorRegistry()
    by_one = Histogram("h", "h", ["stage"], buckets=(0.1, 0.25, 1, 60, 3600), registry=one)
    by_many = Histogram("h", "h", ["stage"], buckets=(0.1, 0.25, 1, 60, 3600), registry=many)
    for value in values:
        by_one.labels("x").observe(value)
    telemetry.observe_many(by_many.labels("x"), values)
    telemetry.observe_many(by_many.labels("x"), [])

    def exposed(registry: CollectorRegistry) -> list[bytes]:
        return [line for line in generate_latest(registry).splitlines() if b"_created" not in line]

    assert exposed(one) == exposed(many)
