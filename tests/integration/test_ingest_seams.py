"""The seams of the ingest core's dedup state and time rules (issue 16, items 2-7), each at
its edge and on both sides, against the real Redis, the real DLQ topic and the real store.

Ingest runs in this process with an injected clock; messages are built here with the
broker's log-append time (or a create time) chosen by each test. Redis's markers are read by
generation of that clock, so a marker "forgotten" at a virtual time is one no read reaches."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import orjson
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis as AsyncRedis

from consumers.batch import BatchOutcome, Message
from consumers.dead_letters import DeadLetters
from consumers.ingest import Ingest
from consumers.publish_once import OncePublisher
from consumers.raw_writer import RawWriter
from consumers.rolling_counters import RollingCounters
from consumers.rows import RawRow
from consumers.store_leases import StoreLeases
from consumers.store_progress import StoreProgress
from tests.integration.conftest import TIME_OF_DAY_MS
from tests.integration.harness import Pipeline
from voicemon import keys
from voicemon.publisher import KafkaPublisher
from voicemon.store import Client

MINUTE = 60_000
HOUR = 60 * MINUTE
T = TypeVar("T")


class Worker:
    """One worker's ingest (role ``all``, ``counters`` or ``store``) at a settable time."""

    def __init__(
        self, pipeline: Pipeline, store: Client, redis: AsyncRedis, role: str = "all",
        raw_writer: RawWriter | None = None, lease_ms: int = 10_000,
    ) -> None:  # fmt: skip
        self.now_ms = 0
        bootstrap = pipeline.settings.kafka_bootstrap
        dlq = DeadLetters(KafkaPublisher(bootstrap), bootstrap, pipeline.settings.dlq_topic)
        writer = None if role == "counters" else raw_writer or RawWriter(store)
        self.ingest = Ingest(
            RollingCounters(redis), StoreProgress(redis), pipeline.settings.stages,
            dead_letters=OncePublisher(redis, dlq, clock=self.clock), raw_writer=writer,
            counts=role != "store", leases=StoreLeases(redis, lease_ms=lease_ms),
            clock=self.clock,
        )  # fmt: skip

    def clock(self) -> float:
        return self.now_ms / 1000

    def at(self, now_ms: int) -> Ingest:
        self.now_ms = now_ms
        return self.ingest


def run(pipeline: Pipeline, scenario: Callable[[AsyncRedis], Awaitable[T]]) -> T:
    async def main() -> T:
        redis = AsyncRedis.from_url(pipeline.env["VOICEMON_REDIS_URL"])
        try:
            return await asyncio.wait_for(scenario(redis), 60)
        finally:
            await redis.aclose()

    return asyncio.run(main())


def body(event_id: str, at: int, **fields: Any) -> dict[str, Any]:
    return {"event_id": event_id, "event_type": "artifact_received", "occurred_at": at,
            "artifact_id": f"a-{event_id}", "organization_id": "org-s", **fields}  # fmt: skip


def message(
    offset: int, value: Any, record_ms: int, log_append: bool = True, partition: int = 0
) -> Message:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return Message(partition, offset, b"k", raw, record_ms, log_append)


def stored(store: Client) -> list[tuple[str, int, int]]:
    rows = store.query("SELECT event_id, kafka_partition, kafka_offset "
                       "FROM voicemon.pipeline_events ORDER BY event_id, kafka_offset")  # fmt: skip
    return [tuple(row) for row in rows.result_rows]  # type: ignore[misc]


