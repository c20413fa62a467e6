"""Hourly and daily snapshots computed by the real ClickHouse engine vs the reference."""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregators.closing import snapshots
from aggregators.snapshot_rows import SnapshotSet
from consumers.raw_writer import RawWriter
from consumers.rows import Position, RawRow
from tests import reference
from voicemon.event import PipelineEvent, validate_event
from voicemon.settings import DEFAULT_STAGES
from voicemon.store import Client
from voicemon.windows import DAY_MS, HOUR_MS

STAGES = DEFAULT_STAGES
TYPES = ("artifact_received", "artifact_completed", "artifact_failed",
         "stage_started", "stage_completed", "stage_failed")  # fmt: skip


def random_events(
    rng: random.Random, start_ms: int, span_ms: int, count: int, orgs: int
) -> list[dict[str, Any]]:
    events = []
    for i in range(count):
        event_type = rng.choice(TYPES)
        event: dict[str, Any] = {
            "event_id": f"ev-{start_ms}-{i}",
            "event_type": event_type,
            "occurred_at": start_ms + rng.randrange(span_ms),
            "artifact_id": f"a-{rng.randrange(count)}",
        }
        if orgs and rng.random() < 0.9:
            event["organization_id"] = f"org-{rng.randrange(orgs)}"
        if event_type.startswith("stage"):
            event["stage"] = rng.choice(STAGES)
        if rng.random() < 0.8:
            event["duration_ms"] = rng.choice(
                [0, round(rng.lognormvariate(7, 1.2), 3), rng.randrange(1, 5000)]
            )
        if rng.random() < 0.6:
            event["ai_cost_usd"] = round(rng.uniform(0, 0.2), 6)
        events.append(event)
        if rng.random() < 0.05:  # a duplicate that reached the raw table (replayed store)
            events.append(dict(event))
    return events


def store_raw(store: Client, events: list[dict[str, Any]]) -> None:
    rows = []
    for offset, body in enumerate(events):
        event = validate_event(body, now_ms=body["occurred_at"], stages=frozenset(STAGES))
        assert isinstance(event, PipelineEvent), event
        rows.append(RawRow(event, Position(0, offset, 0)))
    RawWriter(store).write(rows)


def in_window(
    events: list[dict[str, Any]], start: int, length: int, org: str | None = None
) -> list[dict[str, Any]]:
    return [
        e for e in reference.first_occurrences(events)
        if start <= reference.event_ms(e) < start + length
        and (org is None or e.get("organization_id") == org)
    ]  # fmt: skip


def assert_matches(row: dict[str, Any], expected: dict[str, Any], exact_percentiles: bool) -> None:
    for name in ("artifacts_received", "artifacts_completed", "artifacts_failed"):
        assert row[name] == expected[name], name
    for name in ("failure_rate", "avg_latency_ms", "ai_cost_usd"):
        assert row[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-9), name
    for name in ("p50_latency_ms", "p95_latency_ms", "p99_latency_ms"):
        if exact_percentiles:
            assert row[name] == expected[name], name
        else:
            assert row[name] == pytest.approx(expected[name], rel=0.01, abs=1e-9), name


def assert_stage_matches(row: dict[str, Any], expected: dict[str, Any], exact: bool) -> None:
    for name in ("started", "completed", "failed"):
        assert row[name] == expected[name], name
    for name in ("failure_rate", "avg_duration_ms"):
        assert row[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-9), name
    rel = 0 if exact else 0.01
    assert row["p95_duration_ms"] == pytest.approx(expected["p95_duration_ms"], rel=rel, abs=1e-9)


def check_window(
    snapshot_set: SnapshotSet, events: list[dict[str, Any]], length: int, exact: bool
) -> None:
    start = snapshot_set.period_start_ms
    window = in_window(events, start, length)
    orgs = sorted({e["organization_id"] for e in window if "organization_id" in e})
    by_org = {row.organization_id: asdict(row) for row in snapshot_set.snapshots}
    assert sorted(by_org) == ["", *orgs]  # platform always; orgs with events only
    for org in ["", *orgs]:
        expected = reference.metrics(in_window(events, start, length, org or None), STAGES)
        assert_matches(by_org[org], expected, exact)
        assert by_org[org]["scope"] == ("organization" if org else "platform")
        stage_rows = {
            r.stage: asdict(r) for r in snapshot_set.stage_snapshots if r.organization_id == org
        }
        for stage, row in stage_rows.items():
            assert_stage_matches(row, expected["stages"][stage], exact)
        if not org:
            assert sorted(stage_rows) == sorted(STAGES)
    for row in [*snapshot_set.snapshots, *snapshot_set.stage_snapshots]:
        assert all(math.isfinite(v) for v in asdict(row).values() if isinstance(v, float))


@pytest.fixture
def hour_ms(now_ms: int) -> int:
    return now_ms - now_ms % HOUR_MS - 3 * HOUR_MS


