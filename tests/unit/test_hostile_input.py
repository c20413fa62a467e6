"""Byte-level and structural fuzz of the decoder: never an exception, always a verdict.

At least 10,000 generated cases in CI; ``VOICEMON_FUZZ_EXAMPLES`` raises the count on demand.
"""

from __future__ import annotations

import json
import os
import random

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.decode import AcceptedEvent, RejectedPayload, decode_message
from voicemon.event import MAX_EVENT_BYTES, MAX_MESSAGE_BYTES, RejectReason
from voicemon.settings import DEFAULT_STAGES

NOW = 1_795_000_000_000
EXAMPLES = int(os.environ.get("VOICEMON_FUZZ_EXAMPLES", "10000"))
FUZZ = settings(max_examples=EXAMPLES // 2, deadline=None, suppress_health_check=list(HealthCheck))

TRICKY_TEXT = [
    "\u202e" + "lanigiro", "a\u200bb", "\x00", "\uff45\uff56\uff45\uff4e\uff54", "🎙️" * 40,
    "\ufeffid", "e\u0301", "x" * 129, "", " ", "{p}", "{o:org}", "vm:seen:x",
    "' OR 1=1 --", "\\", "\n",
]  # fmt: skip
NUMBERS = [
    "NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "123456789012345678901234567890",
    "-0", "0.0", "86400000", "86400000.0001", "-1", "10000", "10000.0000001", "1.5e12", "true",
]  # fmt: skip
FIELDS = ("event_id", "event_type", "occurred_at", "artifact_id", "organization_id", "stage",
          "duration_ms", "ai_cost_usd", "error_code", "schema_version")  # fmt: skip
# A field's value: a number as text, a tricky string, a plausible value, a structure.
VALUE_KINDS = (
    NUMBERS,
    [json.dumps(text) for text in TRICKY_TEXT],
    [json.dumps(value) for value in
     ("artifact_received", "stage_completed", "transcription", NOW, NOW - 1, None)],
    ["[]", "{}", '{"a": [1, {"b": null}]}', "[" * 300],
)  # fmt: skip


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


def spliced(draw: random.Random) -> bytes:
    """One to six JSON objects spliced from valid, tricky and hostile field values, as raw
    text: the first alone, or all of them as a batch. The draws go through Hypothesis, in a
    quarter of the time of a strategy per field: a failing case is replayed and shrunk, though
    it keeps more fields than it would with a strategy per field."""
    texts = []
    for _ in range(draw.randint(1, 6)):
        parts = [f'"{draw.choice(FIELDS)}": {draw.choice(draw.choice(VALUE_KINDS))}'
                 for _ in range(draw.randint(0, 12))]  # fmt: skip
        texts.append(("{" + ", ".join(parts) + "}").encode())
    return b"[" + b",".join(texts) + b"]" if draw.random() < 0.5 else texts[0]


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(raw: bytes) -> None:
    verdicts(raw)


@FUZZ
@given(st.randoms(use_true_random=False).map(spliced))
def test_spliced_events_and_batches(raw: bytes) -> None:
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
