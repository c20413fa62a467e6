"""No message can stop ingest, and every decision is made once (CONTRACT §3, §3.1-§3.3).

Ingest runs in this process on messages read back from the real broker, against the real
Redis, the real DLQ topic and the real ClickHouse engine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from redis.asyncio import Redis as AsyncRedis

from consumers.batch import BatchOutcome, Message
from consumers.dead_letters import DeadLetters
from consumers.ingest import Ingest
from consumers.publish_once import OncePublisher
from consumers.raw_writer import SCHEMA, RawWriter
from consumers.rolling_counters import MARKED_NOW, RollingCounters
from consumers.rows import Position, RawRow
from consumers.store_leases import StoreLeases
from consumers.store_progress import StoreProgress
from tests.integration.harness import Pipeline
from voicemon import keys
from voicemon.event import PipelineEvent, validate_event
from voicemon.publisher import KafkaPublisher
from voicemon.redis_client import Primaries, Replication, ReplicationError
from voicemon.store import Client

HOUR = 3_600_000
T = TypeVar("T")


def now_ms() -> int:
    return int(time.time() * 1000)


def event(event_id: str, at: int, **fields: Any) -> dict[str, Any]:
    return {"event_id": event_id, "event_type": "artifact_received", "occurred_at": at,
            "artifact_id": f"a-{event_id}", **fields}  # fmt: skip


def stored_ids(store: Client) -> list[str]:
    rows = store.query("SELECT event_id FROM voicemon.pipeline_events ORDER BY event_id")
    return [event_id for (event_id,) in rows.result_rows]


def reasons(pipeline: Pipeline) -> list[str]:
    return sorted(headers["voicemon-reason"] for _, headers in pipeline.dlq())


def worker(
    pipeline: Pipeline,
    redis: AsyncRedis,
    store: Client | None,
    at_ms: int,
    *,
    counts: bool = True,
    replication: Replication | None = None,
) -> Ingest:
    """One worker's ``Ingest`` (role ``all``; ``counters`` without a store, ``store`` without
    ``counts``) on ``redis``, the real DLQ topic and ``store``, with the clock at ``at_ms``."""
    bootstrap = pipeline.settings.kafka_bootstrap
    dlq = DeadLetters(KafkaPublisher(bootstrap), bootstrap, pipeline.settings.dlq_topic)
    return Ingest(RollingCounters(redis), StoreProgress(redis), pipeline.settings.stages,
                  dead_letters=OncePublisher(redis, dlq),
                  raw_writer=None if store is None else RawWriter(store),
                  counts=counts, leases=StoreLeases(redis), replication=replication,
                  clock=lambda: at_ms / 1000)  # fmt: skip


def on_redis(pipeline: Pipeline, scenario: Callable[[AsyncRedis], Awaitable[T]]) -> T:
    """``scenario`` on a client of the test's Redis database."""

    async def main() -> T:
        redis = AsyncRedis.from_url(pipeline.env["VOICEMON_REDIS_URL"])
        try:
            return await scenario(redis)
        finally:
            await redis.aclose()

    return asyncio.run(main())


def store_pass(pipeline: Pipeline, store: Client, messages: list[Message], at_ms: int) -> Any:
    """The same messages through a store-only ingest (role ``store``) at another time."""

    async def process(redis: AsyncRedis) -> BatchOutcome:
        ingest = worker(pipeline, redis, store, at_ms, counts=False)
        return await asyncio.wait_for(ingest.process(messages), 20)

    return on_redis(pipeline, process)


def test_null_and_empty_records_are_invalid_json_forwarded_as_they_came(
    pipeline: Pipeline, clean_store: Client
) -> None:
    now = now_ms()
    topic = pipeline.settings.events_topic
    pipeline.publisher.send(topic, None, b"k-null")
    pipeline.publisher.send(topic, b"", b"k-empty")
    pipeline.publish([event("after", now - 1000)])
    pipeline.ingest(clean_store, pipeline.consume(), now)
    letters = pipeline.dlq()
    assert sorted(h["voicemon-reason"] for _, h in letters) == ["invalid_json"] * 2
    assert sorted((value or b"") for value, _ in letters) == [b"", b""]
    assert {value for value, _ in letters} == {None, b""}  # null stays null, empty stays empty
    assert stored_ids(clean_store) == ["after"]
    assert pipeline.realtime(now_ms=now)["artifacts_received"] == 1


