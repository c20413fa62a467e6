"""The window closer with an injected clock, real Redis and the real ClickHouse engine."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from redis.asyncio import Redis

from aggregators.closing import retention, snapshots
from aggregators.closing.closer import CloserConfig, WindowCloser, initial_pointers
from aggregators.closing.recompute import recompute
from aggregators.closing.window_state import Pointers, WindowState
from aggregators.snapshot_rows import snapshot_rows
from consumers.raw_writer import RawWriter
from consumers.rows import Position, RawRow
from consumers.store_progress import StoreProgress
from voicemon import keys, windows
from voicemon.event import EventType, PipelineEvent
from voicemon.settings import DEFAULT_STAGES, Settings
from voicemon.store import Client
from voicemon.windows import DAY_MS, HOUR_MS, global_watermark

T = TypeVar("T")
GRACE_MS = 30 * 60_000
PARTITIONS = 4


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


@pytest.fixture
def redis_url(stack: Settings) -> str:
    return stack.redis_url.get_secret_value().rsplit("/", 1)[0] + "/10"


class State(WindowState):
    """The closer's state, with ingest's side of the same keys beside it."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis)
        self.progress = StoreProgress(redis)


def run(redis_url: str, scenario: Callable[[State], Awaitable[T]]) -> T:
    async def main() -> T:
        redis = Redis.from_url(redis_url)
        await redis.flushdb()
        try:
            return await scenario(State(redis))
        finally:
            await redis.aclose()

    return asyncio.run(main())


def closer(state: WindowState, store: Client, clock: Clock, published: list[Any] | None = None,
           **config: Any) -> WindowCloser:  # fmt: skip
    async def publish(records: list[tuple[bytes, bytes]]) -> None:
        if published is not None:
            published.extend(records)

    settings = CloserConfig(
        stages=DEFAULT_STAGES, partitions=PARTITIONS, grace_ms=GRACE_MS, **config
    )
    return WindowCloser(state, store, publish, settings, clock)


def write_event(store: Client, event_id: str, at_ms: int, offset: int, org: str = "org-a") -> None:
    event = PipelineEvent(event_id, EventType.ARTIFACT_RECEIVED, at_ms, "art", org)
    RawWriter(store).write([RawRow(event, Position(0, offset, 0))])


def hourly_versions(store: Client) -> Counter[int]:
    rows = store.query(
        "SELECT toUnixTimestamp(period_start) * 1000, count() FROM voicemon.snapshots "
        "WHERE period_type = 'hourly' AND scope = 'platform' GROUP BY 1"
    ).result_rows
    return Counter({int(start): int(n) for start, n in rows})


def test_global_watermark_is_the_minimum_over_every_partition() -> None:
    assert global_watermark({0: 5, 1: 9, 2: 7, 3: 6}, 4) == 5
    assert global_watermark({0: 5, 1: 9, 2: 7}, 4) is None  # partition 3 wrote nothing yet
    assert global_watermark({0: 5, 1: 9, 2: 7, 3: 6, 7: 1}, 4) == 5  # not an input partition


def test_hours_close_by_watermark_before_the_wall_clock(
    clean_store: Client, redis_url: str, now_ms: int
) -> None:
    hour = now_ms - now_ms % HOUR_MS - 2 * HOUR_MS
    clock = Clock(hour + HOUR_MS + 10 * 60_000)  # wall clock: not yet past H + 1h + grace

    async def scenario(state: State) -> tuple[list[str], list[str]]:
        c = closer(state, clean_store, clock)
        before = (await c.tick()).queued
        # Two workers holding different partitions record what they wrote.
        await state.progress.record_written({0: hour + HOUR_MS + GRACE_MS, 1: now_ms}, {}, clock.ms)
        await state.progress.record_written({2: now_ms, 3: now_ms}, {}, clock.ms)
        return before, (await c.tick()).emitted

    before, emitted = run(redis_url, scenario)
    assert f"hourly:{hour}" not in before
    assert f"hourly:{hour}" in emitted


