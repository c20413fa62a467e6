"""The event validator and the message decoder (CONTRACT §3)."""

from __future__ import annotations

import json
import re
from datetime import datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.decode import AcceptedEvent, RejectedPayload, decode_message
from voicemon.event import (
    MAX_EVENT_BYTES,
    EventType,
    PipelineEvent,
    Rejection,
    RejectReason,
    parse_occurred_at,
    validate_event,
)
from voicemon.settings import DEFAULT_STAGES

NOW = 1_795_000_000_000
STAGES = frozenset(DEFAULT_STAGES)


def event(**fields: object) -> dict[str, object]:
    body: dict[str, object] = {
        "event_id": "e-1",
        "event_type": "artifact_received",
        "occurred_at": NOW - 1000,
        "artifact_id": "a-1",
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not ...}


def verdict(value: object) -> PipelineEvent | Rejection:
    return validate_event(value, now_ms=NOW, stages=STAGES)


def reason(value: object) -> RejectReason:
    result = verdict(value)
    assert isinstance(result, Rejection), result
    return result.reason


def test_minimal_event_is_accepted_with_defaults() -> None:
    result = verdict(event())
    assert result == PipelineEvent("e-1", EventType.ARTIFACT_RECEIVED, NOW - 1000, "a-1")


def test_full_stage_event_is_accepted() -> None:
    result = verdict(
        event(
            event_type="stage_completed",
            stage="transcription",
            duration_ms=12.5,
            ai_cost_usd=0.25,
            organization_id="org_1.a:b-c",
            error_code=None,
            extra={"x": 1},
        )
    )
    assert isinstance(result, PipelineEvent)
    assert (result.stage, result.duration_ms, result.ai_cost_usd) == ("transcription", 12.5, 0.25)
    assert result.organization_id == "org_1.a:b-c"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-28T19:00:00Z", 1795892400000),
        ("2026-11-28T19:00:00.123456Z", 1795892400123),
        ("2026-11-28T20:00:00+01:00", 1795892400000),
        ("2026-11-28 19:00:00.5z", 1795892400500),
        ("2026-11-28T19:00:00", None),
        ("2026-11-28", None),
        ("2026-13-28T19:00:00Z", None),
        ("yesterday", None),
    ],
)
def test_occurred_at_forms(text: str, expected: int | None) -> None:
    assert parse_occurred_at(text) == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"event_id": ...}, RejectReason.MISSING_FIELD),
        ({"event_id": None}, RejectReason.MISSING_FIELD),
        ({"artifact_id": ...}, RejectReason.MISSING_FIELD),
        ({"occurred_at": ...}, RejectReason.MISSING_FIELD),
        ({"event_type": "artifact_teleported"}, RejectReason.UNKNOWN_EVENT_TYPE),
        ({"event_type": 7}, RejectReason.INVALID_FIELD),
        ({"event_id": ""}, RejectReason.INVALID_FIELD),
        ({"event_id": "x" * 129}, RejectReason.INVALID_FIELD),
        ({"event_id": 12}, RejectReason.INVALID_FIELD),
        ({"organization_id": "has space"}, RejectReason.INVALID_FIELD),
        ({"organization_id": ""}, RejectReason.INVALID_FIELD),
        ({"duration_ms": -1}, RejectReason.INVALID_FIELD),
        ({"duration_ms": 86_400_001}, RejectReason.INVALID_FIELD),
        ({"duration_ms": "12"}, RejectReason.INVALID_FIELD),
        ({"duration_ms": True}, RejectReason.INVALID_FIELD),
        ({"ai_cost_usd": 10_000.01}, RejectReason.INVALID_FIELD),
        ({"error_code": "e" * 129}, RejectReason.INVALID_FIELD),
        ({"occurred_at": "not a time"}, RejectReason.INVALID_FIELD),
        ({"occurred_at": 1.5e12}, RejectReason.INVALID_FIELD),
        ({"occurred_at": True}, RejectReason.INVALID_FIELD),
        ({"schema_version": "1"}, RejectReason.INVALID_FIELD),
        ({"stage": "transcription"}, RejectReason.INVALID_FIELD),
        ({"event_type": "stage_started"}, RejectReason.MISSING_FIELD),
        ({"event_type": "stage_failed", "stage": "mastering"}, RejectReason.UNKNOWN_STAGE),
        ({"occurred_at": NOW + 5 * 60_000 + 1}, RejectReason.FUTURE_TIMESTAMP),
        ({"occurred_at": NOW - 48 * 3_600_000 - 1}, RejectReason.TOO_LATE),
    ],
)
def test_each_rule_has_its_reason(fields: dict[str, object], expected: RejectReason) -> None:
    assert reason(event(**fields)) is expected


def test_time_bounds_are_inclusive() -> None:
    assert isinstance(verdict(event(occurred_at=NOW + 5 * 60_000)), PipelineEvent)
    assert isinstance(verdict(event(occurred_at=NOW - 48 * 3_600_000)), PipelineEvent)


