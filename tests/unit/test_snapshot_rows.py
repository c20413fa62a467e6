"""Snapshot rows (aggregators/snapshot_rows.py): metrics from sums, window rows, the topic
record, and agreement with the DDL of voicemon/migrations/0003_snapshots.sql."""

from __future__ import annotations

import random
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import voicemon
from aggregators.snapshot_rows import (
    SNAPSHOT_COLUMNS,
    STAGE_COLUMNS,
    ArtifactMetrics,
    StageMetrics,
    artifact_metrics,
    message,
    snapshot_rows,
    stage_metrics,
)
from voicemon.sketch import bucket

T0 = 1_764_288_000_000  # 2025-11-28T00:00:00Z
HOUR = 3_600_000
DAY = 86_400_000
MIGRATION = Path(voicemon.__file__).parent / "migrations" / "0003_snapshots.sql"


def artifacts_row(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "artifacts_received": 10,
        "artifacts_completed": 6,
        "artifacts_failed": 2,
        "latency_samples": 4,
        "latency_sum": 1000.0,
        "latency_sketch": {},
        "ai_cost_usd": 1.5,
        "p50_latency_ms": 200.0,
        "p95_latency_ms": 400.0,
        "p99_latency_ms": 450.0,
    }
    row.update(overrides)
    return row


def stage_row(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "started": 9,
        "completed": 3,
        "failed": 1,
        "duration_samples": 3,
        "duration_sum": 600.0,
        "duration_sketch": {},
        "p95_duration_ms": 321.0,
    }
    row.update(overrides)
    return row


# -- artifact_metrics / stage_metrics --------------------------------------------------------


def test_artifact_metrics_exact() -> None:
    m = artifact_metrics(artifacts_row(), exact=True)
    assert m == ArtifactMetrics(
        artifacts_received=10,
        artifacts_completed=6,
        artifacts_failed=2,
        failure_rate=0.25,
        latency_samples=4,
        avg_latency_ms=250.0,
        p50_latency_ms=200.0,
        p95_latency_ms=400.0,
        p99_latency_ms=450.0,
        ai_cost_usd=1.5,
        latency_sketch={},
    )


def test_artifact_metrics_zero_denominators() -> None:
    m = artifact_metrics(
        artifacts_row(artifacts_completed=0, artifacts_failed=0, latency_samples=0), exact=True
    )
    assert m.failure_rate == 0.0
    assert m.avg_latency_ms == 0.0


def test_artifact_metrics_all_failed() -> None:
    m = artifact_metrics(artifacts_row(artifacts_completed=0, artifacts_failed=5), exact=True)
    assert m.failure_rate == 1.0


def test_artifact_metrics_converts_types() -> None:
    m = artifact_metrics(
        artifacts_row(
            artifacts_received="10",
            latency_samples="4",
            latency_sum="1000",
            ai_cost_usd="0.25",
            latency_sketch={"7": "3", -2: 1},
        ),
        exact=True,
    )
    assert m.artifacts_received == 10
    assert m.avg_latency_ms == 250.0
    assert m.ai_cost_usd == 0.25
    assert m.latency_sketch == {7: 3, -2: 1}


def test_artifact_metrics_from_sketch() -> None:
    samples = [100.0] * 50 + [200.0] * 45 + [1000.0] * 5
    sketch = dict(Counter(bucket(x) for x in samples))
    m = artifact_metrics(
        artifacts_row(
            latency_sketch=sketch,
            latency_samples=100,
            latency_sum=sum(samples),
            p50_latency_ms=-1.0,  # ignored when not exact
            p95_latency_ms=-1.0,
            p99_latency_ms=-1.0,
        ),
        exact=False,
    )
    assert m.p50_latency_ms == pytest.approx(200.0, rel=0.01)
    assert m.p95_latency_ms == pytest.approx(1000.0, rel=0.01)
    assert m.p99_latency_ms == pytest.approx(1000.0, rel=0.01)
    assert m.avg_latency_ms == 190.0  # (50 * 100 + 45 * 200 + 5 * 1000) / 100
    assert m.latency_sketch == sketch


def test_artifact_metrics_sketch_without_percentile_columns() -> None:
    row = artifacts_row()
    for name in ("p50_latency_ms", "p95_latency_ms", "p99_latency_ms"):
        del row[name]
    m = artifact_metrics(row, exact=False)
    assert (m.p50_latency_ms, m.p95_latency_ms, m.p99_latency_ms) == (0.0, 0.0, 0.0)


