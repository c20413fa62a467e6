"""Adversarial tests of the ingest core and the snapshots (the break-it review of issue 16),
against the real Redis, the real DLQ topic and the real store. Each test names the contract
rule it breaks. Ingest runs in this process with an injected clock (``test_ingest_seams``)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future

import orjson
import pytest
from redis.asyncio import Redis as AsyncRedis

import consumers.ingest
from consumers.batch import BatchOutcome, Message
from consumers.rows import Position, RawRow
from tests.integration.harness import Pipeline
from tests.integration.test_ingest_seams import (
    HOUR,
    MINUTE,
    Worker,
    body,
    message,
    reasons,
    run,
    stored,
)
from voicemon import keys
from voicemon.event import EventType, PipelineEvent
from voicemon.publisher import Headers, KafkaPublisher, Published
from voicemon.store import Client


@pytest.mark.parametrize("delay", [1 * HOUR, 2 * HOUR - 10 * MINUTE])  # the DLQ marker lives 2 h
def test_a_replay_hours_later_keeps_a_future_timestamp_rejection(
    pipeline: Pipeline, clean_store: Client, delay: int
) -> None:
    """CONTRACT §3.1 ("decisions ... are made once: a replay, a retry after an outage ...
    reaches the same decision") and §3.2 ("a decision once made is kept: a replay finds ...
    the DLQ record of the first decision and changes nothing").

    A record with a trusted create time (within 5 min of the clock) holds an event 6 min
    ahead of it: rejected as ``future_timestamp``, sent to the DLQ. The same message read
    again 3 h later (a store outage that long, or a crash before the commit and a worker
    down that long) is judged by the clock, accepted, and kept because the only trace of
    the first decision ``_not_rejected_before`` reads is the DLQ marker, which expires
    after ``DLQ_MARKER_TTL_MS`` (2 h). The event is then both in the DLQ and counted.

    The first decision happens ``delay`` before the real clock, so Redis's own clock expires its
    keys as it would have by the time of the replay."""
    created = int(time.time() * 1000) - delay
    record = message(0, body("ahead", created + 6 * MINUTE), created, log_append=False)

    async def scenario(redis: AsyncRedis) -> tuple[BatchOutcome, BatchOutcome]:
        worker = Worker(pipeline, clean_store, redis)
        first = await worker.at(created).process([record])
        replay = await worker.at(created + delay).process([record])
        return first, replay

    first, replay = run(pipeline, scenario)
    assert (first.counted, first.rejected) == (0, 1)
    assert reasons(pipeline) == ["future_timestamp"]
    assert (replay.counted, stored(clean_store)) == (0, [])


def _row(event_id: str, at_ms: int, offset: int, cost: float) -> RawRow:
    event = PipelineEvent(
        event_id, EventType.ARTIFACT_RECEIVED, at_ms, "a", "org-x", ai_cost_usd=cost
    )
    return RawRow(event, Position(0, offset, 0))


def test_a_replay_of_a_record_without_a_timestamp_keeps_its_future_timestamp_rejection(
    pipeline: Pipeline, clean_store: Client, now_ms: int
) -> None:
    """CONTRACT §3.1: "Decisions about a message (accept or reject, and why) are made once,
    deterministically: a replay, a retry after an outage ... reaches the same decision."

    A record with no timestamp (Kafka's -1, as an old client sends it, or None) is judged
    by the worker's clock. An event 6 min ahead is rejected as ``future_timestamp``; the same
    message replayed 2 min later (a crash before the commit) is 4 min ahead, accepted and
    counted: ``_decode`` puts it straight among the accepted rows (``by_clock`` is False for
    a record without a timestamp), so no earlier rejection is looked for."""

    async def scenario(redis: AsyncRedis) -> tuple[BatchOutcome, BatchOutcome]:
        worker = Worker(pipeline, clean_store, redis)
        record = Message(0, 0, b"k", orjson.dumps(body("stampless", now_ms + 6 * MINUTE)), -1)
        first = await worker.at(now_ms).process([record])
        return first, await worker.at(now_ms + 2 * MINUTE).process([record])

    first, replay = run(pipeline, scenario)
    assert (first.counted, first.rejected) == (0, 1)
    assert reasons(pipeline) == ["future_timestamp"]
    assert (replay.counted, stored(clean_store)) == (0, [])


def test_a_store_worker_never_stores_an_event_its_counters_rejected_at_the_48_hour_edge(
    pipeline: Pipeline, clean_store: Client, now_ms: int
) -> None:
    """CONTRACT §3.1 ("another worker role seeing the same message reaches the same
    decision") and §3.2 (no event too late by the worker's clock goes into a raw row).

    Roles ``counters`` and ``store`` read the same message one second apart. Its event lies
    exactly 48 h before the store worker's clock (accepted) and 48 h + 1 s before the
    counting worker's (``too_late``: sent to the DLQ, never marked). The store worker waits
    ``FOLLOW_DEADLINE_S`` (30 s, a stall per chunk) for a marker that never comes, then
    decides "by the store alone" and writes a raw row of an event that is in the DLQ and in
    no counter."""
    edge = body("edge", now_ms - 48 * HOUR)
    chunk = [message(0, edge, now_ms - HOUR)]  # 47 h old by its log-append time

    async def scenario(redis: AsyncRedis) -> tuple[BatchOutcome, BatchOutcome]:
        counters = Worker(pipeline, clean_store, redis, role="counters")
        counted = await counters.at(now_ms + 1000).process(chunk)
        storer = Worker(pipeline, clean_store, redis, role="store")
        return counted, await storer.at(now_ms).process(chunk)

    counted, _ = run(pipeline, scenario)
    assert (counted.counted, counted.rejected) == (0, 1)
    assert reasons(pipeline) == ["too_late"]
    assert stored(clean_store) == []


def test_a_store_worker_stores_every_event_its_counters_counted_at_the_create_time_edge(
    pipeline: Pipeline, clean_store: Client, now_ms: int
) -> None:
    """CONTRACT §3.1 ("another worker role seeing the same message reaches the same
    decision"; every counted event has its raw row, so snapshots match the counters).

    A create-time record stamped 5 min ahead of the counting worker's clock is trusted
    (``decision_time_ms``: within 5 min, either side); its event, 5 min ahead of the record,
    is accepted and counted. The store worker reads it 1 ms earlier by its own clock: the
    record is 5 min + 1 ms ahead, not trusted, the clock decides, the event is 10 min ahead:
    ``future_timestamp``. A store-only worker publishes no letters, so the event is counted,
    in no raw row (no snapshot) and not in the DLQ."""
    created = now_ms + 5 * MINUTE
    chunk = [message(0, body("ahead", created + 5 * MINUTE), created, log_append=False)]

    async def scenario(redis: AsyncRedis) -> BatchOutcome:
        counters = Worker(pipeline, clean_store, redis, role="counters")
        counted = await counters.at(now_ms).process(chunk)
        assert counted.counted == 1
        storer = Worker(pipeline, clean_store, redis, role="store")
        return await storer.at(now_ms - 1).process(chunk)

    run(pipeline, scenario)
    assert stored(clean_store) == [("ahead", 0, 0)]


class SlowBroker(KafkaPublisher):
    """The real publisher, whose records reach the broker ``delay_s`` late (a slow broker:
    acknowledged within the 30 s ``DELIVERY_TIMEOUT_S``)."""

    def __init__(self, bootstrap: str, delay_s: float) -> None:
        super().__init__(bootstrap)
        self.delay_s = delay_s

    def send(
        self, topic: str, value: bytes | None, key: bytes | None = None,
        headers: Headers = (), partition: int | None = None,
    ) -> Future[Published]:  # fmt: skip
        late: Future[Published] = Future()

        def now() -> None:
            sent = KafkaPublisher.send(self, topic, value, key, headers, partition)
            sent.add_done_callback(lambda done: chain_future(done, late))

        threading.Timer(self.delay_s, now).start()
        return late


def chain_future(source: Future[Published], target: Future[Published]) -> None:
    error = source.exception()
    if error is None:
        target.set_result(source.result())
    else:
        target.set_exception(error)


def test_a_rejection_whose_publish_is_slow_is_not_published_twice(
    pipeline: Pipeline, clean_store: Client, now_ms: int
) -> None:
    """CONTRACT §3.1/§3.3 and ``consumers.publish_once``: each rejection is published to the
    DLQ exactly once, across workers ("a rejection another worker is publishing is waited
    for, never sent twice").

    A claim is deemed abandoned after ``DLQ_ABANDONED_MS`` (10 s), but its claimant waits
    up to ``DELIVERY_TIMEOUT_S`` (30 s) for the broker's answer. Worker A (slow broker: its
    letter lands after 12 s) still publishes when worker B (the partition's new owner after a
    rebalance) reads the same message 11 s after A's claim: B finds the claim abandoned and
    nothing in the DLQ partition yet, takes it over and publishes; A's letter lands too."""
    record = message(0, b"{", now_ms)  # invalid_json

    async def scenario(redis: AsyncRedis) -> None:
        old = Worker(pipeline, clean_store, redis)
        slow = SlowBroker(pipeline.settings.kafka_bootstrap, 12.0)
        old.ingest._dead_letters._dead_letters._publisher = slow
        publishing = asyncio.create_task(old.at(now_ms).process([record]))
        while not await redis.exists(keys.dead_lettered(0, 0, None)):  # A has claimed it
            await asyncio.sleep(0.05)
        new = Worker(pipeline, clean_store, redis)
        await new.at(now_ms + 11_000).process([record])
        await publishing

    run(pipeline, scenario)
    assert reasons(pipeline) == ["invalid_json"]


@pytest.mark.parametrize("age", [1000, 3 * HOUR], ids=["recent", "old"])
def test_a_store_worker_ahead_of_its_counters_stores_a_resend_once(
    pipeline: Pipeline, clean_store: Client, now_ms: int, monkeypatch: pytest.MonkeyPatch, age: int
) -> None:
    """CONTRACT §6 (one raw row per accepted event) with roles ``counters`` and ``store``.

    Found by the 1M-event soak (two raw rows): the counting workers are behind (killed,
    rebalancing) and role store waits ``FOLLOW_DEADLINE_S`` for their markers, then used to
    decide alone. The same event was published twice, to partitions 0 and 1. Role store
    reads the copy on 0 first and wrote it as new; the counting workers then read partition
    1 first and counted that copy; role store, reading it next, found the marker at its own
    position and wrote it too. Now an event within the markers' reach waits for them
    however long it takes, and an old one is decided by the store and the rows still in
    flight."""
    monkeypatch.setattr(consumers.ingest, "FOLLOW_DEADLINE_S", 0.3)
    at = now_ms - age
    on_0, on_1 = message(0, body("twice", at), now_ms), message(0, body("twice", at), now_ms,
                                                                  partition=1)  # fmt: skip

    async def scenario(redis: AsyncRedis) -> list[BatchOutcome]:
        counters = Worker(pipeline, clean_store, redis, role="counters")
        storer = Worker(pipeline, clean_store, redis, role="store")

        async def counting_behind() -> None:
            await asyncio.sleep(1.0)  # after role store's deadline
            await counters.at(now_ms).process([on_1])
            await counters.at(now_ms).process([on_0])

        behind = asyncio.create_task(counting_behind())
        outcomes = [
            await storer.at(now_ms).process([on_0]),
            await storer.at(now_ms).process([on_1]),
        ]
        await behind
        return outcomes

    run(pipeline, scenario)
    assert [event_id for event_id, _, _ in stored(clean_store)] == ["twice"]
