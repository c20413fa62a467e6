"""Rolling one-hour counters (voicemon/rolling.py): increments, the view, ratio."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.counter_rebuild import bucket_fields
from voicemon.event import EventType, PipelineEvent
from voicemon.rolling import first_minute, increments, ratio
from voicemon.rolling import view as window_view

T0 = 1_764_288_000_000  # 2025-11-28T00:00:00Z
M0 = T0 // 60_000  # its minute number
NOW = T0 + 30_000  # 2025-11-28T00:00:30Z, inside minute M0
TTL = 65 * 60_000  # a bucket lives 65 minutes past its minute's start

_ids = count()


def ev(
    event_type: EventType,
    at: int = NOW,
    *,
    org: str | None = None,
    stage: str | None = None,
    duration: float | None = None,
    cost: float | None = None,
) -> PipelineEvent:
    return PipelineEvent(
        event_id=f"e-{next(_ids)}",
        event_type=event_type,
        occurred_at_ms=at,
        artifact_id="a-1",
        organization_id=org,
        stage=stage,
        duration_ms=duration,
        ai_cost_usd=cost,
    )


def platform_key(minute: int) -> str:
    return f"vm:rz:{{p}}:{minute}"


def org_key(org: str, minute: int) -> str:
    return f"vm:rz:{{o:{org}}}:{minute}"


# -- first_minute / ratio --------------------------------------------------------------------


def test_first_minute() -> None:
    assert first_minute(T0) == M0 - 59
    assert first_minute(T0 + 59_999) == M0 - 59
    assert first_minute(T0 + 60_000) == M0 - 58


def test_ratio() -> None:
    assert ratio(1, 4) == 0.25
    assert ratio(3, 0) == 0.0
    assert ratio(0, 0) == 0.0
    assert ratio(0, 5) == 0.0


# -- increments ------------------------------------------------------------------------------


def test_increments_empty() -> None:
    assert increments([], NOW) == {}


def test_increments_platform_only_event() -> None:
    result = increments([ev(EventType.ARTIFACT_RECEIVED)], NOW)
    assert set(result) == {platform_key(M0)}
    bucket = result[platform_key(M0)]
    assert bucket.expire_at_ms == T0 + TTL
    assert dict(bucket.fields) == {"received": 1}


def test_increments_org_event_goes_to_both_scopes() -> None:
    result = increments([ev(EventType.ARTIFACT_FAILED, org="acme")], NOW)
    assert set(result) == {platform_key(M0), org_key("acme", M0)}
    for bucket in result.values():
        assert dict(bucket.fields) == {"failed": 1}
        assert bucket.expire_at_ms == T0 + TTL


def test_increments_sums_and_latency() -> None:
    events = [
        ev(EventType.ARTIFACT_RECEIVED, org="acme", cost=0.25),
        ev(EventType.ARTIFACT_COMPLETED, org="acme", duration=1500.0, cost=0.5),
        ev(EventType.ARTIFACT_COMPLETED, org="acme", duration=500.0),
        ev(EventType.ARTIFACT_COMPLETED, org="acme"),  # no duration: no latency sample
        ev(EventType.ARTIFACT_FAILED, org="acme", duration=900.0),  # failed: no latency
        ev(EventType.ARTIFACT_RECEIVED, org="beta"),
    ]
    result = increments(events, NOW)
    assert dict(result[org_key("acme", M0)].fields) == {
        "received": 1,
        "completed": 3,
        "failed": 1,
        "cost_sum": 0.75,
        "latency_sum": 2000.0,
        "latency_n": 2,
    }
    assert dict(result[org_key("beta", M0)].fields) == {"received": 1}
    assert dict(result[platform_key(M0)].fields) == {
        "received": 2,
        "completed": 3,
        "failed": 1,
        "cost_sum": 0.75,
        "latency_sum": 2000.0,
        "latency_n": 2,
    }


def test_increments_stage_fields() -> None:
    events = [
        ev(EventType.STAGE_STARTED, stage="transcription", duration=10.0),
        ev(EventType.STAGE_COMPLETED, stage="transcription", duration=250.0, cost=0.125),
        ev(EventType.STAGE_COMPLETED, stage="transcription"),
        ev(EventType.STAGE_FAILED, stage="transcription", duration=99.0),
        ev(EventType.STAGE_COMPLETED, stage="draft_generation", duration=1000.0),
    ]
    result = increments(events, NOW)
    assert set(result) == {platform_key(M0)}
    assert dict(result[platform_key(M0)].fields) == {
        "stage:transcription:started": 1,
        "stage:transcription:completed": 2,
        "stage:transcription:failed": 1,
        "stage:transcription:duration_sum": 250.0,
        "stage:transcription:duration_n": 1,
        "stage:draft_generation:completed": 1,
        "stage:draft_generation:duration_sum": 1000.0,
        "stage:draft_generation:duration_n": 1,
        "cost_sum": 0.125,
    }


def test_increments_window_boundary() -> None:
    oldest = M0 - 59
    events = [
        ev(EventType.ARTIFACT_RECEIVED, at=oldest * 60_000),  # oldest minute: kept
        ev(EventType.ARTIFACT_RECEIVED, at=oldest * 60_000 - 1),  # a minute older: skipped
        ev(EventType.ARTIFACT_RECEIVED, at=T0 - 2 * 3_600_000, org="acme"),  # skipped
        ev(EventType.ARTIFACT_RECEIVED, at=T0 + 59_999),  # current minute
    ]
    result = increments(events, NOW)
    assert set(result) == {platform_key(oldest), platform_key(M0)}
    assert result[platform_key(oldest)].expire_at_ms == oldest * 60_000 + TTL
    assert result[platform_key(oldest)].expire_at_ms == T0 - 59 * 60_000 + 65 * 60_000
    assert dict(result[platform_key(oldest)].fields) == {"received": 1}
    assert dict(result[platform_key(M0)].fields) == {"received": 1}


def test_increments_separate_minutes_separate_buckets() -> None:
    events = [
        ev(EventType.ARTIFACT_RECEIVED, at=T0 - 60_000, org="acme"),
        ev(EventType.ARTIFACT_RECEIVED, at=T0 - 1, org="acme"),
        ev(EventType.ARTIFACT_RECEIVED, at=T0, org="acme"),
    ]
    result = increments(events, NOW)
    assert dict(result[org_key("acme", M0 - 1)].fields) == {"received": 2}
    assert dict(result[org_key("acme", M0)].fields) == {"received": 1}
    assert result[org_key("acme", M0 - 1)].expire_at_ms == T0 - 60_000 + TTL


_ARTIFACT = {
    EventType.ARTIFACT_RECEIVED: "received",
    EventType.ARTIFACT_COMPLETED: "completed",
    EventType.ARTIFACT_FAILED: "failed",
}
_STAGE = {
    EventType.STAGE_STARTED: "started",
    EventType.STAGE_COMPLETED: "completed",
    EventType.STAGE_FAILED: "failed",
}


@st.composite
def events_strategy(draw: st.DrawFn) -> PipelineEvent:
    event_type = draw(st.sampled_from(list(EventType)))
    stage = (
        draw(st.sampled_from(["transcription", "draft_generation"]))
        if (event_type in _STAGE)
        else None
    )
    return ev(
        event_type,
        at=NOW + draw(st.integers(-2 * 3_600_000, 60_000)),
        org=draw(st.none() | st.sampled_from(["acme", "beta"])),
        stage=stage,
        duration=draw(st.none() | st.integers(0, 10_000).map(float)),
        cost=draw(st.none() | st.integers(0, 100).map(lambda c: c / 4)),
    )


@given(events=st.lists(events_strategy(), max_size=30), now_offset=st.integers(0, 86_399_999))
def test_increments_match_a_reference(events: list[PipelineEvent], now_offset: int) -> None:
    now = T0 + now_offset
    events = [
        PipelineEvent(
            event_id=e.event_id,
            event_type=e.event_type,
            occurred_at_ms=e.occurred_at_ms - NOW + now,
            artifact_id=e.artifact_id,
            organization_id=e.organization_id,
            stage=e.stage,
            duration_ms=e.duration_ms,
            ai_cost_usd=e.ai_cost_usd,
        )
        for e in events
    ]
    expected: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    window_start_ms = (now // 60_000 - 59) * 60_000
    for e in events:
        if e.occurred_at_ms < window_start_ms:
            continue
        minute = e.occurred_at_ms // 60_000
        scopes = [platform_key(minute)]
        if e.organization_id is not None:
            scopes.append(org_key(e.organization_id, minute))
        for key in scopes:
            fields = expected[key]
            if e.ai_cost_usd is not None:
                fields["cost_sum"] += e.ai_cost_usd
            if e.stage is None:
                fields[_ARTIFACT[e.event_type]] += 1
                if e.event_type == EventType.ARTIFACT_COMPLETED and e.duration_ms is not None:
                    fields["latency_sum"] += e.duration_ms
                    fields["latency_n"] += 1
            else:
                fields[f"stage:{e.stage}:{_STAGE[e.event_type]}"] += 1
                if e.event_type == EventType.STAGE_COMPLETED and e.duration_ms is not None:
                    fields[f"stage:{e.stage}:duration_sum"] += e.duration_ms
                    fields[f"stage:{e.stage}:duration_n"] += 1
    result = increments(events, now)
    assert set(result) == set(expected)
    for key, bucket in result.items():
        assert dict(bucket.fields) == dict(expected[key])
        minute = int(key.rsplit(":", 1)[1])
        assert bucket.expire_at_ms == minute * 60_000 + 65 * 60_000


# -- the view of the window's totals ------------------------------------------------------------


def summarize(
    buckets: list[dict[bytes, bytes]],
    *,
    organization_id: str | None,
    now_ms: int,
    stages: tuple[str, ...],
) -> dict[str, Any]:
    """The view of the buckets' field totals (each bucket as Redis returns it)."""
    totals: dict[str, float] = defaultdict(float)
    for bucket in buckets:
        for name, value in bucket.items():
            totals[name.decode()] += float(value)
    return window_view(totals, organization_id=organization_id, now_ms=now_ms, stages=stages)