def test_hours_close_by_wall_clock_when_idle(
    clean_store: Client, redis_url: str, now_ms: int
) -> None:
    hour = now_ms - now_ms % HOUR_MS - 2 * HOUR_MS
    write_event(clean_store, "e1", hour + 5, 1)
    clock = Clock(hour + HOUR_MS + GRACE_MS - 1)
    published: list[Any] = []

    async def scenario(state: State) -> tuple[list[str], list[str]]:
        c = closer(state, clean_store, clock, published)
        early = (await c.tick()).emitted
        clock.ms += 1
        return early, (await c.tick()).emitted

    early, emitted = run(redis_url, scenario)
    assert f"hourly:{hour}" not in early and emitted == [f"hourly:{hour}"]
    first_hour = initial_pointers(clock.ms).next_hour
    assert f"hourly:{first_hour}" in early  # a closer with no history starts 48 h back
    keys_published = [key.decode() for key, _ in published]
    start = windows.iso(hour)
    assert f"hourly:platform::{start}" in keys_published
    assert f"hourly:organization:org-a:{start}" in keys_published


def test_contending_closers_close_each_window_exactly_once(
    clean_store: Client, redis_url: str, now_ms: int
) -> None:
    clock = Clock(now_ms)

    async def scenario(state: State) -> Counter[str]:
        closers = [closer(state, clean_store, clock, max_windows_per_tick=7) for _ in range(3)]
        emitted: Counter[str] = Counter()
        for _ in range(15):
            for report in await asyncio.gather(*(c.tick() for c in closers)):
                emitted.update(report.emitted)
            clock.ms += 60_000
        return emitted

    emitted = run(redis_url, scenario)
    assert emitted and max(emitted.values()) == 1
    first_hour = initial_pointers(now_ms).next_hour
    last_closable = (clock.ms - GRACE_MS) // HOUR_MS * HOUR_MS - HOUR_MS
    expected = {f"hourly:{h}" for h in range(first_hour, last_closable + 1, HOUR_MS)}
    assert {w for w in emitted if w.startswith("hourly")} == expected
    assert set(hourly_versions(clean_store).values()) == {1}


def test_a_takeover_after_the_holder_dies_skips_nothing(
    clean_store: Client, redis_url: str, now_ms: int
) -> None:
    clock = Clock(now_ms)

    async def scenario(state: State) -> tuple[list[str], list[str], list[str]]:
        # The lease outlasts a tick of 3 windows on a loaded machine (400 ms did not, once).
        holder = closer(state, clean_store, clock, max_windows_per_tick=3, lease_ttl_ms=1500)
        heir = closer(state, clean_store, clock, lease_ttl_ms=1500)
        first = await holder.tick()  # queues every due window, emits 3, then "dies"
        assert not (await heir.tick()).leader
        await asyncio.sleep(1.6)  # the lease expires
        rest: list[str] = []
        while report := (await heir.tick()).emitted:
            rest += report
        return first.queued, first.emitted, rest

    queued, first, rest = run(redis_url, scenario)
    assert len(first) == 3 and not set(first) & set(rest)
    assert set(first) | set(rest) == set(queued)
    assert set(hourly_versions(clean_store).values()) == {1}


def test_a_late_event_re_emits_its_hour_and_day_with_a_higher_version(
    clean_store: Client, redis_url: str, now_ms: int
) -> None:
    day = now_ms - now_ms % DAY_MS - DAY_MS
    hour = day + 5 * HOUR_MS
    write_event(clean_store, "on-time", hour + 10, 1)
    clock = Clock(now_ms)
    latest_sql = (
        "SELECT period_type, artifacts_received, version FROM voicemon.snapshots_latest "
        "WHERE scope = 'organization' ORDER BY period_type"
    )

    async def scenario(state: State) -> tuple[list[str], list[tuple[Any, ...]]]:
        c = closer(state, clean_store, clock, max_windows_per_tick=100)
        while (await c.tick()).emitted:
            pass
        before = clean_store.query(latest_sql).result_rows
        write_event(clean_store, "late", hour + 20, 2)
        assert await state.progress.record_written({0: hour + 20}, {hour: 1}, clock.ms) == 1
        assert (await c.tick()).emitted == []  # within the debounce: nothing yet
        clock.ms += 5_000
        emitted = (await c.tick()).emitted
        clock.ms += 5_000
        return emitted + (await c.tick()).emitted, before

    emitted, before = run(redis_url, scenario)
    assert emitted == [f"hourly:{hour}", f"daily:{day}"]
    after = clean_store.query(latest_sql).result_rows
    assert [(p, n) for p, n, _ in before] == [("daily", 1), ("hourly", 1)]
    assert [(p, n) for p, n, _ in after] == [("daily", 2), ("hourly", 2)]
    assert all(new > old for (_, _, new), (_, _, old) in zip(after, before, strict=True))