def test_rejection_detail_names_the_field() -> None:
    result = verdict(event(duration_ms="slow"))
    assert isinstance(result, Rejection)
    assert result.detail.startswith("duration_ms:")


def decode(raw: bytes) -> list[AcceptedEvent | RejectedPayload]:
    return decode_message(raw, now_ms=NOW, stages=STAGES)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"\xff\xfe{}", RejectReason.INVALID_UTF8),
        (b"{nope", RejectReason.INVALID_JSON),
        (b"", RejectReason.INVALID_JSON),
        (b'{"a": NaN}', RejectReason.INVALID_JSON),
        (b"[]", RejectReason.NOT_AN_OBJECT),
        (b"42", RejectReason.NOT_AN_OBJECT),
        (b"null", RejectReason.NOT_AN_OBJECT),
        (b" " * (1024 * 1024 + 1), RejectReason.TOO_LARGE),
        (orjson.dumps([event()] * 1001), RejectReason.TOO_LARGE),
        (orjson.dumps(event(pad="x" * MAX_EVENT_BYTES)), RejectReason.TOO_LARGE),
    ],
)
def test_whole_message_rejections_keep_the_original_bytes(
    raw: bytes, expected: RejectReason
) -> None:
    [item] = decode(raw)
    assert isinstance(item, RejectedPayload)
    assert (item.rejection.reason, item.payload, item.batch_index) == (expected, raw, None)


def test_batch_rejects_only_its_bad_elements() -> None:
    elements = [
        event(event_id="ok-0"),
        7,
        event(event_id="ok-2", event_type="nope"),
        event(event_id="ok-3"),
        event(event_id="big", pad="x" * MAX_EVENT_BYTES),
    ]
    items = decode(orjson.dumps(elements))
    assert [type(i).__name__ for i in items] == [
        "AcceptedEvent",
        "RejectedPayload",
        "RejectedPayload",
        "AcceptedEvent",
        "RejectedPayload",
    ]
    rejected = [i for i in items if isinstance(i, RejectedPayload)]
    assert [(r.batch_index, r.rejection.reason) for r in rejected] == [
        (1, RejectReason.NOT_AN_OBJECT),
        (2, RejectReason.UNKNOWN_EVENT_TYPE),
        (4, RejectReason.TOO_LARGE),
    ]
    assert rejected[0].payload == b"7"
    assert orjson.loads(rejected[1].payload) == elements[2]
    assert [i.batch_index for i in items if isinstance(i, AcceptedEvent)] == [0, 3]


def test_single_event_has_batch_index_zero() -> None:
    [item] = decode(orjson.dumps(event()))
    assert isinstance(item, AcceptedEvent) and item.batch_index == 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)
field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=200),
    st.sampled_from([t.value for t in EventType] + list(DEFAULT_STAGES)),
    json_values,
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        name: field_values
        for name in (
            "event_id",
            "event_type",
            "occurred_at",
            "artifact_id",
            "organization_id",
            "stage",
            "duration_ms",
            "ai_cost_usd",
            "error_code",
            "schema_version",
        )
    },
)


def _check_decoded(raw: bytes) -> None:
    items = decode(raw)
    assert items, "a message always yields at least one verdict"
    for item in items:
        assert isinstance(item, AcceptedEvent | RejectedPayload)
        if isinstance(item, RejectedPayload):
            assert item.rejection.reason in RejectReason and item.rejection.detail


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=300))
def test_decoder_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    _check_decoded(raw)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(event_like, json_values, st.lists(event_like, max_size=5)))
def test_decoder_never_raises_on_json_shaped_input(value: object) -> None:
    _check_decoded(json.dumps(value).encode())


@pytest.mark.parametrize("depth", [10, 300, 1100])
def test_deeply_nested_elements_never_raise(depth: int) -> None:
    nested = "[" * depth + "]" * depth
    raw = f'[{{"event_id": "x", "event_type": "nope", "deep": {nested}}}, {nested}]'.encode()
    _check_decoded(raw)
    _check_decoded(nested.encode())


def _occurred_at_by_parts(value: str) -> int | None:
    """The reference reading of an RFC 3339 time: its parts, normalised, read by Python."""
    match = re.match(
        r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$", value
    )
    if match is None:
        return None
    date, time, fraction, offset = match.groups()
    micros = (fraction or ".0")[1:7].ljust(6, "0")
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        parsed = datetime.fromisoformat(f"{date}T{time}.{micros}{offset}")
    except ValueError:
        return None
    return int(parsed.replace(microsecond=0).timestamp()) * 1000 + parsed.microsecond // 1000


@settings(max_examples=2000, deadline=None)
@given(
    st.from_regex(
        r"\A[0-9]{4}-[0-1][0-9]-[0-3][0-9][Tt ][0-2][0-9]:[0-6][0-9]:[0-6][0-9](\.[0-9]{1,12})?"
        r"([Zz]|[+-][0-2][0-9]:[0-6][0-9])\Z"
    )
)
def test_occurred_at_is_read_as_its_parts_say(value: str) -> None:
    assert parse_occurred_at(value) == _occurred_at_by_parts(value)
