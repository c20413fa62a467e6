"""Every snapshot record fits its topic, and one that cannot be emitted never stops the other
windows from closing (CONTRACT §6.1; issue 16 item 9). Real Redis, the embedded store, the
real broker for the topic's limit."""

from __future__ import annotations

import math
import random
import time
import uuid
from collections import Counter
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from prometheus_client import REGISTRY

from aggregators.closing import snapshots
from aggregators.closing.closer import (
    CloserConfig,
    CloserError,
    WindowCloser,
    build_closer,
    snapshot_messages,
)
from aggregators.closing.window_state import WindowState
from aggregators.snapshot_rows import RECORD_OVERHEAD_BYTES, worst_case_record_bytes
from consumers.raw_writer import RawWriter
from consumers.rows import Position, RawRow
from tests.integration.test_closer import GRACE_MS, PARTITIONS, Clock, redis_url, run
from voicemon import windows
from voicemon.event import EventType, PipelineEvent
from voicemon.publisher import KafkaPublisher
from voicemon.settings import DEFAULT_STAGES, Settings
from voicemon.sketch import bucket
from voicemon.store import Client
from voicemon.windows import HOUR_MS

__all__ = ["redis_url"]  # the fixture, shared with test_closer
Record = tuple[bytes, bytes]


def write_latencies(store: Client, hour: int, count: int) -> None:
    """``count`` completed artifacts in ``hour`` with as many distinct latency buckets."""
    rows = [
        RawRow(PipelineEvent(f"c{i}", EventType.ARTIFACT_COMPLETED, hour + i, f"a{i}", "org-a",
                             duration_ms=1.0 * 1.02**i), Position(0, i, 0))
        for i in range(count)
    ]  # fmt: skip
    RawWriter(store).write(rows)