def test_a_late_event_in_an_hour_straddling_the_retention_keeps_its_snapshot(
    clean_store: Client, redis_url: str, now_ms: int
) -> None:
    clock = Clock(now_ms)
    first_hour = initial_pointers(now_ms).next_hour  # its raw events may soon be partly gone
    assert first_hour < now_ms - 48 * HOUR_MS + GRACE_MS
    for offset in range(3):
        write_event(clean_store, f"s{offset}", first_hour + 10 + offset, offset)

    async def scenario(state: State) -> list[str]:
        c = closer(state, clean_store, clock, max_windows_per_tick=100)
        while (await c.tick()).emitted:
            pass
        write_event(clean_store, "late", first_hour + 20, 9)
        assert (
            await state.progress.record_written({0: first_hour + 20}, {first_hour: 1}, clock.ms)
            == 1
        )
        clock.ms += 10_000
        return (await c.tick()).emitted

    emitted = run(redis_url, scenario)
    assert f"hourly:{first_hour}" not in emitted  # the late event is stored, the hour kept
    [(received, version)] = clean_store.query(
        "SELECT artifacts_received, version FROM voicemon.snapshots_latest WHERE scope = "
        f"'platform' AND period_type = 'hourly' AND toUnixTimestamp(period_start) = "
        f"{first_hour // 1000}"
    ).result_rows
    assert received == 3 and hourly_versions(clean_store)[first_hour] == 1
    assert version > 0


@pytest.mark.parametrize(("past_edge_ms", "first_close"), [(0, True), (1, False)])
def test_an_hour_gets_a_first_snapshot_only_while_all_its_raw_events_are_retained(
    clean_store: Client, redis_url: str, now_ms: int, past_edge_ms: int, first_close: bool
) -> None:
    """Shrunk from the simulation's long mode (seed 5): a late event in an hour before a new
    closer's first one, starting more than 48 h ago, gave that hour a snapshot counting only
    what was still retained. At exactly 48 h its events are all there: it closes."""
    hour = now_ms - now_ms % HOUR_MS - 48 * HOUR_MS
    clock = Clock(hour + 48 * HOUR_MS + past_edge_ms - 10_000)
    write_event(clean_store, "late", hour + 59 * 60_000, 1)

    async def scenario(state: State) -> list[str]:
        c = closer(state, clean_store, clock, max_windows_per_tick=100)
        first = Pointers(hour + HOUR_MS, hour - hour % DAY_MS + DAY_MS, hour - hour % DAY_MS)
        assert await c.holds_lease()
        assert await state.initialize(c.owner, first)  # the closer began after this hour
        late = {0: hour + 59 * 60_000}
        assert await state.progress.record_written(late, {hour: 1}, clock.ms) == 1
        clock.ms += 10_000  # past the debounce: the tick at 48 h + past_edge_ms
        report = await c.tick()
        return report.emitted if f"hourly:{hour}" in report.emitted else report.kept

    decided = run(redis_url, scenario)
    assert f"hourly:{hour}" in decided
    assert (hour in hourly_versions(clean_store)) is first_close


def test_replay_recomputes_closed_windows_idempotently(
    clean_store: Client, redis_url: str, now_ms: int
) -> None:
    hour = now_ms - now_ms % HOUR_MS - 4 * HOUR_MS
    write_event(clean_store, "r1", hour + 1, 1)
    clock = Clock(now_ms)

    async def scenario(state: State) -> tuple[Any, Any]:
        c = closer(state, clean_store, clock, max_windows_per_tick=100)
        while (await c.tick()).emitted:
            pass
        first = await recompute(c, state, clean_store, hour, hour + HOUR_MS, clock.ms)
        write_event(clean_store, "r2", hour + 2, 2)  # a row the closer never heard of
        second = await recompute(c, state, clean_store, hour, hour + HOUR_MS, clock.ms)
        return first, second

    first, second = run(redis_url, scenario)
    assert (
        len(first.windows) == 2 and first.changed == 0 and first.unchanged == 3
    )  # H: 2 rows, H+1: 1
    assert second.changed == 2  # the platform and org-a rows of that hour
    [(received,)] = clean_store.query(
        "SELECT artifacts_received FROM voicemon.snapshots_latest WHERE period_type = 'hourly' "
        f"AND scope = 'platform' AND toUnixTimestamp(period_start) = {hour // 1000}"
    ).result_rows
    assert received == 2


