"""The simulation's schedules (pure): deterministic per seed, dense around every seam, and
decided by the reference's time rules at their edges."""

from __future__ import annotations

from collections import Counter

import pytest

from tests import reference
from tests.reference import HOUR_MS, MINUTE_MS, RETENTION_MS
from tests.simulation import oracle, schedule
from tests.simulation.schedule import GENERATION_MS, MARKER_GENERATIONS, MARKER_REACH_MS

NOW = 1_796_000_000_000


def test_a_seed_gives_the_same_schedule_every_time() -> None:
    assert schedule.generate(3, 400, NOW) == schedule.generate(3, 400, NOW)
    assert schedule.generate(3, 400, NOW) != schedule.generate(4, 400, NOW)


@pytest.mark.parametrize(
    ("record_ms", "log_append", "now"),
    [
        (NOW - HOUR_MS, True, NOW - HOUR_MS),
        (NOW - 5 * MINUTE_MS, False, NOW - 5 * MINUTE_MS),
        (NOW - 5 * MINUTE_MS - 1, False, NOW),
        (NOW + 5 * MINUTE_MS, False, NOW + 5 * MINUTE_MS),
        (NOW + 5 * MINUTE_MS + 1, False, NOW),
        (None, False, NOW),
        (-1, True, NOW),
    ],
)
def test_the_decision_now_of_a_record(record_ms: int | None, log_append: bool, now: int) -> None:
    assert reference.decision_now(record_ms, log_append, NOW) == now


@pytest.mark.parametrize(
    ("occurred", "verdict"),
    [
        (NOW + 5 * MINUTE_MS, "accepted"),
        (NOW + 5 * MINUTE_MS + 1, "future_timestamp"),
        (NOW - RETENTION_MS, "accepted"),
        (NOW - RETENTION_MS - 1, "too_late"),
    ],
)
def test_the_time_rules_at_their_edges(occurred: int, verdict: str) -> None:
    assert reference.time_verdict(occurred, NOW, True, NOW) == verdict


def test_an_event_too_late_by_the_workers_clock_is_too_late_whatever_its_record_says() -> None:
    appended = NOW - 2 * HOUR_MS  # 49 h old now, 47 h old when appended
    assert reference.time_verdict(NOW - RETENTION_MS - HOUR_MS, appended, True, NOW) == "too_late"
    assert reference.time_verdict(NOW - RETENTION_MS, appended, True, NOW) == "accepted"


def _copies(plan: schedule.Schedule) -> list[tuple[int, schedule.Record, schedule.Element]]:
    return [(c.at_ms, r, e) for c in plan.chunks for r in c.records for e in r.elements]


def test_a_schedule_is_dense_around_every_seam() -> None:
    plan = schedule.generate(1, 3000, NOW)
    assert plan.end_ms - plan.start_ms >= 50 * HOUR_MS
    firsts: dict[str, tuple[int, dict[str, object]]] = {}
    seams: Counter[str] = Counter()
    for at, _, element in _copies(plan):
        body = element.body
        if body is None or element.malformed:
            continue
        if body["event_id"] not in firsts:
            firsts[body["event_id"]] = (at, body)
            continue
        first_at, first = firsts[body["event_id"]]
        delay, occurred = at - first_at, reference.event_ms(first)
        if body != first:
            seams["conflicting, another hour"] += reference.hour_of(reference.event_ms(body)) != (
                reference.hour_of(occurred)
            )
            seams["conflicting, another day"] += reference.day_of(reference.event_ms(body)) != (
                reference.day_of(occurred)
            )
            continue
        generation_end = (first_at // GENERATION_MS + MARKER_GENERATIONS) * GENERATION_MS
        near = {
            "at once": delay < 10_000,
            "marker generation": abs(at - generation_end),
            "markers' reach": abs(at - occurred - MARKER_REACH_MS),
            "retention": abs(at - occurred - RETENTION_MS),
            "80-100 min": 80 * MINUTE_MS <= delay <= 100 * MINUTE_MS,
        }
        for seam, distance in near.items():
            seams[seam] += distance is True or (distance is not False and distance <= 3 * MINUTE_MS)
        seams["hours later"] += delay > 3 * HOUR_MS
    records = [r for c in plan.chunks for r in c.records]
    skews = [
        r.record_ms - c.at_ms
        for c in plan.chunks
        for r in c.records
        if r.record_ms is not None and not r.log_append
    ]
    backlog = [
        c.at_ms - r.record_ms
        for c in plan.chunks
        for r in c.records
        if r.record_ms is not None and r.log_append
    ]
    expected = oracle.expect(plan)
    for seam in (
        "at once",
        "marker generation",
        "markers' reach",
        "retention",
        "80-100 min",
        "hours later",
        "conflicting, another hour",
        "conflicting, another day",
    ):
        assert seams[seam] >= 5, (seam, seams)
    assert min(skews) < -5 * MINUTE_MS and max(skews) > 5 * MINUTE_MS
    assert max(backlog) > HOUR_MS
    assert {r.batch for r in records} == {True, False}
    assert Counter(c.fault for c in plan.chunks).keys() >= {
        "none",
        "overlap",
        "crash_after_count",
        "crash_in_store",
        "handover",
    }
    assert {reason for reason, _ in expected.letters.values()} >= {
        "invalid_json",
        "invalid_utf8",
        "not_an_object",
        "missing_field",
        "invalid_field",
        "unknown_event_type",
        "unknown_stage",
        "future_timestamp",
        "too_late",
    }
    assert {w.body["event_type"] for w in expected.winners.values()} == set(schedule.EVENT_TYPES)
    assert expected.duplicates > 100


@pytest.mark.parametrize("seed", range(1, 9))
def test_the_closer_ticks_until_after_the_last_read(seed: int) -> None:
    """A chunk held back by an outage is read up to 3 h after the schedule's hours; a late
    event in it redoes its hour at the closer's next tick, which must come (seed 2 read one
    at +357 min of a 3 h schedule whose ticks ended at +200 min: 438 events "lost")."""
    plan = schedule.generate(seed, 2000, NOW, hours=3)
    reads = [chunk.at_ms for chunk in plan.chunks] + [c.replay_at_ms for c in plan.chunks]
    assert plan.ticks[-1] >= max(reads) + schedule.TICK_MS
    assert plan.end_ms >= plan.ticks[-1]