STAGES = ("transcription", "draft_generation")


def test_summarize_empty_is_all_zeros() -> None:
    view = summarize([], organization_id=None, now_ms=NOW, stages=STAGES)
    zero_stage = {
        "started": 0,
        "completed": 0,
        "failed": 0,
        "failure_rate": 0.0,
        "avg_duration_ms": 0.0,
    }
    assert view == {
        "organization_id": None,
        "window_start": "2025-11-27T23:01:00Z",
        "window_end": "2025-11-28T00:01:00Z",
        "as_of": "2025-11-28T00:00:30Z",
        "artifacts_received": 0,
        "artifacts_completed": 0,
        "artifacts_failed": 0,
        "failure_rate": 0.0,
        "avg_latency_ms": 0.0,
        "ai_cost_usd": 0.0,
        "stages": {"transcription": zero_stage, "draft_generation": zero_stage},
    }


def test_summarize_sums_buckets() -> None:
    buckets = [
        {b"received": b"5", b"completed": b"3", b"cost_sum": b"1.25", b"latency_sum": b"600"},
        {
            b"received": b"2",
            b"completed": b"1",
            b"failed": b"4",
            b"cost_sum": b"0.5",
            b"latency_sum": b"400",
            b"latency_n": b"4",
            b"stage:transcription:started": b"7",
            b"stage:transcription:completed": b"3",
            b"stage:transcription:failed": b"1",
            b"stage:transcription:duration_sum": b"300.0",
            b"stage:transcription:duration_n": b"3",
            b"stage:unconfigured:started": b"9",
        },
        {},
    ]
    view = summarize(buckets, organization_id="acme", now_ms=T0 + 3_600_000 - 1, stages=STAGES)
    assert view["organization_id"] == "acme"
    assert view["window_start"] == "2025-11-28T00:00:00Z"
    assert view["window_end"] == "2025-11-28T01:00:00Z"
    assert view["as_of"] == "2025-11-28T00:59:59.999000Z"
    assert view["artifacts_received"] == 7
    assert view["artifacts_completed"] == 4
    assert view["artifacts_failed"] == 4
    assert view["failure_rate"] == 0.5
    assert view["avg_latency_ms"] == 250.0
    assert view["ai_cost_usd"] == 1.75
    assert view["stages"] == {
        "transcription": {
            "started": 7,
            "completed": 3,
            "failed": 1,
            "failure_rate": 0.25,
            "avg_duration_ms": 100.0,
        },
        "draft_generation": {
            "started": 0,
            "completed": 0,
            "failed": 0,
            "failure_rate": 0.0,
            "avg_duration_ms": 0.0,
        },
    }
    assert isinstance(view["artifacts_received"], int)
    assert isinstance(view["stages"]["transcription"]["started"], int)