@pytest.fixture
def now_ms() -> int:
    """A fixed time of day two days ahead of the real clock: Redis expires keys by its own
    clock, so every virtual time of these tests lies in its future (an expiry in the past
    deletes a key at once), and the store's TTL keeps every row."""
    day = 86_400_000
    return (int(time.time() * 1000) // day + 2) * day + TIME_OF_DAY_MS


def duplicates_so_far() -> float:
    return REGISTRY.get_sample_value("voicemon_events_duplicate_total") or 0.0


def reasons(pipeline: Pipeline) -> list[str]:
    return sorted(headers["voicemon-reason"] for _, headers in pipeline.dlq())


# -- item 2: the seam between the markers' reach and the store lookup --------------------


@pytest.mark.parametrize("delay_min", [0, 40, 70, 75, 79, 80, 81, 85, 90, 95, 100, 101, 180])
def test_an_identical_resend_at_any_delay_is_counted_once(
    pipeline: Pipeline, clean_store: Client, now_ms: int, delay_min: int
) -> None:
    # The first copy is stamped 5 minutes ahead of its record (the most the rules allow) and
    # counted in the last millisecond of a marker generation: its marker lives 80 minutes.
    generation = keys.SEEN_GENERATION_MS
    first_at = (now_ms // generation) * generation - 1
    event = body("resent", first_at + 5 * MINUTE)

    async def scenario(redis: AsyncRedis) -> tuple[BatchOutcome, BatchOutcome]:
        worker = Worker(pipeline, clean_store, redis)
        first = await worker.at(first_at).process([message(0, event, first_at)])
        again_at = first_at + delay_min * MINUTE
        again = await worker.at(again_at).process([message(1, event, again_at)])
        return first, again

    first, again = run(pipeline, scenario)
    assert (first.counted, again.counted, again.duplicates) == (1, 0, 1)
    assert stored(clean_store) == [("resent", 0, 0)]


# -- item 3: a conflicting copy in another hour or day -----------------------------------


@pytest.mark.parametrize(
    ("shift", "delay"),
    [(-HOUR, 10 * MINUTE), (-25 * HOUR, 10 * MINUTE), (-HOUR, 60 * MINUTE),
     (-25 * HOUR, 60 * MINUTE), (HOUR, 60 * MINUTE + 1)],
)  # fmt: skip
def test_a_conflicting_copy_within_an_hour_in_another_hour_or_day_is_not_stored(
    pipeline: Pipeline, clean_store: Client, now_ms: int, shift: int, delay: int
) -> None:
    first_at = now_ms - 4 * HOUR
    first = body("conflict", first_at - 30 * MINUTE, ai_cost_usd=1.0)
    later = body("conflict", first_at - 30 * MINUTE + shift, ai_cost_usd=9.0)

    async def scenario(redis: AsyncRedis) -> BatchOutcome:
        worker = Worker(pipeline, clean_store, redis)
        await worker.at(first_at).process([message(0, first, first_at)])
        return await worker.at(first_at + delay).process([message(1, later, first_at + delay)])

    outcome = run(pipeline, scenario)
    assert (outcome.counted, outcome.duplicates) == (0, 1)
    assert stored(clean_store) == [("conflict", 0, 0)]


# -- item 4: a store-only worker with chunks in flight ----------------------------------


def test_a_store_only_worker_stores_an_old_events_resend_once_with_chunks_in_flight(
    pipeline: Pipeline, clean_store: Client, now_ms: int
) -> None:
    old = body("old", now_ms - 3 * HOUR)  # beyond the markers' reach: the store is asked
    chunk_a = [message(0, old, now_ms)]
    chunk_b = [message(1, old, now_ms)]

    async def scenario(redis: AsyncRedis) -> tuple[BatchOutcome, BatchOutcome]:
        counters = Worker(pipeline, clean_store, redis, role="counters")
        await counters.at(now_ms).process(chunk_a)
        await counters.at(now_ms).process(chunk_b)
        storer = Worker(pipeline, clean_store, redis, role="store").at(now_ms)
        counted_a = await storer.count(chunk_a)
        counted_b = await storer.count(chunk_b)  # counted while chunk a is not yet stored
        return await storer.store(counted_a), await storer.store(counted_b)

    _, stored_b = run(pipeline, scenario)
    assert stored(clean_store) == [("old", 0, 0)]
    assert stored_b.duplicates == 1


# -- item 5: a handover while the old owner's store hangs --------------------------------


class HeldWriter(RawWriter):
    """The real writer, whose inserts wait until the test lets them through."""

    def __init__(self, store: Client) -> None:
        super().__init__(store)
        self.entered = threading.Event()
        self.go_on = threading.Event()

    def write_storable(self, rows: Sequence[RawRow], stored_ms: int | None = None) -> list[RawRow]:
        self.entered.set()
        assert self.go_on.wait(30), "the test never let the insert through"
        return super().write_storable(rows, stored_ms)


@pytest.mark.parametrize("old_owner", ["hangs", "is_cancelled_mid_insert", "dies"])
def test_a_handover_while_the_old_owner_stores_writes_each_row_once(
    pipeline: Pipeline, clean_store: Client, now_ms: int, old_owner: str
) -> None:
    chunk = [message(i, body(f"h{i}", now_ms - MINUTE), now_ms) for i in range(5)]
    writer = HeldWriter(clean_store)

    async def scenario(redis: AsyncRedis) -> BatchOutcome:
        old = Worker(pipeline, clean_store, redis, raw_writer=writer, lease_ms=600)
        new = Worker(pipeline, clean_store, redis, lease_ms=600)
        counted = await old.at(now_ms).count(chunk)
        if old_owner == "dies":  # counted, never stored, never renewed: its lease lapses
            old.ingest._leases._holds.clear()  # type: ignore[union-attr]
            writer.go_on.set()
            return await new.at(now_ms + 1000).process(chunk)
        storing = asyncio.create_task(old.ingest.store(counted))
        await asyncio.to_thread(writer.entered.wait, 10)  # the old owner's insert hangs
        if old_owner == "is_cancelled_mid_insert":
            storing.cancel()  # the rebalance gives up on it; its insert goes on in its thread
        replay = asyncio.create_task(new.at(now_ms + 1000).process(chunk))
        await asyncio.sleep(2)  # over three lease times: the new owner must still wait
        assert not replay.done()
        writer.go_on.set()
        if old_owner == "hangs":
            await storing
        return await replay

    replay = run(pipeline, scenario)
    assert stored(clean_store) == [(f"h{i}", 0, i) for i in range(5)]
    assert replay.counted == 0
    assert replay.recovered == (5 if old_owner == "dies" else 0)


# -- item 6: the record's time as "now", and the worker's clock --------------------------


def test_an_event_of_now_in_a_record_created_10_minutes_ago_is_accepted(
    pipeline: Pipeline, clean_store: Client, now_ms: int
) -> None:
    created = now_ms - 10 * MINUTE  # read long after it was created: the clock decides

    async def scenario(redis: AsyncRedis) -> BatchOutcome:
        worker = Worker(pipeline, clean_store, redis)
        fresh = message(0, body("fresh", now_ms + 4 * MINUTE), created, log_append=False)
        return await worker.at(now_ms).process([fresh])

    assert run(pipeline, scenario).counted == 1
    assert reasons(pipeline) == []


@pytest.mark.parametrize(
    ("record_ms", "log_append", "age", "verdict"),
    [
        (-2 * HOUR, False, 49 * HOUR, "too_late"),  # old create time: the clock decides
        (-2 * HOUR, True, 47 * HOUR, "accepted"),  # 47 h by both
        (-2 * HOUR, True, 48 * HOUR, "accepted"),  # 48 h by the clock, exactly: still in
        (
            -2 * HOUR,
            True,
            48 * HOUR + 1,
            "too_late",
        ),  # 46 h by the record, 48 h + 1 ms by the clock
        (-4 * MINUTE, False, 48 * HOUR + 1, "too_late"),
        (-4 * MINUTE, False, 48 * HOUR - 4 * MINUTE, "accepted"),
    ],
)
def test_no_event_is_accepted_that_the_workers_clock_finds_too_late(
    pipeline: Pipeline, clean_store: Client, now_ms: int,
    record_ms: int, log_append: bool, age: int, verdict: str,
) -> None:  # fmt: skip
    record = message(0, body("aged", now_ms - age), now_ms + record_ms, log_append)

    async def scenario(redis: AsyncRedis) -> tuple[BatchOutcome, BatchOutcome]:
        worker = Worker(pipeline, clean_store, redis)
        first = await worker.at(now_ms).process([record])
        return first, await worker.at(now_ms + 5 * MINUTE).process([record])  # a replay

    first, replay = run(pipeline, scenario)
    if verdict == "accepted":
        assert (first.counted, first.rejected, replay.counted) == (1, 0, 0)
        assert reasons(pipeline) == []  # the replay keeps the first decision
    else:
        assert (first.counted, first.rejected, replay.counted) == (0, 1, 0)
        assert reasons(pipeline) == ["too_late"]
        [(value, _)] = pipeline.dlq()
        assert value == record.value


# -- item 7: a replay of an unstorable event is not a duplicate ---------------------------


def test_a_replayed_unstorable_event_adds_nothing_to_the_duplicates(
    pipeline: Pipeline, clean_store: Client, now_ms: int
) -> None:
    clean_store.command(
        "ALTER TABLE voicemon.pipeline_events ADD CONSTRAINT no_poison CHECK artifact_id != 'bad'"
    )
    try:
        poison = message(0, body("p", now_ms - MINUTE, artifact_id="bad"), now_ms)

        async def scenario(redis: AsyncRedis) -> tuple[BatchOutcome, float, float]:
            worker = Worker(pipeline, clean_store, redis)
            first = await worker.at(now_ms).process([poison])
            before = duplicates_so_far()
            replay = await worker.at(now_ms + 1000).process([poison])
            assert (replay.counted, replay.duplicates, replay.unstorable) == (0, 0, 0)
            return first, before, duplicates_so_far()

        first, before, after = run(pipeline, scenario)
        assert first.unstorable == 1 and after == before
        assert reasons(pipeline) == ["unstorable"]
    finally:
        clean_store.command("ALTER TABLE voicemon.pipeline_events DROP CONSTRAINT no_poison")


# -- CONTRACT §3.2: a first rejection outlives its DLQ marker (its letter in the DLQ) ------


async def forget_dlq_markers(redis: AsyncRedis) -> None:
    """The rejections' DLQ markers end (they live 2 h by Redis's clock)."""
    found = [key async for key in redis.scan_iter(match=keys.dead_lettered(0, 0, None)[:-5] + "*")]
    await redis.delete(*found)


FUTURE = "future"  # an event 30 minutes ahead of the first reading's clock


@pytest.mark.parametrize(
    ("first", "replay", "record_ms", "letters", "counted"),
    [
        # rejected by the clock (no create time, or one 10 min off): kept after 2 h 10 min
        ([FUTURE], [FUTURE], None, ["future_timestamp"], 0),
        ([FUTURE], [FUTURE], -10 * MINUTE, ["future_timestamp"], 0),
        # a batch: its rejected element stays rejected, its accepted one counted once
        (["ok", FUTURE], ["ok", FUTURE], None, ["future_timestamp"], 1),
        # not valid JSON: one letter
        ([b'{"event_id": '], [b'{"event_id": '], -10 * MINUTE, ["invalid_json"], 0),
        # a recreated topic: other bytes at the lettered position are decided anew
        ([b'{"event_id": '], [b'{"event_id": 7'], -10 * MINUTE, ["invalid_json"] * 2, 0),
        ([FUTURE], ["ok"], None, ["future_timestamp"], 1),
    ],
)
def test_a_rejection_without_a_log_append_time_keeps_its_decision_after_its_marker(
    pipeline: Pipeline, clean_store: Client, first: list[Any], replay: list[Any],
    record_ms: int | None, letters: list[str], counted: int,
) -> None:  # fmt: skip
    now = int(time.time() * 1000)  # the DLQ's records are stamped by the real clock
    later = now + 2 * HOUR + 10 * MINUTE

    def record(values: list[Any]) -> Message:
        items = [body(f"id-{i}", now + 30 * MINUTE if v == FUTURE else now - MINUTE)
                 if isinstance(v, str) else v for i, v in enumerate(values)]  # fmt: skip
        raw = items[0] if len(items) == 1 else orjson.dumps(items)
        created = None if record_ms is None else now + record_ms
        return message(0, raw, created, log_append=False)  # type: ignore[arg-type]

    async def scenario(redis: AsyncRedis) -> list[BatchOutcome]:
        worker = Worker(pipeline, clean_store, redis)
        outcomes = [await worker.at(now).process([record(first)])]
        await forget_dlq_markers(redis)
        again = Worker(pipeline, clean_store, redis)  # a restart: nothing kept in memory
        outcomes.append(await again.at(later).process([record(replay)]))
        return outcomes

    before, after = run(pipeline, scenario)
    assert reasons(pipeline) == letters
    assert before.counted + after.counted == counted
    assert len(clean_store.query("SELECT 1 FROM voicemon.pipeline_events").result_rows) == counted


def test_a_rejection_whose_count_failed_after_its_letter_keeps_its_decision_after_2_h(
    pipeline: Pipeline, clean_store: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The count published its letter, then failed (Redis lost, the worker killed before
    its counters were added): the retry, more than 2 h later, still finds the letter."""
    now = int(time.time() * 1000)
    record = message(0, body("future", now + 30 * MINUTE), None, log_append=False)  # type: ignore[arg-type]
    real_add = RollingCounters.add
    failing = [True]

    async def add(self: RollingCounters, *args: Any, **kwargs: Any) -> Any:
        if failing:
            failing.clear()
            raise ConnectionError("Redis lost after the letter was published")
        return await real_add(self, *args, **kwargs)

    monkeypatch.setattr(RollingCounters, "add", add)

    async def scenario(redis: AsyncRedis) -> BatchOutcome:
        with pytest.raises(ConnectionError):
            await Worker(pipeline, clean_store, redis).at(now).process([record])
        await forget_dlq_markers(redis)  # the outage outlasted the markers' 2 h
        again = Worker(pipeline, clean_store, redis)
        return await again.at(now + 2 * HOUR + 10 * MINUTE).process([record])

    assert run(pipeline, scenario).counted == 0
    assert reasons(pipeline) == ["future_timestamp"]


def asked_the_dlq(monkeypatch: pytest.MonkeyPatch) -> list[set[Any]]:
    """The sources each DLQ lookup asks for, from now on."""
    asked: list[set[Any]] = []
    real = DeadLetters.holding

    def holding(self: DeadLetters, wanted: Any, since_ms: int) -> set[Any]:
        asked.append(set(wanted))
        return real(self, wanted, since_ms)

    monkeypatch.setattr(DeadLetters, "holding", holding)
    return asked


def test_the_dlq_is_asked_only_at_or_below_the_last_create_time_letter_settled(
    pipeline: Pipeline, clean_store: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = int(time.time() * 1000)
    bad = message(5, b'{"event_id": ', now, log_append=False)
    ahead = message(6, body("ahead", now + 30 * MINUTE), now, log_append=False)
    asked = asked_the_dlq(monkeypatch)

    async def scenario(redis: AsyncRedis) -> list[BatchOutcome]:
        outcomes = [await Worker(pipeline, clean_store, redis).at(now).process([bad])]
        await forget_dlq_markers(redis)
        later = Worker(pipeline, clean_store, redis).at(now + 2 * HOUR + 10 * MINUTE)
        outcomes.append(await later.process([bad, ahead]))  # 6: its first reading
        return outcomes

    first, replay = run(pipeline, scenario)
    assert asked == [{(0, 5, None)}]  # the lettered offset; not the one above it
    assert (first.rejected, replay.rejected, replay.counted) == (1, 1, 1)
    assert reasons(pipeline) == ["invalid_json"]  # 5 once; 6 is in time by the clock now


def test_a_store_only_worker_does_not_ask_the_dlq_for_a_duplicate(
    pipeline: Pipeline, clean_store: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Split roles on a create-time topic: the store worker follows a chunk whose letter the
    counting worker settled, so every row of it lies at or below that letter. A producer's
    resend in it is no lookup (nothing of a duplicate is counted or stored, rejected first
    or not), nor is the event counted at its own position."""
    now = int(time.time() * 1000)
    event = body("resent", now - MINUTE)
    chunk = [message(0, event, now, log_append=False), message(1, event, now, log_append=False),
             message(5, b"{", now, log_append=False)]  # fmt: skip
    asked = asked_the_dlq(monkeypatch)

    async def scenario(redis: AsyncRedis) -> BatchOutcome:
        await Worker(pipeline, clean_store, redis, role="counters").at(now).process(chunk)
        return await Worker(pipeline, clean_store, redis, role="store").at(now).process(chunk)

    outcome = run(pipeline, scenario)
    assert outcome.duplicates == 1 and asked == []
    assert stored(clean_store) == [("resent", 0, 0)]
