"""A rejected batch element goes to the DLQ as its own bytes (CONTRACT §2): the scanner that
finds them agrees with a JSON parser on every array, whatever its blanks and strings."""

from __future__ import annotations

import json

import orjson
from hypothesis import given
from hypothesis import strategies as st

from consumers.decode import RejectedPayload, batch_elements, decode_message, element_spans

NOW = 1_750_000_000_000
STAGES = frozenset({"transcription"})

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
blanks = st.text(alphabet=" \t\n\r", max_size=3)


@given(st.lists(values, min_size=1, max_size=8), st.data())
def test_spans_are_the_elements_own_bytes(elements: list[object], data: st.DataObject) -> None:
    parts = [data.draw(blanks) + json.dumps(e, ensure_ascii=data.draw(st.booleans()))
             + data.draw(blanks) for e in elements]  # fmt: skip
    raw = (data.draw(blanks) + "[" + ",".join(parts) + "]" + data.draw(blanks)).encode()
    spans = element_spans(raw)
    assert [orjson.loads(raw[start:end]) for start, end in spans] == orjson.loads(raw)
    own = [p.strip(" \t\n\r").encode() for p in parts]
    assert [raw[start:end] for start, end in spans] == own  # the scan
    assert batch_elements(raw) == own  # the one C pass


def test_a_rejected_element_keeps_its_bytes_even_an_integer_past_64_bits() -> None:
    big = b'{"event_id": "e1", "event_type": "nope", "occurred_at": 1, "n": 1234567890123456789012}'
    good = orjson.dumps({"event_id": "e2", "event_type": "artifact_received",
                         "occurred_at": NOW, "artifact_id": "a"})  # fmt: skip
    raw = b"[ " + good + b" ,\n  " + big + b"\t]"
    decoded = decode_message(raw, now_ms=NOW, stages=STAGES)
    rejected = [d for d in decoded if isinstance(d, RejectedPayload)]
    assert [(r.payload, r.batch_index) for r in rejected] == [(big, 1)]


def test_strings_with_brackets_commas_and_escaped_quotes_stay_inside_their_element() -> None:
    raw = rb'[{"a": "x,]\"}"}, "[,{", 1e3 ,[[],{}]]'
    assert [raw[s:e] for s, e in element_spans(raw)] == [
        rb'{"a": "x,]\"}"}',
        rb'"[,{"',
        b"1e3",
        b"[[],{}]",
    ]