class Broker:
    """A topic refusing records larger than ``limit`` bytes, as Kafka's producer does."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.records: list[Record] = []

    async def publish(self, records: list[Record]) -> None:
        for key, value in records:
            if len(key) + len(value) > self.limit:
                raise RuntimeError("KafkaError{code=MSG_SIZE_TOO_LARGE}")
        self.records.extend(records)

    def hourly(self) -> dict[int, int]:
        """Hour -> version of its platform record."""
        found = {}
        for key, value in self.records:
            if key.startswith(b"hourly:platform:"):
                found[key.decode()] = orjson.loads(value)["version"]
        return {hour: found[f"hourly:platform::{windows.iso(hour)}"] for hour in self._hours(found)}

    @staticmethod
    def _hours(found: dict[str, int]) -> list[int]:
        from datetime import datetime

        return [int(datetime.fromisoformat(k.split("::")[1]).timestamp() * 1000) for k in found]


def new_closer(state: WindowState, store: Client, clock: Clock, broker: Broker,
               **config: Any) -> WindowCloser:  # fmt: skip
    settings = CloserConfig(stages=DEFAULT_STAGES, partitions=PARTITIONS, grace_ms=GRACE_MS,
                            max_windows_per_tick=200, **config)  # fmt: skip
    return WindowCloser(state, store, broker.publish, settings, clock)


def unpublished_total(reason: str) -> float:
    return (
        REGISTRY.get_sample_value("voicemon_snapshots_unpublished_total", {"reason": reason}) or 0
    )


def test_a_window_the_topic_refuses_does_not_stop_the_next_hours_from_closing(
    clean_store: Client, redis_url: str, now_ms: int
) -> None:
    hour = windows.hour_start(now_ms) - 6 * HOUR_MS
    write_latencies(clean_store, hour, 400)  # its records: ~8 KB; an empty hour's: ~2.5 KB
    clock = Clock(hour + HOUR_MS + GRACE_MS + 1)
    broker = Broker(limit=5_000)
    refused_before = unpublished_total("refused")

    async def scenario(state: WindowState) -> tuple[list[str], list[str], list[str]]:
        c = new_closer(state, clean_store, clock, broker)
        stuck = (await c.tick()).unpublished
        later = []
        for _ in range(4):  # four more hours pass
            clock.ms += HOUR_MS
            later += (await c.tick()).emitted
        broker.limit = 10**7  # the operator raises the topic's max.message.bytes
        clock.ms += 1_000
        return stuck, later, (await c.tick()).republished

    stuck, later, republished = run(redis_url, scenario)
    assert stuck == [f"hourly:{hour}"]
    assert [f"hourly:{hour + n * HOUR_MS}" for n in range(1, 5)] == [
        w for w in later if w.startswith("hourly") and int(w.split(":")[1]) > hour]  # fmt: skip
    assert unpublished_total("refused") - refused_before >= 5  # the first try, then each tick
    assert republished == [f"hourly:{hour}"]
    [(version,)] = clean_store.query(
        "SELECT version FROM voicemon.snapshots_latest WHERE period_type = 'hourly' AND scope "
        f"= 'platform' AND toUnixTimestamp(period_start) = {hour // 1000}"
    ).result_rows
    assert broker.hourly()[hour] == version  # the record written then, published now


@pytest.mark.parametrize("spare_bytes", [0, -1])
def test_a_record_is_published_only_if_it_fits_the_limit_to_the_byte(
    clean_store: Client, redis_url: str, now_ms: int, spare_bytes: int
) -> None:
    hour = windows.hour_start(now_ms) - 3 * HOUR_MS
    write_latencies(clean_store, hour, 300)
    rows = snapshots.compute_hour(clean_store, hour, DEFAULT_STAGES, 10**12, now_ms)
    largest = max(len(k) + len(v) for k, v in snapshot_messages(rows)) + RECORD_OVERHEAD_BYTES
    clock = Clock(hour + 2 * HOUR_MS + GRACE_MS + 1)  # the hour after it is due as well
    broker = Broker(limit=10**7)
    too_large_before = unpublished_total("too_large")

    async def scenario(state: WindowState) -> Any:
        # versions are computed from the clock (ms), so the record's size is the one measured
        c = new_closer(state, clean_store, clock, broker, max_record_bytes=largest + spare_bytes)
        return await c.tick()

    report = run(redis_url, scenario)
    if spare_bytes == 0:
        assert f"hourly:{hour}" in report.emitted and hour in broker.hourly()
    else:
        assert report.unpublished == [f"hourly:{hour}"] and hour not in broker.hourly()
        assert unpublished_total("too_large") - too_large_before == 1
    assert hour + HOUR_MS in broker.hourly()  # the next hour closes on the same tick


def new_topic(bootstrap: str, max_message_bytes: int) -> str:
    name = f"snapshots-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = NewTopic(name, 1, 1, config={"max.message.bytes": str(max_message_bytes)})
    for future in admin.create_topics([topic]).values():
        future.result(timeout=30)
    return name


@pytest.mark.parametrize("spare_bytes", [0, -1])
def test_the_closer_starts_only_if_its_largest_record_fits_the_snapshot_topic(
    stack: Settings, clean_store: Client, redis_url: str, spare_bytes: int
) -> None:
    worst = worst_case_record_bytes(stack.stages)
    topic = new_topic(stack.kafka_bootstrap, worst + spare_bytes)
    settings = stack.model_copy(update={"snapshots_topic": topic})
    publisher = KafkaPublisher(stack.kafka_bootstrap)

    async def scenario(state: WindowState) -> None:
        build_closer(settings, state, clean_store, publisher)

    if spare_bytes == 0:
        run(redis_url, scenario)
    else:
        with pytest.raises(CloserError, match=f"{worst:,} bytes but topic {topic}"):
            run(redis_url, scenario)


def test_the_store_buckets_extreme_durations_as_the_sketch_does(clean_store: Client) -> None:
    now = int(time.time() * 1000)
    hour = windows.hour_start(now) - HOUR_MS
    floor = 1e-3
    durations = [0.0, 5e-324, 1e-300, math.nextafter(floor, 0.0), floor,
                 math.nextafter(floor, 1.0), 7.25, 86_400_000.0, 86_399_999.99]  # fmt: skip
    rng = random.Random(9)
    durations += [min(2.0 ** rng.uniform(-1074, 26.37), 86_400_000.0) for _ in range(3_000)]
    rows = [
        RawRow(PipelineEvent(f"x{i}", EventType.STAGE_COMPLETED, hour + i % 1000, f"a{i}",
                             "org-a", stage=DEFAULT_STAGES[0], duration_ms=x), Position(0, i, 0))
        for i, x in enumerate(durations)
    ]  # fmt: skip
    RawWriter(clean_store).write(rows)
    computed = snapshots.compute_hour(clean_store, hour, DEFAULT_STAGES, 1, now)
    [platform] = [r for r in computed.stage_snapshots if r.scope == "platform"
                  and r.stage == DEFAULT_STAGES[0]]  # fmt: skip
    assert platform.duration_sketch == dict(Counter(bucket(x) for x in durations))
    assert len(platform.duration_sketch) <= 2520