def test_an_hour_matches_the_reference_exactly(
    clean_store: Client, hour_ms: int, now_ms: int
) -> None:
    events = random_events(random.Random(11), hour_ms - 600_000, HOUR_MS + 1_200_000, 6000, 40)
    store_raw(clean_store, events)
    snapshot_set = snapshots.compute_hour(clean_store, hour_ms, STAGES, 1, now_ms)
    check_window(snapshot_set, events, HOUR_MS, exact=True)
    assert snapshot_set.snapshots[0].artifacts_received > 0


def test_an_empty_hour_has_a_zero_platform_row(
    clean_store: Client, hour_ms: int, now_ms: int
) -> None:
    snapshot_set = snapshots.compute_hour(clean_store, hour_ms, STAGES, 1, now_ms)
    [row] = snapshot_set.snapshots
    assert row.organization_id == "" and row.artifacts_received == 0
    assert row.failure_rate == 0 and row.p99_latency_ms == 0 and row.avg_latency_ms == 0
    assert len(snapshot_set.stage_snapshots) == len(STAGES)
    check_window(snapshot_set, [], HOUR_MS, exact=True)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 10_000), count=st.integers(0, 300), orgs=st.integers(0, 6))
def test_generated_hours_match_the_reference(
    clean_store: Client, hour_ms: int, now_ms: int, seed: int, count: int, orgs: int
) -> None:
    for table in ("pipeline_events",):
        clean_store.command(f"TRUNCATE TABLE voicemon.{table}")
    events = random_events(random.Random(seed), hour_ms, HOUR_MS, count, orgs)
    store_raw(clean_store, events)
    snapshot_set = snapshots.compute_hour(clean_store, hour_ms, STAGES, 1, now_ms)
    check_window(snapshot_set, events, HOUR_MS, exact=True)


def test_a_day_merges_its_hours_within_one_percent(clean_store: Client, now_ms: int) -> None:
    day = now_ms - now_ms % DAY_MS - DAY_MS
    events = random_events(random.Random(5), day, DAY_MS, 20_000, 12)
    quiet_hour = day + 7 * HOUR_MS  # a zero-event hour inside the day
    events = [e for e in events if not quiet_hour <= e["occurred_at"] < quiet_hour + HOUR_MS]
    store_raw(clean_store, events)
    for hour in range(day, day + DAY_MS, HOUR_MS):
        snapshots.write(clean_store, snapshots.compute_hour(clean_store, hour, STAGES, 1, now_ms))
    snapshot_set = snapshots.compute_day(clean_store, day, STAGES, 2, now_ms)
    check_window(snapshot_set, events, DAY_MS, exact=False)
    assert {r.period_type for r in snapshot_set.snapshots} == {"daily"}


def test_newest_version_wins_in_latest_views(
    clean_store: Client, hour_ms: int, now_ms: int
) -> None:
    events = random_events(random.Random(2), hour_ms, HOUR_MS, 50, 2)
    store_raw(clean_store, events[:25])
    snapshots.write(clean_store, snapshots.compute_hour(clean_store, hour_ms, STAGES, 1, now_ms))
    store_raw(clean_store, events[25:])
    snapshots.write(clean_store, snapshots.compute_hour(clean_store, hour_ms, STAGES, 2, now_ms))
    rows = clean_store.query(
        "SELECT organization_id, version, artifacts_received FROM voicemon.snapshots_latest"
    ).result_rows
    assert {version for _, version, _ in rows} == {2}
    expected = reference.metrics(in_window(events, hour_ms, HOUR_MS), STAGES)
    assert dict((org, n) for org, _, n in rows)[""] == expected["artifacts_received"]
    keys = clean_store.query(
        "SELECT count(), uniqExact(organization_id, stage) FROM voicemon.stage_snapshots_latest"
    ).result_rows[0]
    assert keys[0] == keys[1]


@pytest.mark.parametrize("shift", [HOUR_MS, -HOUR_MS, -DAY_MS, 2 * HOUR_MS + 1])
def test_a_conflicting_copy_in_another_hour_counts_only_where_the_first_copy_is(
    clean_store: Client, hour_ms: int, now_ms: int, shift: int
) -> None:
    """A copy of an event with another ``occurred_at`` that reached the store later (past the
    markers' reach) never counts a second time, in any hour, day or range (CONTRACT §3.1)."""
    stages = frozenset(STAGES)
    first = {"event_id": "twice", "event_type": "artifact_received",
             "occurred_at": hour_ms + 600_000, "artifact_id": "a"}  # fmt: skip
    later = first | {"occurred_at": hour_ms + 600_000 + shift}
    writer = RawWriter(clean_store)
    for offset, body in enumerate([first, later]):
        event = validate_event(body, now_ms=body["occurred_at"], stages=stages)
        assert isinstance(event, PipelineEvent)
        writer.write([RawRow(event, Position(0, offset, 0))])
        time.sleep(0.005)  # the later copy is stored later
    hours = sorted({hour_ms, (hour_ms + 600_000 + shift) // HOUR_MS * HOUR_MS})
    received = [snapshots.compute_hour(clean_store, hour, STAGES, 1, now_ms).snapshots[0]
                .artifacts_received for hour in hours]  # fmt: skip
    assert received == [1 if hour == hour_ms else 0 for hour in hours]
