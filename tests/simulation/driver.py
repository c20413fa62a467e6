"""Runs a schedule through the real ingest core and window closer over virtual time, and
compares what they did with the oracle.

Real parts: ``Ingest`` (roles ``all``, or ``counters`` + ``store``), ``OncePublisher``,
``RollingCounters``, ``StoreProgress``, ``WindowState``, ``RawWriter``, ``WindowCloser``, the
real-time read and the range queries, against a real redis-server and the real embedded
store. Recorded, not real: the DLQ's Kafka I/O (``DlqRecorder``, same interface as
``DeadLetters``) and the closer's publish function (a recorder that can refuse or crash).

Virtual time. Every component reads one ``VirtualClock``. Redis cannot be told the time, so
keys are set with PEXPIREAT from the virtual clock (virtual time runs ahead of the real one,
so those instants are in Redis's future), and after every advance of the clock a reaper
deletes the keys whose PEXPIRETIME is at or before virtual now (SCAN + PEXPIRETIME).
Keys set with a relative TTL (the closer's lease, a DLQ claim) end at once under that rule;
they only fence concurrent actors, and the simulation runs one step at a time. Store leases,
the counter scopes' applied offsets and take-back markers are left to Redis
(``REDIS_CLOCK_KEYS``). The store's
48 h TTL runs on the real clock, so the driver applies it itself: once the last row of an
hourly part is 48 h old by virtual time, the hour's rows are deleted (as
``ttl_only_drop_parts`` drops the whole part). Snapshot retention (7 and 90 days) lies
beyond a run and is not emulated.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from confluent_kafka import KafkaError
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

import consumers.ingest
from aggregators import snapshot_reads
from aggregators.closing.closer import CloserConfig, WindowCloser
from aggregators.closing.window_state import Pointers, WindowState
from aggregators.query import queries
from aggregators.query.realtime import read_realtime
from consumers.batch import Message
from consumers.dead_letters import DeadLetters
from consumers.ingest import Counted, Ingest
from consumers.publish_once import OncePublisher
from consumers.raw_writer import RawWriter
from consumers.rolling_counters import RollingCounters
from consumers.rows import RawRow
from consumers.store_leases import StoreLeases
from consumers.store_progress import StoreProgress
from consumers.stored_ids import StoredIds
from tests import reference
from tests.simulation import oracle
from tests.simulation.oracle import COUNTS, Window
from tests.simulation.schedule import OVERLAP_MS, PARTITIONS, STAGES, Chunk, Schedule
from voicemon import keys, telemetry
from voicemon.publisher import DeliveryError, Published, PublishFailed
from voicemon.settings import DEFAULT_STAGES
from voicemon.store import Client

HOUR_MS = reference.HOUR_MS
SCOPES = (None, "org-a", "org.c:1")  # real-time reads: the platform and two organizations
TABLES = ("pipeline_events", "stored_event_ids", "snapshots", "stage_snapshots")
# A store-only worker waits this long (real seconds) for the counters' markers; the
# simulation always counts first, so a wait is itself a finding and need not take 30 s.
FOLLOW_DEADLINE_S = 2.0
# Store leases fence concurrent writers in real time (renewed by a task, lapsing after
# LEASE_MS): the reaper leaves them to Redis; a crashed worker's are deleted when it dies.
LEASES = keys.store_lease(0)[:-1].encode()
# Keys with a time to live by Redis's own clock that outlive what a run can observe: a
# scope's applied offsets (102 min after its last add: a replay later than that finds no
# seen-marker either, and its event is out of the real-time window) and take-back markers.
# The reaper would end them at once (virtual time runs days ahead); it leaves them to Redis.
REDIS_CLOCK_KEYS = (
    LEASES,
    keys.applied("")[:-1].encode(),
    keys.decided("")[:-1].encode(),
    keys.taken_back("", "")[:-2].encode(),
)
HANDOVER_WAIT_S = 1.0  # real seconds a new owner's replay may take before the old store ends


class SimulatedCrash(BaseException):
    """The process of the step dies here (no ``except Exception`` of the code under test
    may survive it, as none survives a SIGKILL)."""


class VirtualClock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


@dataclass(slots=True)
class Letter:
    source: tuple[int, int, int | None]
    reason: str
    payload: bytes | None
    headers: dict[str, str]
    at_ms: int  # when it was appended (by the clock of the run)


class _RecordingProducer:
    """The Kafka producer under ``DeadLetters``: each record appended to its DLQ partition and
    acknowledged at once, or refused for its size (value plus headers over ``max_bytes``)."""

    def __init__(self, dlq: DlqRecorder, max_bytes: int | None) -> None:
        self._dlq = dlq
        self._max_bytes = max_bytes

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]],
        partition: int,
    ) -> Future[Published]:
        sent: Future[Published] = Future()
        size = len(value or b"") + sum(len(k) + len(v) for k, v in headers)
        if self._max_bytes is not None and size > self._max_bytes:
            sent.set_exception(PublishFailed(topic, "Broker: Message size too large",
                                             KafkaError.MSG_SIZE_TOO_LARGE))  # fmt: skip
            return sent
        named = {k: bytes(v).decode(errors="replace") for k, v in headers}
        batch_index = named.get("voicemon-batch-index")
        source = (int(named["voicemon-source-partition"]), int(named["voicemon-source-offset"]),
                  None if batch_index is None else int(batch_index))  # fmt: skip
        records = self._dlq.records[partition]
        at_ms = int(self._dlq.clock() * 1000)
        records.append(Letter(source, named["voicemon-reason"], value, named, at_ms))
        sent.set_result(Published(topic, partition, len(records) - 1))
        return sent


class DlqRecorder(DeadLetters):
    """The real ``DeadLetters`` (its envelopes, refusals and per-letter deliveries) over a
    recording producer and reader instead of Kafka: each DLQ partition is a list."""

    def __init__(
        self,
        partitions: int = PARTITIONS,
        max_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self._topic = "simulated.dlq"
        self._partitions = partitions
        self._in_flight = {}
        self._publisher = _RecordingProducer(self, max_bytes)  # type: ignore[assignment]
        self.records: list[list[Letter]] = [[] for _ in range(partitions)]
        self._read = {}
        self._reading = threading.RLock()

    def end_offset(self, partition: int) -> int:
        return len(self.records[partition])

    def _offset_at(self, partition: int, since_ms: int, end: int) -> int:
        found = self.records[partition]
        return next((i for i, letter in enumerate(found) if letter.at_ms >= since_ms), len(found))

    def _records(
        self, partition: int, offset: int, end: int
    ) -> Iterator[tuple[int, int, Any, bytes | None]]:
        for at, letter in enumerate(self.records[partition][offset:end], start=offset):
            headers = [(k, v.encode()) for k, v in letter.headers.items()]
            yield at, letter.at_ms, headers, letter.payload

    def letters(self) -> list[Letter]:
        return [letter for partition in self.records for letter in partition]


class FaultyRawWriter(RawWriter):
    """The real raw writer; with ``crash_next`` its process dies right after an insert."""

    crash_next = False

    def write_storable(self, rows: Sequence[RawRow], stored_ms: int | None = None) -> list[RawRow]:
        refused = super().write_storable(rows, stored_ms)
        if self.crash_next:
            self.crash_next = False
            raise SimulatedCrash("after the raw insert")
        return refused


@dataclass(slots=True)
class Worker:
    """One incarnation of a role: its own objects, as a process would have them."""

    ingest: Ingest
    writer: FaultyRawWriter | None
    leases: StoreLeases | None = None
    duplicates: float = 0.0  # its share of voicemon_events_duplicate_total
    alive: bool = True


@dataclass(slots=True)
class Discrepancy:
    view: str  # raw | realtime | hourly | daily | range | dlq | duplicates | topic | step
    key: str
    detail: str
    lost: int = 0
    twice: int = 0
    event_ids: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"[{self.view}] {self.key}: {self.detail}"


@dataclass(slots=True)
class Outcome:
    discrepancies: list[Discrepancy] = field(default_factory=list)
    steps: int = 0
    redis_keys_max: int = 0
    reaped: int = 0

    def first(self) -> Discrepancy | None:
        return self.discrepancies[0] if self.discrepancies else None


def messages_of(chunk: Chunk) -> list[Message]:
    return [
        Message(
            r.partition, r.offset, f"k{r.partition}".encode(), r.value, r.record_ms, r.log_append
        )
        for r in chunk.records
    ]


def _duplicates_total() -> float:
    return float(telemetry.EVENTS_DUPLICATE._value.get())


class Driver:
    def __init__(
        self,
        schedule: Schedule,
        store: Client,
        redis_url: str,
        progress: Callable[[int, Outcome], None] | None = None,
    ) -> None:
        self.progress = progress
        assert tuple(DEFAULT_STAGES) == STAGES
        self.schedule = schedule
        self.store = store
        self.redis_url = redis_url
        self.clock = VirtualClock(schedule.start_ms)
        self.dlq = DlqRecorder(max_bytes=schedule.dlq_max_bytes, clock=self.clock)
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.outcome = Outcome()
        self.workers: list[Worker] = []
        self.pending: list[tuple[Worker, Counted]] = []
        self._retained_from = 0
        self._publish_calls = 0
        self._tick_at = 0
        self._reported: set[tuple[str, str]] = set()
        self._ids_by_record: dict[tuple[int, int], tuple[str, ...]] | None = None

    # -- set-up ------------------------------------------------------------------------------
    def _worker(self, *, counts: bool, writes: bool) -> Worker:
        writer = FaultyRawWriter(self.store) if writes else None
        leases = StoreLeases(self.redis) if writes else None
        ingest = Ingest(
            RollingCounters(self.redis),
            StoreProgress(self.redis),
            STAGES,
            dead_letters=OncePublisher(self.redis, self.dlq, self.clock),  # type: ignore[arg-type]
            raw_writer=writer,
            stored_ids=StoredIds(self.store) if writes else None,
            counts=counts,
            leases=leases,
            clock=self.clock,
        )
        worker = Worker(ingest, writer, leases)
        self.workers.append(worker)
        return worker

    def _closer(self) -> WindowCloser:
        config = CloserConfig(stages=STAGES, partitions=PARTITIONS)
        return WindowCloser(WindowState(self.redis), self.store, self._publish, config, self.clock)

    async def _publish(self, records: list[tuple[bytes, bytes]]) -> None:
        self._publish_calls += 1
        for fault in self.schedule.closer_faults:
            if fault.at_ms == self._tick_at and fault.call == self._publish_calls:
                if fault.kind == "refuse":
                    raise DeliveryError("the snapshot topic refused a record (simulated)")
                if fault.kind == "crash":
                    raise SimulatedCrash("closer killed between write and publish")
                self._record(records)
                raise SimulatedCrash("closer killed after publish")
        self._record(records)

    def _record(self, records: list[tuple[bytes, bytes]]) -> None:
        self.published += [(key.decode(), orjson.loads(value)) for key, value in records]

    # -- the run -----------------------------------------------------------------------------
    async def run(self) -> Outcome:
        self.redis = AsyncRedis.from_url(self.redis_url)
        self.sync_redis = Redis.from_url(self.redis_url)
        await self.redis.flushdb()
        for table in TABLES:
            self.store.command(f"TRUNCATE TABLE voicemon.{table}")
        self.expected = oracle.expect(self.schedule)
        saved, consumers.ingest.FOLLOW_DEADLINE_S = (
            consumers.ingest.FOLLOW_DEADLINE_S,
            FOLLOW_DEADLINE_S,
        )
        try:
            await self._steps()
            await self._final_checks()
        finally:
            consumers.ingest.FOLLOW_DEADLINE_S = saved
            for worker in self.workers:
                if worker.leases is not None and worker.leases._renewer is not None:
                    worker.leases._renewer.cancel()
            await self.redis.aclose()
            self.sync_redis.close()
        return self.outcome

    async def _steps(self) -> None:
        split = self.schedule.topology == "split"
        self.counter = self._worker(counts=True, writes=not split)
        self.storer = self._worker(counts=False, writes=True) if split else None
        self.closer: WindowCloser | None = self._closer()
        if self.schedule.closer and self.schedule.closer_from_ms is not None:
            hour = self.schedule.closer_from_ms
            assert await self.closer.holds_lease()
            day = oracle.first_day(self.schedule)
            await WindowState(self.redis).initialize(self.closer.owner, Pointers(hour, day, day))
        self.successor_at: int | None = None
        order = itertools.count()
        timeline: list[tuple[int, int, int, Callable[[], Awaitable[None]]]] = []
        for chunk in self.schedule.chunks:
            heapq.heappush(
                timeline, (chunk.at_ms, 1, next(order), self._chunk_step(chunk, timeline, order))
            )
        for tick in self.schedule.ticks:
            heapq.heappush(timeline, (tick, 2, next(order), self._tick_step(tick)))
        while timeline:
            at, _, _, step = heapq.heappop(timeline)
            self.clock.ms = max(self.clock.ms, at)
            self.outcome.steps += 1
            try:
                await step()
            except SimulatedCrash:
                raise
            except Exception as error:  # every failure of a step is a finding
                self.outcome.discrepancies.append(
                    Discrepancy(
                        "step",
                        f"t+{(at - self.schedule.start_ms) / 60_000:.1f}min",
                        f"a step raised {error!r}",
                    )
                )

    def _chunk_step(
        self, chunk: Chunk, timeline: list[Any], order: Any
    ) -> Callable[[], Awaitable[None]]:
        async def step() -> None:
            messages = messages_of(chunk)
            ahead = chunk.fault in ("ahead", "ahead_overlap")
            if ahead:  # the counting workers read this chunk only at replay_at_ms
                assert self.storer is not None, "ahead: role store runs ahead of role counters"
                counter, late_messages = self.counter, messages

                async def count_late() -> None:
                    await self._process(counter, late_messages)

                heapq.heappush(timeline, (chunk.replay_at_ms, 0, next(order), count_late))
            elif self.storer is not None:  # role counters first, then role store follows it
                counted = await self._count(self.counter, messages)
                await self.counter.ingest.store(counted)
                if chunk.fault == "handover":
                    self.counter = self._worker(counts=True, writes=False)
            worker = self.storer or self.counter
            counted = await self._count(worker, messages)
            await self._flush_pending()  # the chunk before, in flight until now
            replay: Callable[[], Awaitable[None]] | None = None
            if chunk.fault in ("overlap", "ahead_overlap"):  # stored once the next chunk is
                # counted, or in 1 s
                self.pending = [(worker, counted)]
                flush_at = chunk.at_ms + OVERLAP_MS
                heapq.heappush(timeline, (flush_at, 3, next(order), self._flush_pending))
            elif chunk.fault in ("crash_after_count", "outage"):
                replay = await self._crash_and_replay(worker, messages)
            elif chunk.fault == "crash_in_store":
                assert worker.writer is not None
                worker.writer.crash_next = True
                try:
                    await worker.ingest.store(counted)
                except SimulatedCrash:
                    replay = await self._crash_and_replay(worker, messages)
            elif chunk.fault == "handover":
                replay = self._handover(worker, counted, messages)
            elif chunk.fault in ("none", "ahead"):
                await worker.ingest.store(counted)
            else:
                raise ValueError(f"unknown chunk fault {chunk.fault!r}")
            if replay is not None:
                heapq.heappush(timeline, (chunk.replay_at_ms, 0, next(order), replay))

        return step

    async def _flush_pending(self) -> None:
        pending, self.pending = self.pending, []
        for old, old_counted in pending:
            await old.ingest.store(old_counted)

    def _successor(self, worker: Worker) -> Worker:
        successor = self._worker(counts=worker is self.counter, writes=worker.writer is not None)
        if worker is self.storer:
            self.storer = successor
        else:
            self.counter = successor
        return successor

    async def _crash_and_replay(
        self, worker: Worker, messages: list[Message]
    ) -> Callable[[], Awaitable[None]]:
        replay_counter = self.storer is not None and worker is self.storer  # before it is replaced
        await self._die(worker)
        successor = self._successor(worker)

        async def replay() -> None:
            if replay_counter:  # the counters' group replays the uncommitted chunk as well
                await self._process(self.counter, messages)
            await self._process(successor, messages)

        return replay

    async def _die(self, worker: Worker) -> None:
        """The worker's process is gone: its memory with it (its Prometheus counters as last
        scraped, ``_compare_duplicates``), and
        its store leases lapse (the replay comes after ``LEASE_MS``)."""
        worker.alive = False
        if worker.leases is not None:
            renewer = worker.leases._renewer
            if renewer is not None:
                renewer.cancel()
            held = [key async for key in self.redis.scan_iter(match=LEASES + b"*")]
            for key in held:
                if await self.redis.get(key) == worker.leases.holder.encode():
                    await self.redis.delete(key)

    def _handover(
        self, old: Worker, counted: Counted, messages: list[Message]
    ) -> Callable[[], Awaitable[None]]:
        new = self._successor(old)

        async def replay() -> None:
            if self.storer is not None:
                await self._process(self.counter, messages)
            # The new owner replays the chunk while the old owner's store still hangs; the old
            # one finishes after the new one's replay, or when the new one waits for it.
            replaying = asyncio.ensure_future(self._process(new, messages))
            await asyncio.wait({replaying}, timeout=HANDOVER_WAIT_S)
            await old.ingest.store(counted)
            await replaying

        return replay

    async def _count(self, worker: Worker, messages: list[Message]) -> Counted:
        before = _duplicates_total()
        counted = await worker.ingest.count(messages)
        worker.duplicates += _duplicates_total() - before
        return counted

    async def _process(self, worker: Worker, messages: list[Message]) -> None:
        before = _duplicates_total()
        await worker.ingest.process(messages)
        worker.duplicates += _duplicates_total() - before

    # -- ticks: virtual time's housekeeping, the closer, samples --------------------------------
    def _tick_step(self, tick: int) -> Callable[[], Awaitable[None]]:
        async def step() -> None:
            if self.progress is not None:
                self.progress(tick, self.outcome)
            await self._reap()
            self._retain()
            await self._close(tick)
            sample = tick // oracle.TICK_MS
            for scope in SCOPES if sample % 6 == 0 else SCOPES[:1] if sample % 2 == 0 else ():
                self._compare_realtime(scope, tick)
            if (tick // oracle.TICK_MS) % 3 == 0:
                self._check_no_double_rows(tick)

        return step

    async def _reap(self) -> None:
        """Delete the keys whose expiry time is at or before virtual now."""
        names = [key async for key in self.redis.scan_iter(count=1000)]
        self.outcome.redis_keys_max = max(self.outcome.redis_keys_max, len(names))
        for start in range(0, len(names), 1000):
            batch = names[start : start + 1000]
            pipe = self.redis.pipeline(transaction=False)
            for name in batch:
                pipe.execute_command("PEXPIRETIME", name)
            times = await pipe.execute()
            due = [
                n
                for n, t in zip(batch, times, strict=True)
                if 0 <= int(t) <= self.clock.ms and not n.startswith(REDIS_CLOCK_KEYS)
            ]
            if due:
                await self.redis.delete(*due)
                self.outcome.reaped += len(due)

    def _retain(self) -> None:
        """The raw table's TTL in virtual time: drop hours whose rows are all 48 h old."""
        cutoff = reference.hour_of(self.clock.ms - reference.RETENTION_MS)
        if cutoff <= self._retained_from:
            return
        self._retained_from = cutoff
        parts = self.store.query(
            "SELECT DISTINCT partition_id FROM system.parts WHERE database = 'voicemon' "
            "AND table = 'pipeline_events' AND active"
        ).result_rows
        for (partition_id,) in parts:  # partitions are hours, named by their epoch seconds
            if int(partition_id) * 1000 < cutoff:
                self.store.command(
                    f"ALTER TABLE voicemon.pipeline_events DROP PARTITION ID '{partition_id}'"
                )

    async def _close(self, tick: int) -> None:
        if not self.schedule.closer:
            return
        if self.closer is None and self.successor_at is not None and tick >= self.successor_at:
            self.closer, self.successor_at = self._closer(), None
        if self.closer is None:
            return
        self._tick_at, self._publish_calls = tick, 0
        try:
            await self.closer.tick()
        except SimulatedCrash:
            fault = next(f for f in self.schedule.closer_faults if f.at_ms == tick)
            self.closer, self.successor_at = None, fault.successor_at_ms
        except DeliveryError:
            pass  # the topic refused: the closer tries again at its next tick

    # -- comparisons -------------------------------------------------------------------------
    def _compare_realtime(self, scope: str | None, at: int) -> None:
        """Exact, except for the later copies the contract lets count or not (the oracle's
        ``realtime_lawful``): each figure lies between the winners' and the winners' plus
        theirs, and the average latency between the lowest and the highest it could be."""
        actual = read_realtime(self.sync_redis, scope, STAGES, at)
        wanted = self.expected.realtime(scope, at)
        lawful = self.expected.realtime_lawful(scope, at)
        most = reference.rolling_totals(lawful, STAGES)
        diffs = {n: _outside(actual[n], wanted[n], most[n]) for n in COUNTS}
        for stage in STAGES:
            for name in ("started", "completed", "failed"):
                low, extra = wanted["stages"][stage][name], most["stages"][stage][name]
                diffs[f"{stage}.{name}"] = _outside(actual["stages"][stage][name], low, extra)
        diffs = {name: diff for name, diff in diffs.items() if diff}
        cost, low_cost = actual["ai_cost_usd"], wanted["ai_cost_usd"]
        if not (
            _close_enough(cost, low_cost)
            or low_cost <= cost <= low_cost + most["ai_cost_usd"] + 1e-6
        ):
            diffs["ai_cost_usd"] = cost - low_cost
        latency = reference.safe_ratio(wanted["latency_sum"], wanted["latency_n"])
        possible = [latency] + [
            float(body["duration_ms"])
            for body in lawful
            if body["event_type"] == "artifact_completed" and body.get("duration_ms") is not None
        ]
        average = actual["avg_latency_ms"]
        if not (
            _close_enough(average, latency)
            or (len(possible) > 1 and min(possible) - 1e-6 <= average <= max(possible) + 1e-6)
        ):
            diffs["avg_latency_ms"] = average - latency
        if diffs:
            counts = [v for k, v in diffs.items() if isinstance(v, int)]
            self._found(
                "realtime",
                f"{scope or 'platform'}@{self._when(at)}",
                f"actual - expected: {diffs}",
                lost=-sum(v for v in counts if v < 0),
                twice=sum(v for v in counts if v > 0),
                event_ids=self._window_ids(scope, at),
            )

    def _window_ids(self, scope: str | None, at: int) -> tuple[str, ...]:
        last = at // reference.MINUTE_MS
        return tuple(
            w.body["event_id"]
            for m in range(last - 65, last + 6)
            for w in self.expected.by_minute.get(m, ())
            if scope is None or w.body.get("organization_id") == scope
        )

    def _check_no_double_rows(self, at: int) -> None:
        rows = self.store.query(
            "SELECT event_id, count() FROM voicemon.pipeline_events "
            "GROUP BY event_id HAVING count() > 1"
        ).result_rows
        for event_id, count in rows:
            if ("raw", event_id) not in self._reported:
                self._reported.add(("raw", event_id))
                self._found(
                    "raw",
                    event_id,
                    f"{count} raw rows at {self._when(at)}",
                    twice=count - 1,
                    event_ids=(event_id,),
                )

    def _found(
        self,
        view: str,
        key: str,
        detail: str,
        *,
        lost: int = 0,
        twice: int = 0,
        event_ids: tuple[str, ...] = (),
    ) -> None:
        self.outcome.discrepancies.append(Discrepancy(view, key, detail, lost, twice, event_ids))

    def _when(self, at: int) -> str:
        return f"t+{(at - self.schedule.start_ms) / 60_000:.1f}min"

    async def _final_checks(self) -> None:
        self._compare_raw_rows()
        self._compare_dlq()
        self._compare_duplicates()
        if self.schedule.closer:
            self._compare_snapshots()
            self._compare_topic()

    def _compare_raw_rows(self) -> None:
        now = self.clock.ms
        wanted = self.expected.retained_rows(now)
        rows = self.store.query(
            "SELECT event_id, event_type, toUnixTimestamp64Milli(occurred_at), organization_id, "
            "artifact_id FROM voicemon.pipeline_events"
        ).result_rows
        seen: Counter[str] = Counter()
        for event_id, event_type, occurred, org, artifact in rows:
            seen[event_id] += 1
            winner = wanted.get(event_id) or self.expected.winners.get(event_id)
            if winner is None:
                self._found(
                    "raw",
                    event_id,
                    "a raw row for an event the contract rejects",
                    twice=1,
                    event_ids=(event_id,),
                )
            elif (event_type, occurred, org, artifact) != (
                winner.body["event_type"],
                winner.occurred_ms,
                winner.body.get("organization_id"),
                winner.body["artifact_id"],
            ):
                self._found(
                    "raw",
                    event_id,
                    f"a row of another copy than the first: {event_type} "
                    f"{self._when(occurred)} {artifact}",
                    twice=1,
                    event_ids=(event_id,),
                )
        for event_id, count in seen.items():
            if count > 1 and ("raw", event_id) not in self._reported:
                self._found(
                    "raw",
                    event_id,
                    f"{count} raw rows at the end",
                    twice=count - 1,
                    event_ids=(event_id,),
                )
        for event_id in wanted.keys() - seen.keys():
            self._found(
                "raw", event_id, "no raw row for an accepted event", lost=1, event_ids=(event_id,)
            )

    def _compare_dlq(self) -> None:
        got: dict[tuple[int, int, int | None], list[Letter]] = defaultdict(list)
        for letter in self.dlq.letters():
            got[letter.source].append(letter)
        for source, (reason, payload) in self.expected.letters.items():
            letters = got.pop(source, [])
            ids = self._ids_at(source)
            if not letters:
                self._found(
                    "dlq", str(source), f"no letter; expected {reason}", lost=1, event_ids=ids
                )
                continue
            if len(letters) > 1:
                self._found(
                    "dlq",
                    str(source),
                    f"{len(letters)} letters",
                    twice=len(letters) - 1,
                    event_ids=ids,
                )
            if letters[0].reason != reason:
                self._found(
                    "dlq",
                    str(source),
                    f"reason {letters[0].reason}, expected {reason}",
                    event_ids=ids,
                )
            elif letters[0].payload != payload and "voicemon-truncated" not in letters[0].headers:
                self._found(
                    "dlq",
                    str(source),
                    f"payload {letters[0].payload!r:.120} is not the "
                    f"original bytes {payload!r:.120}",
                    event_ids=ids,
                )
        for source, letters in got.items():
            self._found(
                "dlq",
                str(source),
                f"a letter ({letters[0].reason}) for an accepted copy",
                twice=len(letters),
                event_ids=self._ids_at(source),
            )

    def _ids_at(self, source: tuple[int, int, int | None]) -> tuple[str, ...]:
        """The event ids of the record at ``source`` (indexed once: a long run has a
        million records and tens of thousands of letters)."""
        if self._ids_by_record is None:
            self._ids_by_record = {}
            for chunk in self.schedule.chunks:
                for record in chunk.records:
                    self._ids_by_record.setdefault(
                        (record.partition, record.offset),
                        tuple(
                            e.body["event_id"]
                            for e in record.elements
                            if e.body is not None and "event_id" in e.body
                        ),
                    )
        return self._ids_by_record.get(source[:2], ())

    def _compare_duplicates(self) -> None:
        # Every process's counter as last scraped, the dead ones' included (what a sum of
        # ``increase()`` over their series reads): a replay counts no duplicate again.
        counted = sum(w.duplicates for w in self.workers)
        low, high = self.expected.duplicates_due, self.expected.duplicates
        if not low <= counted <= high:
            self._found(
                "duplicates",
                "voicemon_events_duplicate_total",
                f"{counted:g} counted by the live workers; {low} distinct duplicate copies "
                f"must be, {high} may be",
                lost=max(0, int(low - counted)),
                twice=max(0, int(counted - high)),
            )

    def _surely_made(self, period: str, start: int) -> bool:
        """Whether the closer surely made the window's first row: a tick came once the hour
        was due (its end plus the grace), early enough to close it, with any successor's
        wait and the debounce, while its raw events were all retained (48 h after its start;
        CONTRACT §6 deletes them by ``occurred_at``). A day's hourly rows live 7 days."""
        if period == "daily":
            return True
        due = start + HOUR_MS + oracle.GRACE_MS
        late = self._slack() - max(oracle.TICK_MS, self._tick_gap())
        return any(due <= t <= start + reference.RETENTION_MS - late for t in self.schedule.ticks)

    def _tick_gap(self) -> int:
        ticks = self.schedule.ticks
        return max((b - a for a, b in itertools.pairwise(ticks)), default=oracle.TICK_MS)

    def _slack(self) -> int:
        """How late the closer may close an hour: the longest gap between its ticks, the
        longest wait for a successor (a refusal has none: it retries at the next tick), the
        debounce."""
        successor = max(
            (f.successor_at_ms - f.at_ms for f in self.schedule.closer_faults if f.successor_at_ms),
            default=0,
        )
        return max(oracle.TICK_MS, self._tick_gap()) + successor + oracle.DEBOUNCE_MS

    def _snapshot_rows(self) -> dict[tuple[str, str, int], dict[str, Any]]:
        found = snapshot_reads.rows_of(
            self.store,
            "SELECT *, toUnixTimestamp(period_start) * 1000 AS start_ms "
            "FROM voicemon.snapshots_latest",
            {},
        )
        stage_rows = snapshot_reads.rows_of(
            self.store,
            "SELECT *, toUnixTimestamp(period_start) * 1000 AS "
            "start_ms FROM voicemon.stage_snapshots_latest",
            {},
        )
        rows = {
            (r["period_type"], r["organization_id"], int(r["start_ms"])): r | {"stages": {}}
            for r in found
        }
        for r in stage_rows:
            key = (r["period_type"], r["organization_id"], int(r["start_ms"]))
            if key in rows:
                rows[key]["stages"][r["stage"]] = r
        return rows

    def _compare_snapshots(self) -> None:
        rows = self._snapshot_rows()
        slack = self._slack()
        hours = oracle.closed_hours(self.schedule)
        days = oracle.closed_days(self.schedule)
        orgs = ["org-a", "org-b", "org.c:1"]
        first_of = {
            "hourly": oracle.first_hour(self.schedule),
            "daily": oracle.first_day(self.schedule),
        }
        for period, starts, expect in (
            ("hourly", hours, self.expected.hour),
            ("daily", days, self.expected.day),
        ):
            for start in starts:
                for org in [None, *orgs]:
                    window = expect(start, org, slack)
                    row = rows.pop((period, org or "", start), None)
                    if row is None and start < first_of[period]:
                        continue  # before a closer with history started: late events only
                    self._compare_window(period, start, org, window, row)
        first = oracle.natural_first_hour(self.schedule)
        for (period, org, start), _ in rows.items():
            if period == "hourly" and start < first:
                self._found(
                    "hourly",
                    f"{org or 'platform'}@{self._when(start)}",
                    "a snapshot of an hour whose raw events were not all retained",
                )
        if hours:
            self._compare_range("hourly", hours, self.expected.hour, slack)
        if days:
            self._compare_range("daily", days, self.expected.day, slack)

    def _compare_window(
        self, period: str, start: int, org: str | None, window: Window, row: dict[str, Any] | None
    ) -> None:
        key = f"{period} {org or 'platform'} {self._when(start)}"
        ids = tuple(
            w.body["event_id"]
            for h in range(24 if period == "daily" else 1)
            for w in self.expected.by_hour.get(start + h * HOUR_MS, ())
            if org is None or w.body.get("organization_id") == org
        )
        if row is None:
            if (org is None and self._surely_made(period, start)) or any(
                window.low[n] for n in COUNTS
            ):
                self._found(
                    period,
                    key,
                    "no snapshot row",
                    lost=sum(window.low[n] for n in COUNTS),
                    event_ids=ids,
                )
            return
        diffs, lost, twice = _window_diffs(row, window, exact_percentiles=period == "hourly")
        if diffs:
            self._found(
                period, key, f"actual vs expected: {diffs}", lost=lost, twice=twice, event_ids=ids
            )

    def _compare_range(self, period: str, starts: list[int], expect: Any, slack: int) -> None:
        summary = queries.history(self.store, period, starts[0], starts[-1])["summary"]
        windows = [expect(s, None, slack) for s in starts]
        for name in COUNTS:
            low, high = sum(w.low[name] for w in windows), sum(w.high[name] for w in windows)
            if not low <= summary[name] <= high:
                self._found(
                    "range",
                    f"{period} {name}",
                    f"{summary[name]} not in [{low}, {high}]",
                    lost=max(0, low - summary[name]),
                    twice=max(0, summary[name] - high),
                )

    def _compare_topic(self) -> None:
        on_topic: dict[str, set[int]] = defaultdict(set)
        for key, value in self.published:
            on_topic[key].add(int(value["version"]))
        for (period, org, start), row in self._snapshot_rows().items():
            key = f"{period}:{row['scope']}:{org}:{_iso(start)}"
            if int(row["version"]) not in on_topic.get(key, set()):
                self._found("topic", key, f"version {row['version']} written, never published")


