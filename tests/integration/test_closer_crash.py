"""The write→publish handover survives a closer dying at any step (CONTRACT §6.1; issue 16
item 11): each hour and day reaches the topic with the version the store holds, once, whether
the successor comes a minute or 47 hours later. Real Redis, the embedded store, an injected
clock; the "process death" is an exception no code catches, raised at a step boundary."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson
import pytest

from aggregators.closing.closer import CloserConfig, WindowCloser
from aggregators.closing.window_state import Pointers, Unpublished, WindowState
from consumers.raw_writer import RawWriter
from consumers.rows import Position, RawRow
from tests.integration.test_closer import GRACE_MS, PARTITIONS, Clock, redis_url, run
from voicemon import keys, windows
from voicemon.event import EventType, PipelineEvent
from voicemon.settings import DEFAULT_STAGES
from voicemon.store import Client
from voicemon.windows import DAY_MS, HOUR_MS

__all__ = ["redis_url"]  # the fixture, shared with test_closer
Record = tuple[bytes, bytes]

# The step boundaries of emitting a window, in order: after computing (before its records
# are kept), after keeping them (before the write), after the write (before publishing),
# after the broker acknowledged them (before the closer records it), and after the hour is
# done (before its day is computed).
STEPS = ["computed", "kept", "written", "acknowledged", "hour_done"]


class Crash(BaseException):
    """The closer's process dies here."""


class Dying:
    """Raises Crash the first time the closer reaches ``step`` for an hourly window."""

    def __init__(self, step: str | None) -> None:
        self.step = step

    def at(self, step: str, member: str = "hourly") -> None:
        if step == self.step and member.startswith("hourly"):
            self.step = None
            raise Crash(step)


class DyingState(WindowState):
    def __init__(self, redis: Any, dying: Dying) -> None:
        super().__init__(redis)
        self.dying = dying

    async def hold_unpublished(self, owner: str, entry: Unpublished) -> bool:
        self.dying.at("computed", entry.member)
        return await super().hold_unpublished(owner, entry)

    async def published(self, entry: Unpublished, day: tuple[str, int] = ("", 0),
                        score: int = 0) -> None:  # fmt: skip
        self.dying.at("acknowledged", entry.member)
        await super().published(entry, day, score)
        self.dying.at("hour_done", entry.member)


class DyingStore:
    def __init__(self, client: Client, dying: Dying) -> None:
        self._client, self._dying = client, dying

    def insert(self, table: str, *args: Any, **kwargs: Any) -> Any:
        self._dying.at("kept")
        return self._client.insert(table, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def new_closer(state: WindowState, store: Any, clock: Clock, topic: list[Record],
               dying: Dying) -> WindowCloser:  # fmt: skip
    async def publish(records: list[Record]) -> None:
        dying.at("written", records[0][0].decode())
        topic.extend(records)  # the broker acknowledged them

    config = CloserConfig(stages=DEFAULT_STAGES, partitions=PARTITIONS, grace_ms=GRACE_MS,
                          max_windows_per_tick=200)  # fmt: skip
    return WindowCloser(state, store, publish, config, clock)


def store_latest(store: Client) -> dict[str, tuple[int, int]]:
    """record key -> (version, artifacts_received) of every newest row."""
    rows = store.query(
        "SELECT period_type, scope, organization_id, toUnixTimestamp(period_start) * 1000, "
        "version, artifacts_received FROM voicemon.snapshots_latest"
    ).result_rows
    return {
        f"{p}:{scope}:{org}:{windows.iso(int(start))}": (int(version), int(received))
        for p, scope, org, start, version, received in rows
    }


# The successor comes a minute later, or when the hour is 47.5 h + 1 ms old: no longer
# recomputable (a written row is kept and published as it is), its raw events still all
# retained (an hour never written gets its first snapshot; past 48 h it would get none).
@pytest.mark.parametrize("delay_ms", [60_000, 45 * HOUR_MS + 1], ids=["1min", "47.5h"])
@pytest.mark.parametrize("step", STEPS)
def test_each_hour_and_day_reaches_the_topic_once_with_its_version_whatever_step_the_closer_dies_at(
    clean_store: Client, redis_url: str, now_ms: int, step: str, delay_ms: int
) -> None:
    day = windows.day_start(now_ms) - DAY_MS
    hour = day + 23 * HOUR_MS  # the day's last hour: it and the day close on the same tick
    RawWriter(clean_store).write([
        RawRow(PipelineEvent(f"e{i}", EventType.ARTIFACT_RECEIVED, hour + i, "art", "org-a"),
               Position(0, i, 0))
        for i in range(240)
    ])  # fmt: skip
    clock = Clock(day + DAY_MS + 90 * 60_000 + 1)  # hour 23 and the day are both due
    topic: list[Record] = []

    async def scenario(state: WindowState) -> tuple[int, int]:
        dying = Dying(step)
        first = new_closer(DyingState(state._redis, dying), DyingStore(clean_store, dying),
                           clock, topic, dying)  # fmt: skip
        assert await state.hold_lease(first.owner, 30_000)
        assert await state.initialize(first.owner, Pointers(hour, day, day))
        with pytest.raises(Crash):
            await first.tick()
        await state._redis.delete(keys.CLOSER_LEASE)  # its lease expires
        clock.ms += delay_ms
        successor = new_closer(state, clean_store, clock, topic, Dying(None))
        for _ in range(10):
            report = await successor.tick()
            if not (report.emitted or report.republished or report.queued or report.unpublished):
                break
            clock.ms += 5_000
        left = await state._redis.hlen(f"{keys.CLOSER}:unpublished")
        return left, await state._redis.zcard(keys.DIRTY)

    left, queued = run(redis_url, scenario)
    assert (left, queued) == (0, 0)
    on_topic: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for key, value in topic:
        record = orjson.loads(value)
        on_topic[key.decode()].append((record["version"], record["artifacts_received"]))
    latest = store_latest(clean_store)
    assert set(on_topic) == set(latest)  # every window with a row reached the topic
    ours = {f"hourly:{scope}:{org}:{windows.iso(hour)}" for scope, org in
            (("platform", ""), ("organization", "org-a"))}  # fmt: skip
    for key, (version, received) in latest.items():
        # exactly the stored version, once (a record the broker acknowledged just before the
        # closer died is sent again, byte for byte: the only duplicate, and only then)
        copies = 2 if step == "acknowledged" and key in ours else 1
        assert on_topic[key] == [(version, received)] * copies, key
    day_keys = {f"daily:{s}:{o}:{windows.iso(day)}" for s, o in (("platform", ""),
                ("organization", "org-a"))}  # fmt: skip
    assert {key: latest[key][1] for key in ours | day_keys} == dict.fromkeys(ours | day_keys, 240)