def test_stage_metrics_exact() -> None:
    assert stage_metrics(stage_row(), exact=True) == StageMetrics(
        started=9,
        completed=3,
        failed=1,
        failure_rate=0.25,
        duration_samples=3,
        avg_duration_ms=200.0,
        p95_duration_ms=321.0,
        duration_sketch={},
    )


def test_stage_metrics_from_sketch() -> None:
    samples = [10.0] * 90 + [500.0] * 10
    sketch = dict(Counter(bucket(x) for x in samples))
    m = stage_metrics(stage_row(duration_sketch=sketch, p95_duration_ms=-1.0), exact=False)
    assert m.p95_duration_ms == pytest.approx(500.0, rel=0.01)
    assert m.duration_sketch == sketch


def test_stage_metrics_zero_denominators() -> None:
    m = stage_metrics(stage_row(completed=0, failed=0, duration_samples=0), exact=True)
    assert m.failure_rate == 0.0
    assert m.avg_duration_ms == 0.0


@given(
    completed=st.integers(0, 10_000),
    failed=st.integers(0, 10_000),
    samples=st.integers(0, 1000),
    total=st.integers(0, 10**6),
)
def test_rates_and_averages_property(completed: int, failed: int, samples: int, total: int) -> None:
    m = artifact_metrics(
        artifacts_row(
            artifacts_completed=completed,
            artifacts_failed=failed,
            latency_samples=samples,
            latency_sum=float(total),
        ),
        exact=True,
    )
    s = stage_metrics(
        stage_row(completed=completed, failed=failed, duration_samples=samples, duration_sum=total),
        exact=True,
    )
    expected_rate = 0.0 if completed + failed == 0 else failed / (completed + failed)
    expected_avg = 0.0 if samples == 0 else total / samples
    assert m.failure_rate == expected_rate == s.failure_rate
    assert m.avg_latency_ms == expected_avg == s.avg_duration_ms
    assert 0.0 <= m.failure_rate <= 1.0


# -- snapshot_rows ---------------------------------------------------------------------------

STAGES = ("transcription", "draft_generation")


def zero_artifacts() -> dict[str, object]:
    return {
        "artifacts_received": 0,
        "artifacts_completed": 0,
        "artifacts_failed": 0,
        "failure_rate": 0.0,
        "latency_samples": 0,
        "avg_latency_ms": 0.0,
        "p50_latency_ms": 0.0,
        "p95_latency_ms": 0.0,
        "p99_latency_ms": 0.0,
        "ai_cost_usd": 0.0,
        "latency_sketch": {},
    }


def zero_stage() -> dict[str, object]:
    return {
        "started": 0,
        "completed": 0,
        "failed": 0,
        "failure_rate": 0.0,
        "duration_samples": 0,
        "avg_duration_ms": 0.0,
        "p95_duration_ms": 0.0,
        "duration_sketch": {},
    }


def pick(row: object, names: dict[str, object]) -> dict[str, object]:
    return {name: getattr(row, name) for name in names}


def test_snapshot_rows_of_an_empty_window() -> None:
    result = snapshot_rows("hourly", T0, HOUR, {}, {}, STAGES, 3, T0 + HOUR + 5_000)
    assert result.period_type == "hourly"
    assert result.period_start_ms == T0
    assert len(result.snapshots) == 1
    platform = result.snapshots[0]
    assert platform.scope == "platform"
    assert platform.organization_id == ""
    assert platform.period_type == "hourly"
    assert platform.period_start == datetime(2025, 11, 28, 0, tzinfo=UTC)
    assert platform.period_end == datetime(2025, 11, 28, 1, tzinfo=UTC)
    assert platform.version == 3
    assert platform.computed_at == datetime(2025, 11, 28, 1, 0, 5, tzinfo=UTC)
    assert pick(platform, zero_artifacts()) == zero_artifacts()
    # one platform stage row per configured stage, sorted by stage name
    assert [(r.scope, r.organization_id, r.stage) for r in result.stage_snapshots] == [
        ("platform", "", "draft_generation"),
        ("platform", "", "transcription"),
    ]
    for r in result.stage_snapshots:
        assert pick(r, zero_stage()) == zero_stage()
        assert r.period_end == datetime(2025, 11, 28, 1, tzinfo=UTC)