def test_summarize_latency_without_samples_is_zero() -> None:
    view = summarize(
        [{b"latency_sum": b"500", b"completed": b"2"}],
        organization_id=None,
        now_ms=NOW,
        stages=(),
    )
    assert view["avg_latency_ms"] == 0.0
    assert view["failure_rate"] == 0.0
    assert view["stages"] == {}


@given(offset=st.integers(0, 86_399_999))
def test_summarize_window_strings_over_a_day(offset: int) -> None:
    now = T0 + offset
    view = summarize([], organization_id=None, now_ms=now, stages=())
    minute_start = T0 + offset - offset % 60_000
    base = datetime(2025, 11, 28, tzinfo=UTC)
    start = datetime.fromisoformat(view["window_start"])
    end = datetime.fromisoformat(view["window_end"])
    as_of = datetime.fromisoformat(view["as_of"])
    assert as_of == base + timedelta(milliseconds=offset)
    assert end == base + timedelta(milliseconds=minute_start - T0 + 60_000)
    assert end - start == timedelta(hours=1)
    assert start <= as_of < end
    for text in (view["window_start"], view["window_end"], view["as_of"]):
        assert text.endswith("Z")


@pytest.mark.parametrize(
    ("completed", "failed", "rate"), [(0, 0, 0.0), (3, 1, 0.25), (0, 2, 1.0), (9, 0, 0.0)]
)
def test_summarize_failure_rate(completed: int, failed: int, rate: float) -> None:
    bucket = {b"completed": str(completed).encode(), b"failed": str(failed).encode()}
    view = summarize([bucket], organization_id=None, now_ms=NOW, stages=())
    assert view["failure_rate"] == rate


# -- one definition of the counter fields: ingest and the rebuild write the same names --------


@given(events=st.lists(events_strategy(), min_size=1, max_size=30))
def test_rebuild_rows_add_the_fields_ingest_adds(events: list[PipelineEvent]) -> None:
    """The rebuild's aggregated rows (consumers.counter_rebuild) give each bucket the fields
    and values that counting the same events gives it, wherever a cost is non-zero (the
    rebuild cannot tell a zero cost from none, and omits both)."""
    groups: dict[tuple[EventType, str | None], list[PipelineEvent]] = defaultdict(list)
    for e in events:  # one minute, one scope: the row's bucket
        same = ev(e.event_type, stage=e.stage, duration=e.duration_ms, cost=e.ai_cost_usd)
        groups[e.event_type, e.stage].append(same)
    for (event_type, stage), members in groups.items():
        durations = [e.duration_ms for e in members if e.duration_ms is not None]
        cost = sum(e.ai_cost_usd or 0 for e in members)
        row = (0, "", event_type.value, stage or "", len(members), len(durations),
               sum(durations), cost)  # fmt: skip
        counted = dict(increments(members, NOW)[platform_key(M0)].fields)
        if not cost:
            counted.pop("cost_sum", None)
        assert bucket_fields(row) == counted
