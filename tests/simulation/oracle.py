"""What the contract expects of a schedule, from the independent reference alone.

No voicemon code here: decisions follow CONTRACT §3.1-§3.3 as ``tests.reference`` states
them, metrics follow §4, the rolling window §5, the closing rules §6.1. Every copy is decided
once, at its first delivery (the chunk's read time); the first accepted copy of an event id
wins and every later accepted copy is a duplicate. A later copy read when the contract no
longer requires it to change nothing (the first copy out of the rolling window and more than
an hour old) may show in real-time reads or not: those are bounds, not one figure.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from tests import reference
from tests.reference import DAY_MS, HOUR_MS, MINUTE_MS, RETENTION_MS, day_of, hour_of
from tests.simulation.schedule import STAGES, TICK_MS, Schedule

Source = tuple[int, int, int | None]  # (partition, offset, batch index or None)
GRACE_MS = 30 * MINUTE_MS
DEBOUNCE_MS = 5_000
DAY_CLOSE_MS = DAY_MS + HOUR_MS + 30 * MINUTE_MS


@dataclass(frozen=True, slots=True)
class Winner:
    body: dict[str, Any]
    occurred_ms: int
    counted_at_ms: int
    position: tuple[int, int, int]


@dataclass(slots=True)
class Expected:
    winners: dict[str, Winner] = field(default_factory=dict)
    letters: dict[Source, tuple[str, bytes | None]] = field(default_factory=dict)
    duplicates: int = 0  # accepted copies of an event already counted
    duplicates_due: int = 0  # of which the duplicate counter must count (CONTRACT §3.1)
    copies: int = 0
    by_minute: dict[int, list[Winner]] = field(default_factory=lambda: defaultdict(list))
    by_hour: dict[int, list[Winner]] = field(default_factory=lambda: defaultdict(list))
    # later copies the real-time counters may count or not (``_duplicate_due`` is False)
    lawful_by_minute: dict[int, list[Winner]] = field(default_factory=lambda: defaultdict(list))

    def realtime(self, organization: str | None, read_at_ms: int) -> dict[str, Any]:
        """The §5 totals of one scope (None: platform) at ``read_at_ms``."""
        return reference.rolling_totals(
            self._in_window(self.by_minute, organization, read_at_ms), STAGES
        )

    def realtime_lawful(self, organization: str | None, read_at_ms: int) -> list[dict[str, Any]]:
        """The later copies a real-time read at ``read_at_ms`` may also count."""
        return self._in_window(self.lawful_by_minute, organization, read_at_ms)

    @staticmethod
    def _in_window(
        by_minute: dict[int, list[Winner]], organization: str | None, read_at_ms: int
    ) -> list[dict[str, Any]]:
        last = read_at_ms // MINUTE_MS
        return [
            w.body
            for minute in range(last - 59, last + 1)
            for w in by_minute.get(minute, ())
            if w.counted_at_ms <= read_at_ms
            and reference.in_rolling_window(w.occurred_ms, w.counted_at_ms, read_at_ms)
            and (organization is None or w.body.get("organization_id") == organization)
        ]

    def retained_rows(self, now_ms: int) -> dict[str, Winner]:
        """Winners whose raw row the emulated retention keeps at ``now_ms`` (whole hourly
        parts are dropped once their last row is 48 h old, as ``ttl_only_drop_parts`` does)."""
        return {
            event_id: w
            for event_id, w in self.winners.items()
            if w.counted_at_ms <= now_ms
            and hour_of(w.occurred_ms) + HOUR_MS + RETENTION_MS > now_ms
        }

    def hour(self, hour_ms: int, organization: str | None, slack_ms: int) -> Window:
        """The expected §4 metrics of an hourly snapshot, with the events the closer may
        lawfully have kept out (counted when the hour was no longer recomputable, §6)."""
        winners = [w for w in self.by_hour.get(hour_ms, ()) if _in_scope(w, organization)]
        edge = hour_ms + RETENTION_MS - GRACE_MS - slack_ms
        sure = [w.body for w in winners if w.counted_at_ms < edge]
        return Window(
            reference.metrics(sure, STAGES),
            reference.metrics([w.body for w in winners], STAGES),
            len(sure) < len(winners),
            bool(winners),
        )

    def day(self, day_ms: int, organization: str | None, slack_ms: int) -> Window:
        hours = [self.hour(day_ms + h * HOUR_MS, organization, slack_ms) for h in range(24)]
        bodies = [
            w.body
            for h in range(24)
            for w in self.by_hour.get(day_ms + h * HOUR_MS, ())
            if _in_scope(w, organization)
        ]
        edge_free = not any(h.uncertain for h in hours)
        low = reference.metrics(bodies, STAGES) if edge_free else _sum_counts(h.low for h in hours)
        return Window(low, reference.metrics(bodies, STAGES), not edge_free, bool(bodies))


@dataclass(frozen=True, slots=True)
class Window:
    low: dict[str, Any]  # metrics of the events the snapshot must hold
    high: dict[str, Any]  # metrics of every event of the window
    uncertain: bool  # low != high: only bounds hold
    has_events: bool


COUNTS = ("artifacts_received", "artifacts_completed", "artifacts_failed")


def _sum_counts(parts: Any) -> dict[str, Any]:
    total: dict[str, Any] = {name: 0 for name in COUNTS}
    total["stages"] = {s: {"started": 0, "completed": 0, "failed": 0} for s in STAGES}
    for part in parts:
        for name in COUNTS:
            total[name] += part[name]
        for stage in STAGES:
            for name in ("started", "completed", "failed"):
                total["stages"][stage][name] += part["stages"][stage][name]
    return total


def _in_scope(winner: Winner, organization: str | None) -> bool:
    return organization is None or winner.body.get("organization_id") == organization


def expect(schedule: Schedule) -> Expected:
    """Decide every copy of the schedule once, in the order it is first counted."""
    expected = Expected()
    for chunk in sorted(schedule.chunks, key=lambda c: c.at_ms):
        for record in chunk.records:
            if record.whole is not None:
                expected.copies += 1
                expected.letters[record.partition, record.offset, None] = (
                    record.whole,
                    record.value,
                )
                continue
            for index, element in enumerate(record.elements):
                expected.copies += 1
                source = (record.partition, record.offset, index if record.batch else None)
                payload = element.raw if record.batch else record.value
                if element.malformed is not None:
                    expected.letters[source] = (element.malformed, payload)
                    continue
                assert element.body is not None
                occurred = reference.event_ms(element.body)
                verdict = reference.time_verdict(
                    occurred, record.record_ms, record.log_append, chunk.at_ms
                )
                if verdict != "accepted":
                    expected.letters[source] = (verdict, payload)
                elif element.body["event_id"] in expected.winners:
                    expected.duplicates += 1
                    first = expected.winners[element.body["event_id"]]
                    due = _duplicate_due(first, chunk.at_ms)
                    expected.duplicates_due += due
                    if not due:
                        copy = Winner(
                            element.body,
                            occurred,
                            chunk.at_ms,
                            (record.partition, record.offset, index),
                        )
                        expected.lawful_by_minute[occurred // MINUTE_MS].append(copy)
                else:
                    winner = Winner(
                        element.body,
                        occurred,
                        chunk.at_ms,
                        (record.partition, record.offset, index),
                    )
                    expected.winners[element.body["event_id"]] = winner
                    expected.by_minute[occurred // MINUTE_MS].append(winner)
                    expected.by_hour[hour_of(occurred)].append(winner)
    return expected


def _duplicate_due(first: Winner, now_ms: int) -> bool:
    """A later copy must be counted as a duplicate while the first copy is inside the
    rolling window or within one hour of its arrival (CONTRACT §3.1)."""
    in_window = first.occurred_ms // MINUTE_MS >= now_ms // MINUTE_MS - 59
    return in_window or now_ms - first.counted_at_ms <= HOUR_MS


def first_hour(schedule: Schedule) -> int:
    """The first hour the closer closes: where a closer with history stands, or for a new
    one the oldest hour whose raw events are all retained at its first tick (hours before it
    get no snapshot)."""
    if schedule.closer_from_ms is not None:
        return schedule.closer_from_ms
    oldest = schedule.ticks[0] - RETENTION_MS
    return hour_of(oldest + HOUR_MS - 1)


def natural_first_hour(schedule: Schedule) -> int:
    """The oldest hour any event can still be accepted into at the first tick."""
    return hour_of(schedule.ticks[0] - RETENTION_MS + HOUR_MS - 1)


def first_day(schedule: Schedule) -> int:
    return day_of(first_hour(schedule) + DAY_MS - 1)


def closed_hours(schedule: Schedule) -> list[int]:
    """Hours surely closed by the last tick (wall clock past H + 1h + grace)."""
    start, last = natural_first_hour(schedule), schedule.ticks[-1]
    return list(range(start, hour_of(last - HOUR_MS - GRACE_MS) - HOUR_MS + 1, HOUR_MS))


def closed_days(schedule: Schedule) -> list[int]:
    start, last = first_day(schedule), schedule.ticks[-1]
    return [d for d in range(start, last, DAY_MS) if d + DAY_CLOSE_MS + TICK_MS <= last]