def test_snapshot_rows_with_organizations() -> None:
    acme = artifact_metrics(artifacts_row(), exact=True)
    beta = artifact_metrics(artifacts_row(artifacts_received=1), exact=True)
    platform = artifact_metrics(artifacts_row(artifacts_received=11), exact=True)
    acme_stage = stage_metrics(stage_row(), exact=True)
    platform_stage = stage_metrics(stage_row(started=20), exact=True)
    result = snapshot_rows(
        "daily",
        T0,
        DAY,
        {"beta": beta, "": platform, "acme": acme},
        {("acme", "transcription"): acme_stage, ("", "transcription"): platform_stage},
        STAGES,
        9,
        T0 + DAY + 90 * 60_000,
    )
    assert [(r.scope, r.organization_id) for r in result.snapshots] == [
        ("platform", ""),
        ("organization", "acme"),
        ("organization", "beta"),
    ]
    assert [r.artifacts_received for r in result.snapshots] == [11, 10, 1]
    assert all(r.period_type == "daily" for r in result.snapshots)
    assert all(r.period_end == datetime(2025, 11, 29, tzinfo=UTC) for r in result.snapshots)
    assert all(r.version == 9 for r in result.snapshots + result.stage_snapshots)
    assert result.snapshots[1].failure_rate == 0.25
    assert [(r.scope, r.organization_id, r.stage) for r in result.stage_snapshots] == [
        ("platform", "", "draft_generation"),
        ("platform", "", "transcription"),
        ("organization", "acme", "transcription"),
    ]
    assert [r.started for r in result.stage_snapshots] == [0, 20, 9]


@given(orgs=st.sets(st.text(alphabet="abcxyz019-", min_size=1, max_size=8), max_size=8))
def test_snapshot_rows_orgs_sorted_after_platform(orgs: set[str]) -> None:
    metrics = {org: artifact_metrics(artifacts_row(), exact=True) for org in orgs}
    result = snapshot_rows("hourly", T0, HOUR, metrics, {}, (), 1, T0)
    ids = [r.organization_id for r in result.snapshots]
    assert ids == ["", *sorted(orgs)]
    assert [r.scope for r in result.snapshots] == ["platform"] + ["organization"] * len(orgs)
    assert result.stage_snapshots == []


# -- message ---------------------------------------------------------------------------------


def test_message_key_and_value() -> None:
    sketch = {bucket(100.0): 3}
    metrics = artifact_metrics(artifacts_row(latency_sketch=sketch), exact=True)
    result = snapshot_rows(
        "hourly",
        T0,
        HOUR,
        {"": metrics},
        {},
        STAGES,
        4,
        T0 + HOUR + 1_234,
    )
    platform = result.snapshots[0]
    key, value = message(platform, result.stage_snapshots)
    assert key == b"hourly:platform::2025-11-28T00:00:00Z"
    body = orjson.loads(value)
    assert body["period_type"] == "hourly"
    assert body["scope"] == "platform"
    assert body["organization_id"] == ""
    assert body["period_start"] == "2025-11-28T00:00:00Z"
    assert body["period_end"] == "2025-11-28T01:00:00Z"
    assert datetime.fromisoformat(body["computed_at"]) == datetime(
        2025, 11, 28, 1, 0, 1, 234_000, tzinfo=UTC
    )
    assert body["version"] == 4
    assert body["artifacts_received"] == 10
    assert body["failure_rate"] == 0.25
    assert body["latency_sketch"] == {str(bucket(100.0)): 3}
    assert [s["stage"] for s in body["stages"]] == ["draft_generation", "transcription"]
    assert all(s["scope"] == "platform" and s["started"] == 0 for s in body["stages"])
    assert set(body) == set(SNAPSHOT_COLUMNS) | {"stages"}
    assert all(set(s) == set(STAGE_COLUMNS) for s in body["stages"])


def test_message_key_of_an_organization_daily_row() -> None:
    result = snapshot_rows(
        "daily",
        T0 - DAY,
        DAY,
        {"acme.eu": artifact_metrics(artifacts_row(), exact=True)},
        {},
        (),
        1,
        T0,
    )
    key, value = message(result.snapshots[1], [])
    assert key == b"daily:organization:acme.eu:2025-11-27T00:00:00Z"
    assert orjson.loads(value)["stages"] == []


# -- columns agree with the DDL --------------------------------------------------------------


def ddl_columns(sql: str, table: str) -> set[str]:
    sql = re.sub(r"--[^\n]*", "", sql)
    match = re.search(
        rf"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?{re.escape(table)}\s*\(", sql, re.IGNORECASE
    )
    assert match is not None, table
    depth, start = 1, match.end()
    index = start
    while depth:
        depth += {"(": 1, ")": -1}.get(sql[index], 0)
        index += 1
    body = sql[start : index - 1]
    parts, depth, current = [], 0, ""
    for char in body:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return {part.split()[0] for part in parts if part.strip()}


def test_ddl_parser_on_a_sample() -> None:
    sql = "-- (x\nCREATE TABLE IF NOT EXISTS db.t\n(\n a Map(Int32, UInt64),\n b DateTime('UTC')\n)"
    assert ddl_columns(sql, "db.t") == {"a", "b"}