# Every column of the raw table, with the extreme values the validator accepts for it and
# one it refuses beyond them (None: the column is filled by ingest, not from the event).
EXTREMES: dict[str, tuple[list[Any], list[Any]] | None] = {
    "event_id": (["x", "e" * 128], ["", "e" * 129]),
    "event_type": (["artifact_received", "artifact_completed"], ["artifact_lost"]),
    "occurred_at": (["now-48h", "now+5m"], ["now-48h-1", "now+5m+1"]),
    "artifact_id": (["a", "a" * 128], ["", "a" * 129]),
    "organization_id": ([None, "o" * 128], ["o" * 129, "o/1"]),
    "stage": ([None], ["unknown-stage"]),
    "duration_ms": ([0, 86_400_000, None], [-0.001, 86_400_000.001]),
    "ai_cost_usd": ([0, 10_000, None], [-1, 10_000.01]),
    "error_code": ([None, "E" * 128], ["E" * 129]),
    "schema_version": ([1, 65_535], [0, 65_536, -1, 70_000]),
    "kafka_partition": None,
    "kafka_offset": None,
    "batch_index": None,
    "ingested_at": None,
}


def _value(column: str, value: Any, now: int) -> Any:
    if column != "occurred_at":
        return value
    offsets = {"now-48h": -48 * HOUR, "now+5m": 300_000, "now-48h-1": -48 * HOUR - 1,
               "now+5m+1": 300_001}  # fmt: skip
    return now + offsets[value]


def test_every_raw_column_is_bounded_by_the_validator(clean_store: Client) -> None:
    declared = {name for (name,) in clean_store.query(
        "SELECT name FROM system.columns WHERE database = 'voicemon' AND table = 'pipeline_events'"
    ).result_rows}  # fmt: skip
    assert declared == set(EXTREMES) == set(SCHEMA.names)  # a new column needs its bounds here
    now = now_ms()
    stages = frozenset({"transcription"})
    accepted: list[RawRow] = []
    for column, bounds in EXTREMES.items():
        if bounds is None:
            continue
        good, bad = bounds
        for value in bad:
            body = event("b", now) | {column: _value(column, value, now)}
            assert not isinstance(validate_event(body, now_ms=now, stages=stages),
                                  PipelineEvent), (column, value)  # fmt: skip
        for value in good:
            body = event(f"{column}-{len(accepted)}", now) | {column: _value(column, value, now)}
            verdict = validate_event(body, now_ms=now, stages=stages)
            assert isinstance(verdict, PipelineEvent), (column, value, verdict)
            accepted.append(RawRow(verdict, Position(2**32 - 1, 2**63 - 1, 999)))
    RawWriter(clean_store).write(accepted)  # every accepted extreme is storable as it is
    # (the row exactly 48 h old may already be gone: the raw table's TTL drops it)
    assert len(stored_ids(clean_store)) >= len(accepted) - 1


def test_a_refused_row_goes_to_the_dlq_as_unstorable_and_its_neighbours_are_counted(
    pipeline: Pipeline, clean_store: Client
) -> None:
    now = now_ms()
    # A constraint the validator does not know: the store refuses one row for its content.
    clean_store.command(
        "ALTER TABLE voicemon.pipeline_events ADD CONSTRAINT no_poison CHECK artifact_id != 'bad'"
    )
    try:
        batch = [event(f"n{i}", now - 1000, organization_id="org-p") for i in range(6)]
        batch[3]["artifact_id"] = "bad"
        pipeline.publish([batch, event("single", now - 1000, organization_id="org-p")])
        messages = pipeline.consume()
        outcome = pipeline.ingest(clean_store, messages, now)
        assert outcome.unstorable == 1
        assert stored_ids(clean_store) == ["n0", "n1", "n2", "n4", "n5", "single"]
        assert pipeline.realtime("org-p", now_ms=now)["artifacts_received"] == 6
        [(value, headers)] = pipeline.dlq()
        assert headers["voicemon-reason"] == "unstorable"
        assert headers["voicemon-batch-index"] == "3" and orjson.loads(value) == batch[3]
        # A replay changes nothing: no second letter, nothing counted or taken back twice.
        again = pipeline.ingest(clean_store, messages, now + 1000)
        assert (again.counted, again.unstorable) == (0, 0)
        assert pipeline.realtime("org-p", now_ms=now)["artifacts_received"] == 6
        assert len(pipeline.dlq()) == 1
    finally:
        clean_store.command("ALTER TABLE voicemon.pipeline_events DROP CONSTRAINT no_poison")


