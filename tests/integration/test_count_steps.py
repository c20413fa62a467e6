"""The two steps of counting a batch (``consumers.rolling_counters``: claim the markers per
shard group, then add the increments per counter scope) against the real Redis: a crash
between them, a replay cut into other chunks and two workers counting one chunk at once all
end with every event counted once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from redis.asyncio import Redis as AsyncRedis

from consumers.batch import Message
from consumers.dead_letters import DeadLetters
from consumers.ingest import Ingest
from consumers.publish_once import OncePublisher
from consumers.rolling_counters import RollingCounters
from consumers.store_progress import StoreProgress
from tests.integration.harness import Pipeline
from tests.integration.test_ingest import realtime_counts, reference_counts
from voicemon import keys
from voicemon.publisher import KafkaPublisher
from voicemon.store import Client


def now_ms() -> int:
    return int(time.time() * 1000)


def events(count: int, at: int, prefix: str = "e") -> list[dict[str, Any]]:
    return [
        {"event_id": f"{prefix}-{i}", "event_type": "artifact_received", "occurred_at": at,
         "artifact_id": f"a-{i}", "organization_id": f"org-{i % 3}"}
        for i in range(count)
    ]  # fmt: skip


def assert_counted_once(pipeline: Pipeline, published: list[dict[str, Any]], at: int) -> None:
    stages = pipeline.settings.stages
    assert realtime_counts(pipeline.realtime(now_ms=at)) == reference_counts(published, stages)
    for org in ("org-0", "org-1", "org-2"):
        mine = [e for e in published if e["organization_id"] == org]
        view = realtime_counts(pipeline.realtime(org, now_ms=at))
        assert view == reference_counts(mine, stages)


def claim_only(pipeline: Pipeline, messages: list[Message], at: int) -> None:
    """What a worker that crashed after the claims and before any increment left: the batch's
    events marked with their positions, nothing counted."""

    async def claim() -> None:
        redis = AsyncRedis.from_url(pipeline.env["VOICEMON_REDIS_URL"])
        try:
            marks = []
            for message in messages:
                value = orjson.loads(message.value or b"")
                for index, item in enumerate(value if isinstance(value, list) else [value]):
                    batch_index = index if isinstance(value, list) else 0
                    position = f"{message.partition}:{message.offset}:{batch_index}"
                    marks.append((item["event_id"], position))
            assert await RollingCounters(redis).claim(marks, at) is None
        finally:
            await redis.aclose()

    asyncio.run(claim())


def test_a_crash_between_the_claims_and_the_increments_is_counted_once_on_replay(
    pipeline: Pipeline, clean_store: Client
) -> None:
    at = now_ms()
    published = events(60, at - 1000)
    pipeline.publish(published[i : i + 6] for i in range(0, 60, 6))
    messages = pipeline.consume()
    claim_only(pipeline, messages, at)
    assert pipeline.realtime(now_ms=at)["artifacts_received"] == 0  # marked, not counted
    outcome = pipeline.ingest(clean_store, messages, at)
    assert (outcome.counted, outcome.recovered) == (0, 60)  # its own marks: a replay
    assert_counted_once(pipeline, published, at)
    pipeline.ingest(clean_store, messages, at + 1000)  # and a replay of the replay
    assert_counted_once(pipeline, published, at)


def test_a_replay_cut_into_other_chunks_adds_only_what_is_missing(
    pipeline: Pipeline, clean_store: Client
) -> None:
    at = now_ms()
    published = events(90, at - 1000)
    pipeline.publish(published[i : i + 3] for i in range(0, 90, 3))
    messages = sorted(pipeline.consume(), key=lambda m: (m.partition, m.offset))
    first = [m for m in messages if m.offset < 3]  # each partition's first three messages
    pipeline.ingest(clean_store, first, at)
    # The replay starts before what was counted and goes beyond it, in one chunk and then
    # with its middle again: each scope adds each message's events once.
    pipeline.ingest(clean_store, messages, at)
    middle = [m for m in messages if 1 <= m.offset <= 5]
    pipeline.ingest(clean_store, middle, at)
    assert_counted_once(pipeline, published, at)
    applied = pipeline.redis.hgetall(keys.applied("{p}"))
    ends = pipeline.end_offsets(pipeline.settings.events_topic)
    assert {int(p): int(o) for p, o in applied.items()} == {
        p: end - 1 for p, end in ends.items() if end
    }


def test_two_workers_counting_one_chunk_at_once_count_it_once(pipeline: Pipeline) -> None:
    """A handover: the old owner and the new one (role ``counters``) count the same chunk at
    the same time, each on its own connection."""
    at = now_ms()
    published = events(400, at - 1000)
    pipeline.publish(published[i : i + 10] for i in range(0, 400, 10))
    messages = pipeline.consume()

    async def both() -> list[int]:
        url = pipeline.env["VOICEMON_REDIS_URL"]
        clients = [AsyncRedis.from_url(url), AsyncRedis.from_url(url)]
        try:
            bootstrap = pipeline.settings.kafka_bootstrap
            workers = [
                Ingest(RollingCounters(redis), StoreProgress(redis), pipeline.settings.stages,
                       dead_letters=OncePublisher(redis, DeadLetters(
                           KafkaPublisher(bootstrap), bootstrap, pipeline.settings.dlq_topic)),
                       raw_writer=None, clock=lambda: at / 1000)
                for redis in clients
            ]  # fmt: skip
            counted = await asyncio.gather(*(worker.count(messages) for worker in workers))
            return [len(one.classified.new) for one in counted]
        finally:
            for redis in clients:
                await redis.aclose()

    new = asyncio.run(both())
    assert sum(new) == 400  # each event claimed by one of them
    assert_counted_once(pipeline, published, at)


def test_a_worker_whose_clock_is_behind_leaves_the_applied_offsets_of_the_others(
    pipeline: Pipeline, clean_store: Client
) -> None:
    """Found by a break-it review: worker A counts partition 0's chunk, worker B, whose clock
    is 2 h 10 min behind Redis's, counts the other partitions into the same scopes. Were the
    applied offsets to expire at an instant of the writer's clock, B's add would end them,
    A's with them, and A's chunk replayed would count again; they live by Redis's clock."""
    at = now_ms()
    published = events(60, at - 1000, prefix="skew")
    pipeline.publish(published[i : i + 6] for i in range(0, 60, 6))
    messages = pipeline.consume()
    first = [m for m in messages if m.partition == 0]
    others = [m for m in messages if m.partition != 0]
    assert first and others
    pipeline.ingest(clean_store, first, at)  # worker A
    pipeline.ingest(clean_store, others, at - 2 * 3_600_000 - 10 * 60_000)  # worker B, behind
    assert b"0" in pipeline.redis.hgetall(keys.applied("{p}"))
    pipeline.ingest(clean_store, first, at + 1000)  # A's chunk replayed (a crash before commit)
    assert_counted_once(pipeline, published, at)