def test_closer_keys_share_one_cluster_slot() -> None:
    names = [keys.CLOSER_LEASE, keys.NEXT_HOUR, keys.NEXT_DAY, keys.DIRTY, keys.WATERMARKS]
    assert {name.split("{")[1].split("}")[0] for name in names} == {"closer"}


@pytest.mark.parametrize(
    ("period_type", "keep_ms"), [("hourly", 7 * DAY_MS), ("daily", 90 * DAY_MS)]
)
def test_retention_keeps_the_cutoff_and_deletes_a_millisecond_before(
    clean_store: Client, period_type: str, keep_ms: int, now_ms: int
) -> None:
    start = now_ms - now_ms % HOUR_MS + HOUR_MS - keep_ms  # not yet expired by the TTL
    snapshots.write(clean_store, snapshot_rows(period_type, start, HOUR_MS, {}, {}, ["t"], 1, 0))
    assert retention.run(clean_store, start + keep_ms)[f"{period_type} snapshots"] == 0
    assert retention.run(clean_store, start + keep_ms + 1)[f"{period_type} snapshots"] == 1
    assert clean_store.query("SELECT count() FROM voicemon.snapshots").result_rows == [(0,)]


def test_retention_of_raw_events_is_by_event_time(clean_store: Client, now_ms: int) -> None:
    write_event(clean_store, "old", now_ms - 1000, 1)
    cutoff_now = now_ms - 1000 + 48 * HOUR_MS
    assert retention.run(clean_store, cutoff_now)["raw events"] == 0
    assert retention.run(clean_store, cutoff_now + 1)["raw events"] == 1


def test_retention_ttls_are_declared(clean_store: Client) -> None:
    ddl = dict(clean_store.query(
        "SELECT name, create_table_query FROM system.tables WHERE database = 'voicemon'"
    ).result_rows)  # fmt: skip
    for table in ("snapshots", "stage_snapshots"):
        assert "TTL period_start + toIntervalDay(if(period_type = 'hourly', 7, 90))" in ddl[table]
        assert "PARTITION BY (period_type, toYYYYMMDD(period_start))" in ddl[table]
        assert "ttl_only_drop_parts = 1" in ddl[table]


def test_closer_gauges_are_exported_by_the_lease_holder_alone(
    clean_store: Client, redis_url: str, now_ms: int
) -> None:
    from prometheus_client import REGISTRY

    def sample(name: str) -> float | None:
        return REGISTRY.get_sample_value(name)

    clock = Clock(now_ms)

    async def scenario(state: State) -> list[tuple[Any, ...]]:
        leader = closer(state, clean_store, clock, max_windows_per_tick=100)
        other = closer(state, clean_store, clock, max_windows_per_tick=100)
        await state.progress.record_written(
            {p: now_ms - 60_000 for p in range(PARTITIONS)}, {}, now_ms
        )
        seen = []
        await leader.tick()  # takes the lease, closes its first hours
        seen.append((sample("voicemon_closer_leader"), sample("voicemon_watermark_lag_seconds"),
                     sample("voicemon_window_close_delay_seconds")))  # fmt: skip
        await other.tick()  # this process now speaks for a closer without the lease
        seen.append((sample("voicemon_closer_leader"), sample("voicemon_watermark_lag_seconds"),
                     sample("voicemon_window_close_delay_seconds")))  # fmt: skip
        await leader.release()
        return seen

    as_leader, as_follower = run(redis_url, scenario)
    assert as_leader[0] == 1 and as_leader[1] == 60.0
    assert as_leader[2] is not None and as_leader[2] > 0  # an hour's end to its snapshot
    assert as_follower == (0, None, None)