class _FailoverAtConfirm(Replication):
    """The real ``Replication`` (no replicas asked) whose ``confirm`` number ``failing`` of a
    pass raises, as after a Redis failover that lost the writes before it."""

    def __init__(self, redis: AsyncRedis, failing: int) -> None:
        super().__init__(redis, replicas=0, timeout_ms=10)
        self._calls = 0
        self._failing = failing

    async def confirm(self, primaries: Primaries) -> None:
        self._calls += 1
        if self._calls == self._failing:
            raise ReplicationError("the Redis primary changed during the batch (a failover)")
        await super().confirm(primaries)


def test_an_unstorable_letter_is_sent_only_under_a_replicated_claim(
    pipeline: Pipeline, clean_store: Client
) -> None:
    """The store step's confirms: after counting (1), before the ``unstorable`` letter's send
    (2), before the offsets commit (3). A failover at the second sends nothing: otherwise its
    retry, finding neither the claim nor the sent mark on the new primary, sends it again."""
    now = now_ms()
    clean_store.command(
        "ALTER TABLE voicemon.pipeline_events ADD CONSTRAINT no_poison CHECK artifact_id != 'bad'"
    )
    try:
        pipeline.publish([[event("u0", now - 1000), event("u1", now - 1000, artifact_id="bad")]])
        messages = pipeline.consume()

        async def main(redis: AsyncRedis) -> tuple[list[Any], BatchOutcome]:
            ingest = worker(pipeline, redis, clean_store, now,
                            replication=_FailoverAtConfirm(redis, 2))  # fmt: skip
            with pytest.raises(ReplicationError):
                await ingest.process(messages)
            before_retry = pipeline.dlq()  # not sent: its claim may not survive the failover
            return before_retry, await ingest.process(messages)  # the worker's retry

        before_retry, retried = on_redis(pipeline, main)
        assert before_retry == []
        assert retried.unstorable == 1
        assert [h["voicemon-reason"] for _, h in pipeline.dlq()] == ["unstorable"]
        assert pipeline.realtime(now_ms=now)["artifacts_received"] == 1
    finally:
        clean_store.command("ALTER TABLE voicemon.pipeline_events DROP CONSTRAINT no_poison")


def test_a_store_outage_is_not_mistaken_for_a_bad_row(
    pipeline: Pipeline, clean_store: Client
) -> None:
    now = now_ms()
    pipeline.publish([[event(f"o{i}", now - 1000) for i in range(5)]])
    messages = pipeline.consume()
    clean_store.command("DETACH TABLE voicemon.pipeline_events")  # the store cannot take rows
    try:
        with pytest.raises(DatabaseError):
            pipeline.ingest(clean_store, messages, now)
    finally:
        clean_store.command("ATTACH TABLE voicemon.pipeline_events")
    assert pipeline.dlq() == []  # an outage dead-letters nothing
    retried = pipeline.ingest(clean_store, messages, now + 5000)  # the retry, after the outage
    assert (retried.counted, retried.recovered, retried.unstorable) == (0, 5, 0)
    assert stored_ids(clean_store) == [f"o{i}" for i in range(5)]
    assert pipeline.realtime(now_ms=now)["artifacts_received"] == 5


