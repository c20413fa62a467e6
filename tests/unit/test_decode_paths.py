"""The fast decode path (msgspec) reaches exactly the verdicts of the reference path (orjson +
``validate_event``) on any input: differential tests over hostile JSON text."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.decode import _decode_fast, _decode_reference, decode_message
from voicemon.event import EventType

NOW_MS = 1_790_000_000_000
STAGES = frozenset({"transcription", "claims_extraction"})

# JSON number spellings the two parsers might read differently.
NUMBERS = st.sampled_from(
    [
        "0", "-0", "1", "1.0", "1e2", "1E2", "1e-400", "1e400", "-1", "0.5", "86400000",
        "86400000.0000001", "86400001", "10000", "10000.000001", "9007199254740993",
        "18446744073709551615", "18446744073709551616", "-9223372036854775808",
        "-9223372036854775809", "1790000000000", "1790000300001", "1789827199999", "01", "1.",
        ".5", "+1", "NaN", "Infinity", "true", "false", "null", "65535", "65536",
    ]
)  # fmt: skip
STRINGS = st.one_of(
    st.sampled_from(
        [
            '"a"', '""', '"transcription"', '"claims_extraction"', '"x\\u0000"', '"\\ud800"',
            '"\\ud83d\\ude00"', '"org-1.a:b_c"', '"org\\n"', '"org 1"', '"\\u00e9"',
            '"2026-09-21T13:46:40Z"', '"2026-09-21T13:46:40.123456789+02:00"',
            '"2026-09-21t13:46:40z"', '"2026-09-21 13:46:40Z"', '"2026-09-21T13:46:40"',
            '"2026-09-21T24:00:00Z"', '"2026-09-21T13:46:60Z"', '"2026-09-21T13:46:40+25:00"',
            '"2026-09-21"', '"artifact_completed"', '"stage_failed"', '"unknown"',
        ]
    ),
    st.text(max_size=140).map(lambda text: orjson.dumps(text).decode()),
)  # fmt: skip
FIELDS = st.sampled_from(
    [
        "event_id", "event_type", "occurred_at", "artifact_id", "organization_id", "stage",
        "duration_ms", "ai_cost_usd", "error_code", "schema_version", "extra",
    ]
)  # fmt: skip
VALUES = st.one_of(NUMBERS, STRINGS, st.sampled_from(["[]", "{}", '{"a":1}', "[1,2]"]))


def _valid(index: int) -> dict[str, object]:
    event_type = list(EventType)[index % 6]
    event: dict[str, object] = {
        "event_id": f"e{index}",
        "event_type": event_type.value,
        "occurred_at": NOW_MS - index,
        "artifact_id": "a",
        "organization_id": "org-1",
        "duration_ms": 12.5,
        "ai_cost_usd": 0.01,
    }
    if event_type.value.startswith("stage_"):
        event["stage"] = "transcription"
    return event


@st.composite
def event_text(draw: st.DrawFn) -> str:
    """A valid event's members, some replaced, added or repeated with hostile values."""
    members = [
        f"{orjson.dumps(k).decode()}:{orjson.dumps(v).decode()}"
        for k, v in _valid(draw(st.integers(0, 11))).items()
    ]
    for _ in range(draw(st.integers(0, 3))):
        member = f'"{draw(FIELDS)}":{draw(VALUES)}'
        if members and draw(st.booleans()):
            members[draw(st.integers(0, len(members) - 1))] = member
        else:
            members.insert(draw(st.integers(0, len(members))), member)
    spacing = draw(st.sampled_from(["", " ", "\n", "\t "]))
    return "{" + ("," + spacing).join(members) + "}"


@st.composite
def message(draw: st.DrawFn) -> bytes:
    events = draw(st.lists(event_text(), min_size=1, max_size=4))
    text = events[0] if len(events) == 1 and draw(st.booleans()) else "[" + ",".join(events) + "]"
    raw = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 9)) == 0:  # a byte of damage now and then
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1 :]
    return raw


def _same(raw: bytes) -> None:
    reference = _decode_reference(raw, now_ms=NOW_MS, stages=STAGES)
    assert decode_message(raw, now_ms=NOW_MS, stages=STAGES) == reference, raw


@settings(max_examples=3000, deadline=None)
@given(message())
def test_fast_path_decides_as_the_reference(raw: bytes) -> None:
    _same(raw)


def test_fast_path_takes_valid_messages() -> None:
    """The fast path is taken (not only fallen back from) for what producers send."""
    batch = orjson.dumps([_valid(i) for i in range(12)])
    decoded = _decode_fast(batch, NOW_MS, STAGES)
    assert decoded is not None and len(decoded) == 12
    assert decoded == _decode_reference(batch, now_ms=NOW_MS, stages=STAGES)
    single = orjson.dumps({**_valid(3), "occurred_at": "2026-09-21T13:46:40.5Z"})
    assert _decode_fast(single, NOW_MS, STAGES) == _decode_reference(
        single, now_ms=NOW_MS, stages=STAGES
    )


def test_fast_path_leaves_the_rest_to_the_reference() -> None:
    for raw in (
        orjson.dumps({**_valid(0), "extra": 1}),  # unknown field
        orjson.dumps([_valid(0), {**_valid(1), "event_type": "nope"}]),  # one bad element
        b'{"event_id":"e","event_type":"artifact_received","artifact_id":"a",'
        b'"occurred_at":1790000000000,"x":"\xff"}',  # invalid UTF-8 in an ignored field
        b'{"event_id":"e","event_type":"artifact_received","artifact_id":"a",'
        b'"occurred_at":1790000000000,"x":1e400}',  # a number orjson refuses
        orjson.dumps(_valid(0)) + b" " * 70_000,  # a large message of a small event
        orjson.dumps({**_valid(0), "organization_id": "org\n"}),
    ):
        assert _decode_fast(raw, NOW_MS, STAGES) is None, raw[:80]
        _same(raw)
