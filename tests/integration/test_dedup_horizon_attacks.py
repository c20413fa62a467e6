"""The dedup horizon's seams, as the break-it review of 2026-12-03 attacked them (each was a
finding on aef92cd): writers' clocks behind the readers', hostile ids, and the raw TTL's
second against the late rule's millisecond."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis as AsyncRedis

from consumers.batch import BatchOutcome
from consumers.dead_letters import DeadLetters
from consumers.ingest import Ingest
from consumers.publish_once import OncePublisher
from consumers.raw_writer import RawWriter
from consumers.rolling_counters import RollingCounters
from consumers.store_leases import StoreLeases
from consumers.store_progress import StoreProgress
from consumers.stored_ids import StoredIds, stored_positions
from tests.integration.harness import Pipeline
from tests.integration.test_ingest_seams import (  # noqa: F401  (fixture)
    HOUR,
    MINUTE,
    body,
    message,
    now_ms,
    run,
    stored,
)
from voicemon.publisher import KafkaPublisher
from voicemon.store import Client


class Worker:
    """A worker as runtime/worker.py builds it (with its stored-ids filter), whose clock
    reads the true time plus ``skew_ms``."""

    def __init__(
        self, pipeline: Pipeline, store: Client, redis: AsyncRedis, role: str = "all",
        skew_ms: int = 0,
    ) -> None:  # fmt: skip
        self.true_ms = 0
        self.skew_ms = skew_ms
        bootstrap = pipeline.settings.kafka_bootstrap
        dlq = DeadLetters(KafkaPublisher(bootstrap), bootstrap, pipeline.settings.dlq_topic)
        writer = None if role == "counters" else RawWriter(store)
        self.ingest = Ingest(
            RollingCounters(redis), StoreProgress(redis), pipeline.settings.stages,
            dead_letters=OncePublisher(redis, dlq, clock=self.clock), raw_writer=writer,
            stored_ids=StoredIds(store) if writer is not None else None,
            counts=role != "store", leases=StoreLeases(redis), clock=self.clock,
        )  # fmt: skip

    def clock(self) -> float:
        return (self.true_ms + self.skew_ms) / 1000

    def at(self, true_ms: int) -> Ingest:
        self.true_ms = true_ms
        return self.ingest


# -- a writer whose clock is behind: its ids reach every filter (FEED_OVERLAP_MS) ---------


@pytest.mark.parametrize("skew_min", [0, 10, 17, 18, 30, 55])
def test_conflicting_copy_after_markers_with_writer_clock_behind(
    pipeline: Pipeline,
    clean_store: Client,
    now_ms: int,  # noqa: F811
    skew_min: int,
) -> None:
    """Worker A (clock ``skew_min`` behind) stores the first copy; worker B (true clock) has
    been running and reads its filter every 5 minutes as chunks come. 130 minutes later a
    conflicting copy dated now reaches B on another partition (after a rebalance, say).
    CONTRACT §3.1: at most one raw row per event_id; docs/reliability.md: a conflicting copy
    within the 49 h horizon adds no raw row. Failed from 18 minutes with a 15-minute
    overlap."""
    start = now_ms - now_ms % (20 * MINUTE) + MINUTE
    first = body("skewed", start)
    later = body("skewed", start + 130 * MINUTE - 1000, event_type="artifact_failed")

    async def scenario(redis: AsyncRedis) -> BatchOutcome:
        a = Worker(pipeline, clean_store, redis, skew_ms=-skew_min * MINUTE)
        b = Worker(pipeline, clean_store, redis)
        offset = 0
        await b.at(start - MINUTE).process([message(offset, body("warm", start - MINUTE),
                                                    start - MINUTE, partition=2)])  # fmt: skip
        await a.at(start).process([message(0, first, start)])
        for t in range(start, start + 130 * MINUTE, MINUTE):  # B busy with other events
            offset += 1
            await b.at(t).process([message(offset, body(f"other-{offset}", t), t, partition=2)])
        t = start + 130 * MINUTE
        return await b.at(t).process([message(0, later, t, partition=1)])

    outcome = run(pipeline, scenario)
    rows = [row for row in stored(clean_store) if row[0] == "skewed"]
    assert rows == [("skewed", 0, 0)], f"outcome {outcome}"


# -- hostile ids in the store lookup ----------------------------------------------------


HOSTILE = ["a\x00b", "back\\slash", "quo'te", 'dq"', "{x:String}", "%s", "\U0001f600" * 128,
           "é" * 128, "tab\tnl\n", "\u202e", " lead", "trail "]  # fmt: skip


def test_hostile_ids_are_found_by_the_lookup_and_the_filter(clean_store: Client) -> None:
    from tests.integration.test_stored_ids import M, store_at

    store_at(clean_store, M, *HOSTILE)
    found = stored_positions(clean_store, [*HOSTILE, "a", "back\\\\slash"], M + MINUTE)
    assert sorted(found) == sorted(HOSTILE)
    filt = StoredIds(clean_store)
    filt.refresh(M + 3 * MINUTE)
    assert filt.may_hold(HOSTILE) == [True] * len(HOSTILE)


# -- the raw TTL covers the late rule's milliseconds (migration 0006) ---------------------


def test_a_replay_in_the_ttls_last_second_finds_its_row(
    pipeline: Pipeline, clean_store: Client
) -> None:
    """The raw TTL was ``toDateTime(occurred_at) + 48 h``: toDateTime drops the milliseconds,
    so the row of an event at S.999 could be deleted from S + 48 h on, while the late rule
    still accepts it until S.999 + 48 h, and a replay in that gap wrote the row again. With
    a second more, the row is still there and the replay writes nothing (CONTRACT §3.1)."""
    import asyncio
    import time

    real = int(time.time() * 1000)
    s = real // 1000 * 1000 - 48 * HOUR + 2000  # whole second; S + 48 h is 1-2 s ahead
    event = body("ttl-gap", s + 999)
    msg = message(0, event, s + 999)

    async def scenario(redis: AsyncRedis) -> tuple[BatchOutcome, BatchOutcome]:
        worker = Worker(pipeline, clean_store, redis)
        first = await worker.at(s + 999).process([msg])
        assert stored(clean_store) == [("ttl-gap", 0, 0)]
        await asyncio.sleep((s + 48 * HOUR + 200 - time.time() * 1000) / 1000)
        clean_store.command("OPTIMIZE TABLE voicemon.pipeline_events FINAL")  # the TTL runs
        assert stored(clean_store) == [("ttl-gap", 0, 0)], "the TTL dropped the row early"
        replay = await worker.at(s + 48 * HOUR + 500).process([msg])  # not too late by the clock
        return first, replay

    _first, replay = run(pipeline, scenario)
    feed = clean_store.query("SELECT count() FROM voicemon.stored_event_ids").result_rows
    assert (replay.recovered, feed) == (0, [(1,)]), f"the replay inserted its row again: {replay}"


def test_an_event_accepted_at_the_48h_edge_gets_a_raw_row(
    pipeline: Pipeline, clean_store: Client
) -> None:
    """CONTRACT §3.2: an event older than 48 h is too_late, "so that no event is accepted
    into a raw row that its TTL is about to drop". An event at S.999 read at S + 48 h + 0.3 s
    (worker clock = server clock) is accepted (it is 47 h 59 m 59.3 s old) but its TTL,
    toDateTime(occurred_at) + 48 h = S + 48 h, had passed: the engine dropped the row at
    insert (accepted, counted, in no raw row and no DLQ). A second more keeps it."""
    import asyncio
    import time

    real = int(time.time() * 1000)
    s = real // 1000 * 1000 - 48 * HOUR + 2000
    event = body("edge-48h", s + 999)

    async def scenario(redis: AsyncRedis) -> BatchOutcome:
        await asyncio.sleep((s + 48 * HOUR + 300 - time.time() * 1000) / 1000)
        worker = Worker(pipeline, clean_store, redis)
        return await worker.at(s + 48 * HOUR + 300).process([message(0, event, s + 999)])

    outcome = run(pipeline, scenario)
    assert (outcome.counted, stored(clean_store)) == (1, [("edge-48h", 0, 0)]), outcome