def test_a_retry_and_a_store_pass_decide_as_the_first_pass(
    pipeline: Pipeline, clean_store: Client
) -> None:
    now = now_ms()
    ahead = event("ahead", now + 6 * 60_000)  # future_timestamp at the record's time
    old = event("old", now - 48 * HOUR + 300_000)  # accepted, minutes from too_late
    pipeline.publish([ahead, old])
    messages = pipeline.consume()
    first = pipeline.ingest(clean_store, messages, now)
    assert (first.counted, first.rejected) == (1, 1)
    # The retry after an outage, minutes later: the record's time decides, not the clock.
    retry = pipeline.ingest(clean_store, messages, now + 10 * 60_000)
    assert (retry.counted, retry.rejected) == (0, 1)
    assert reasons(pipeline) == ["future_timestamp"]
    # A store-only worker two minutes later: the same decisions, made alone, without waiting.
    started = time.monotonic()
    store_pass(pipeline, clean_store, messages, now + 2 * 60_000)
    assert time.monotonic() - started < 10
    assert stored_ids(clean_store) == ["old"]
    assert reasons(pipeline) == ["future_timestamp"]


def test_duplicates_older_than_the_markers_are_caught_by_the_store(
    pipeline: Pipeline, clean_store: Client
) -> None:
    now = now_ms()
    body = event("twice", now - 3 * HOUR, organization_id="org-t")
    pipeline.publish([body])
    pipeline.ingest(clean_store, pipeline.consume(), now)
    # Three hours on, Redis has forgotten the event (markers live about an hour and a half).
    pipeline.redis.flushdb()
    pipeline.publish([body])
    later = pipeline.ingest(clean_store, pipeline.consume()[1:], now + 3 * HOUR)
    assert (later.counted, later.duplicates) == (0, 1)
    assert stored_ids(clean_store) == ["twice"]
    assert set(pipeline.redis.keys("vm:seen:*")) == set()  # nothing new was marked


def test_the_scripts_markers_live_where_voicemon_keys_names_them(pipeline: Pipeline) -> None:
    """The claim script names marker hashes itself; they are where ``voicemon.keys`` (and the
    settle scripts, which take them from there) looks, in every generation and group."""
    at = now_ms()
    generation = keys.seen_generation(at)
    pipeline.redis.set(keys.seen_shards(generation - 1), 2048)  # an older generation exists

    new = [(f"e-{i}", f"0:{i}:0") for i in range(50)]
    retried = [*new[:2], ("e-new", "0:99:0")]

    async def count() -> tuple[list[str | None] | None, list[str | None] | None]:
        redis = AsyncRedis.from_url(pipeline.env["VOICEMON_REDIS_URL"])
        try:
            counters = RollingCounters(redis)
            return await counters.claim(new, at), await counters.claim(retried, at)
        finally:
            await redis.aclose()

    first, again = asyncio.run(count())
    assert first is None  # every group marked
    # Refused, and says who counted what; "e-new" is claimed unless its shard group held one
    # of the others (a group is claimed whole or not at all).
    group_of = {event_id: keys.seen_group(keys.marker(event_id)) for event_id, _ in retried}
    refused = group_of["e-new"] in (group_of["e-0"], group_of["e-1"])
    assert again == ["0:0:0", "0:1:0", None if refused else MARKED_NOW]
    shards = int(pipeline.redis.get(keys.seen_shards(generation)) or 0)
    for i in range(50):
        found = keys.marker(f"e-{i}")
        assert pipeline.redis.hget(keys.seen_hash(generation, shards, found), found.field) == (
            f"0:{i}:0".encode()
        )
    # A marker found in the older generation (its own shard count) stops a count as well.
    older = keys.marker("e-old")
    pipeline.redis.hset(keys.seen_hash(generation - 1, 2048, older), older.field, "3:3:3")

    async def count_old() -> list[str | None] | None:
        redis = AsyncRedis.from_url(pipeline.env["VOICEMON_REDIS_URL"])
        try:
            return await RollingCounters(redis).claim([("e-old", "0:7:0")], at)
        finally:
            await redis.aclose()

    assert asyncio.run(count_old()) == ["3:3:3"]