def _iso(ms: int) -> str:
    from datetime import UTC

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def _outside(actual: int, low: int, extra: int) -> int:
    """How far ``actual`` lies outside ``[low, low + extra]`` (negative: below)."""
    return actual - low if actual < low else max(0, actual - low - extra)


def _close_enough(actual: float, wanted: float, rel: float = 1e-9) -> bool:
    return math.isclose(actual, wanted, rel_tol=rel, abs_tol=1e-6)


def _window_diffs(
    row: dict[str, Any], window: Window, *, exact_percentiles: bool
) -> tuple[dict[str, Any], int, int]:
    diffs: dict[str, Any] = {}
    lost = twice = 0
    pairs = [(n, row[n], window.low[n], window.high[n]) for n in COUNTS]
    for stage in STAGES:
        got = row["stages"].get(stage, {})
        for name in ("started", "completed", "failed"):
            pairs.append(
                (
                    f"{stage}.{name}",
                    int(got.get(name, 0)),
                    window.low["stages"][stage][name],
                    window.high["stages"][stage][name],
                )
            )
    for name, actual, low, high in pairs:
        if not low <= actual <= high:
            diffs[name] = (actual, low if low == high else (low, high))
            lost += max(0, low - actual)
            twice += max(0, actual - high)
    if window.uncertain or diffs:
        return diffs, lost, twice
    rel = 1e-9 if exact_percentiles else 0.01
    for name in ("ai_cost_usd", "avg_latency_ms"):
        if not _close_enough(row[name], window.high[name], 1e-9):
            diffs[name] = (row[name], window.high[name])
    for name in ("p50_latency_ms", "p95_latency_ms", "p99_latency_ms"):
        if not _close_enough(row[name], window.high[name], rel):
            diffs[name] = (row[name], window.high[name])
    for stage in STAGES:
        got, wanted = row["stages"].get(stage, {}), window.high["stages"][stage]
        for name in ("avg_duration_ms", "p95_duration_ms"):
            value = float(got.get(name, 0.0))
            if not _close_enough(value, wanted[name], rel if name.startswith("p") else 1e-9):
                diffs[f"{stage}.{name}"] = (value, wanted[name])
    return diffs, lost, twice


def run_sync(
    schedule: Schedule,
    store: Client,
    redis_url: str,
    progress: Callable[[int, Outcome], None] | None = None,
) -> Outcome:
    return asyncio.run(Driver(schedule, store, redis_url, progress).run())
