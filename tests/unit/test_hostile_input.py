"""Byte-level and structural fuzz of the decoder: never an exception, always a verdict.

At least 10,000 generated cases in CI; ``VOICEMON_FUZZ_EXAMPLES`` raises the count on demand.
"""

from __future__ import annotations

import json
import os

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.decode import AcceptedEvent, RejectedPayload, decode_message
from voicemon.event import MAX_EVENT_BYTES, MAX_MESSAGE_BYTES, RejectReason
from voicemon.settings import DEFAULT_STAGES

NOW = 1_795_000_000_000
EXAMPLES = int(os.environ.get("VOICEMON_FUZZ_EXAMPLES", "10000"))
FUZZ = settings(max_examples=EXAMPLES // 2, deadline=None, suppress_health_check=list(HealthCheck))

TRICKY_TEXT = st.sampled_from([
    "\u202e" + "lanigiro", "a\u200bb", "\x00", "\uff45\uff56\uff45\uff4e\uff54", "🎙️" * 40,
    "\ufeffid", "e\u0301", "x" * 129, "", " ", "{p}", "{o:org}", "vm:seen:x",
    "' OR 1=1 --", "\\", "\n",
])  # fmt: skip
NUMBERS = st.sampled_from([
    "NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "123456789012345678901234567890",
    "-0", "0.0", "86400000", "86400000.0001", "-1", "10000", "10000.0000001", "1.5e12", "true",
])  # fmt: skip
FIELDS = ("event_id", "event_type", "occurred_at", "artifact_id", "organization_id", "stage",
          "duration_ms", "ai_cost_usd", "error_code", "schema_version")  # fmt: skip


def verdicts(raw: bytes) -> list[AcceptedEvent | RejectedPayload]:
    items = decode_message(raw, now_ms=NOW, stages=frozenset(DEFAULT_STAGES))
    assert items
    for item in items:
        if isinstance(item, RejectedPayload):
            assert item.rejection.reason in RejectReason and item.rejection.detail
            if item.batch_index is None:
                assert item.payload == raw  # a whole message goes to the DLQ untouched
        else:
            assert isinstance(item, AcceptedEvent)
            orjson.dumps(item.event.event_id)  # every accepted string is encodable
    return items


@st.composite
def event_text(draw: st.DrawFn) -> bytes:
    """A JSON object spliced from valid, tricky and hostile field values, as raw text."""
    parts = []
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=12)):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            value = draw(NUMBERS)
        elif kind == 1:
            value = json.dumps(draw(TRICKY_TEXT))
        elif kind == 2:
            value = json.dumps(draw(st.sampled_from(
                ["artifact_received", "stage_completed", "transcription", NOW, NOW - 1, None]
            )))  # fmt: skip
        else:
            value = draw(st.sampled_from(["[]", "{}", '{"a": [1, {"b": null}]}', "[" * 300]))
        parts.append(f'"{name}": {value}')
    return ("{" + ", ".join(parts) + "}").encode()


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(raw: bytes) -> None:
    verdicts(raw)


@FUZZ
@given(st.lists(event_text(), min_size=1, max_size=6), st.booleans())
def test_spliced_events_and_batches(texts: list[bytes], as_batch: bool) -> None:
    raw = b"[" + b",".join(texts) + b"]" if as_batch else texts[0]
    verdicts(raw)


def test_sizes_at_and_over_the_limits() -> None:
    body = {
        "event_id": "e",
        "event_type": "artifact_received",
        "occurred_at": NOW,
        "artifact_id": "a",
    }
    pad = MAX_EVENT_BYTES - len(orjson.dumps(body | {"pad": ""}))
    [ok] = verdicts(orjson.dumps(body | {"pad": "x" * pad}))
    assert isinstance(ok, AcceptedEvent)
    [big] = verdicts(orjson.dumps(body | {"pad": "x" * (pad + 1)}))
    assert isinstance(big, RejectedPayload) and big.rejection.reason is RejectReason.TOO_LARGE
    whole = verdicts(b"[" + b" " * (MAX_MESSAGE_BYTES - 2) + b"]")
    assert whole[0].rejection.reason is RejectReason.NOT_AN_OBJECT  # type: ignore[union-attr]
    [over] = verdicts(b"[" + b" " * (MAX_MESSAGE_BYTES - 1) + b"]")
    assert isinstance(over, RejectedPayload) and over.rejection.reason is RejectReason.TOO_LARGE


def test_deep_nesting_and_non_utf8_and_nan() -> None:
    for raw, reason in (
        (b"[" * 100_000, RejectReason.INVALID_JSON),
        (b'{"event_id": "\xc3\x28"}', RejectReason.INVALID_UTF8),
        (b'{"event_id": "\\ud800"}', RejectReason.INVALID_JSON),
        (b'{"duration_ms": NaN}', RejectReason.INVALID_JSON),
    ):
        [item] = verdicts(raw)
        assert isinstance(item, RejectedPayload) and item.rejection.reason is reason, raw[:40]