def test_a_batch_crowding_one_marker_hash_is_counted_whole(pipeline: Pipeline) -> None:
    """Thousands of a batch's markers in one hash (a generation of one shard here; hostile
    ids could crowd one too) are read and written in slices, none lost."""
    at = now_ms()
    pipeline.redis.set(keys.seen_shards(keys.seen_generation(at)), 1)
    new = [(f"crowd-{i}", f"1:{i}:0") for i in range(4_500)]

    async def count() -> tuple[list[str | None] | None, list[str | None] | None]:
        redis = AsyncRedis.from_url(pipeline.env["VOICEMON_REDIS_URL"])
        try:
            counters = RollingCounters(redis)
            return await counters.claim(new, at), await counters.claim(new, at)
        finally:
            await redis.aclose()

    first, again = asyncio.run(count())
    assert first is None
    assert again == [position for _, position in new]  # marked, then found
    generation = keys.seen_generation(at)
    hashes = [f"vm:seen:{keys.seen_tag(g)}:{generation}:0" for g in range(keys.SEEN_GROUPS)]
    assert sum(pipeline.redis.hlen(name) for name in hashes) == 4_500


class _FailoverAtFirstConfirm(Replication):
    """Replicas wanted; the first ``confirm`` finds that the primary failed over and that the
    new one holds none of the writes made since the batch began (FLUSHDB: nothing the
    counting worker wrote had reached a replica), and raises, as the real one does."""

    def __init__(self, redis: AsyncRedis) -> None:
        super().__init__(redis, replicas=1, timeout_ms=10)
        self._redis = redis
        self._calls = 0

    async def primaries(self) -> Primaries:
        return ("old-primary",)

    async def confirm(self, primaries: Primaries) -> None:
        self._calls += 1
        if self._calls == 1:
            await self._redis.flushdb()
            raise ReplicationError("the Redis primary changed during the batch (a failover)")


def test_a_store_worker_writes_no_row_on_markers_a_failover_lost(
    pipeline: Pipeline, clean_store: Client
) -> None:
    """A store-only worker follows a counting worker's seen-marker. If it wrote the row before
    the marker reached a replica, a failover losing the marker let a copy of the event in
    another partition be counted on the new primary, and stored too: two raw rows."""
    now = now_ms()
    value = orjson.dumps(event("dup", now - 1000))
    first = Message(partition=0, offset=10, key=b"a", value=value, timestamp_ms=now)
    copy = Message(partition=1, offset=20, key=b"b", value=value, timestamp_ms=now)

    async def main(redis: AsyncRedis) -> None:
        def ingest(counts: bool, replication: Replication | None = None) -> Ingest:
            return worker(pipeline, redis, None if counts else clean_store, now, counts=counts,
                          replication=replication)  # fmt: skip

        await ingest(True).count([first])  # counted; its own WAIT not returned yet
        with pytest.raises(ReplicationError):  # the store worker meets the failover
            await ingest(False, _FailoverAtFirstConfirm(redis)).process([first])
        # On the new primary the copy is counted first; the retry of the first finds it.
        await ingest(True).process([copy])
        retried = await ingest(True).process([first])
        assert (retried.counted, retried.duplicates) == (0, 1)
        await ingest(False).process([first])  # the store worker's retry
        await ingest(False).process([copy])

    on_redis(pipeline, main)
    assert pipeline.realtime(now_ms=now)["artifacts_received"] == 1
    assert stored_ids(clean_store) == ["dup"]


def test_a_failed_chunk_leaves_nothing_decided_in_flight(
    pipeline: Pipeline, clean_store: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store-only worker decides an event beyond the markers' reach alone (no counting
    worker marked it, the store lacks it) and holds it as in flight until stored. If the
    chunk fails at the replicas' wait, it is not in flight: left behind, the retry took it for
    the row's owner (a replayed row, never forgotten), and a later copy for a duplicate."""
    monkeypatch.setattr("consumers.ingest.FOLLOW_DEADLINE_S", 0.0)
    now = now_ms()
    old = Message(partition=0, offset=5, key=b"k", timestamp_ms=now,
                  value=orjson.dumps(event("old", now - 3 * HOUR)))  # fmt: skip

    async def main(redis: AsyncRedis) -> tuple[dict[str, str], BatchOutcome]:
        ingest = worker(pipeline, redis, clean_store, now, counts=False,
                        replication=_FailoverAtFirstConfirm(redis))  # fmt: skip
        with pytest.raises(ReplicationError):
            await ingest.process([old])
        return dict(ingest._deciding), await ingest.process([old])

    left, retried = on_redis(pipeline, main)
    assert left == {}
    assert (retried.counted, retried.recovered) == (1, 0)  # decided anew: new, not replayed
    assert stored_ids(clean_store) == ["old"]