def test_snapshot_columns_match_the_ddl() -> None:
    sql = MIGRATION.read_text(encoding="utf-8")
    assert set(SNAPSHOT_COLUMNS) == ddl_columns(sql, "voicemon.snapshots")
    assert len(SNAPSHOT_COLUMNS) == len(set(SNAPSHOT_COLUMNS))


def test_stage_columns_match_the_ddl() -> None:
    sql = MIGRATION.read_text(encoding="utf-8")
    assert set(STAGE_COLUMNS) == ddl_columns(sql, "voicemon.stage_snapshots")
    assert len(STAGE_COLUMNS) == len(set(STAGE_COLUMNS))


# -- the record's size (issue 16, item 9) ----------------------------------------------------

KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588
TWELVE_STAGES = [f"stage-{i:02d}" for i in range(12)]


def extreme_durations(n: int, seed: int) -> list[float]:
    """Valid durations from 5e-324 ms to 86,400,000 ms, log-uniform, with zeros and the
    bounds themselves mixed in."""
    rng = random.Random(seed)
    fixed = [0.0, 5e-324, 86_400_000.0]
    return [
        fixed[i % 3] if i % 7 == 0 else min(2.0 ** rng.uniform(-1074, 26.37), 86_400_000.0)
        for i in range(n)
    ]


def test_a_million_extreme_events_over_twelve_stages_make_a_record_under_kafkas_limit() -> None:
    # The sketch inputs of ~1M events: a twelfth of them completed artifacts, the others
    # stage completions spread over 12 stages (~77k samples per sketch).
    durations = extreme_durations(1_000_000, seed=16)
    sketches = [Counter(bucket(x) for x in durations[i::13]) for i in range(13)]
    latency = artifact_metrics(
        artifacts_row(latency_samples=len(durations[0::13]), latency_sketch=sketches[0]),
        exact=False,
    )
    stage_rows = {
        ("org-a", stage): stage_metrics(stage_row(duration_sketch=sketches[i + 1]), exact=False)
        for i, stage in enumerate(TWELVE_STAGES)
    }
    rows = snapshot_rows("daily", T0, DAY, {"org-a": latency}, stage_rows, TWELVE_STAGES, 2**40, T0)
    org_row = rows.snapshots[1]
    key, value = message(org_row, [r for r in rows.stage_snapshots if r.organization_id])
    assert len(key) + len(value) + 256 <= KAFKA_DEFAULT_MAX_MESSAGE_BYTES
    assert max(len(s) for s in sketches) <= 2520


def test_the_worst_case_record_bounds_every_record_and_fits_twelve_stages() -> None:
    from aggregators.snapshot_rows import RECORD_OVERHEAD_BYTES, worst_case_record_bytes

    worst = worst_case_record_bytes(TWELVE_STAGES)
    assert worst <= KAFKA_DEFAULT_MAX_MESSAGE_BYTES
    assert worst_case_record_bytes([*TWELVE_STAGES, "thirteenth"]) > worst
    # A full record of real rows (every bucket taken, huge counts) stays under the bound.
    full = dict.fromkeys([*range(-690, 1829), -(2**31)], 2**64 - 1)
    latency = artifact_metrics(artifacts_row(latency_sketch=full), exact=False)
    stage_rows = {("o" * 128, s): stage_metrics(stage_row(duration_sketch=full), exact=False)
                  for s in TWELVE_STAGES}  # fmt: skip
    rows = snapshot_rows("hourly", T0, HOUR, {"o" * 128: latency}, stage_rows, TWELVE_STAGES,
                         2**64 - 1, T0)  # fmt: skip
    key, value = message(rows.snapshots[1], rows.stage_snapshots[len(TWELVE_STAGES) :])
    assert len(key) + len(value) + RECORD_OVERHEAD_BYTES <= worst


def test_a_record_decodes_back_into_its_rows() -> None:
    from aggregators.snapshot_rows import from_message

    sketch = {bucket(x): 3 for x in (0.0, 1e-3, 7.5, 86_400_000.0)}
    latency = artifact_metrics(artifacts_row(latency_sketch=sketch), exact=True)
    stage_rows = {("org-a", "asr"): stage_metrics(stage_row(duration_sketch=sketch), exact=True)}
    rows = snapshot_rows("hourly", T0, HOUR, {"org-a": latency}, stage_rows, ["asr"], 7, T0 + 5)
    for row in rows.snapshots:
        stages = [s for s in rows.stage_snapshots if s.organization_id == row.organization_id]
        assert from_message(message(row, stages)[1]) == (row, stages)
