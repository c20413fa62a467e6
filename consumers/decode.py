"""Decode one Kafka message value into accepted events and rejected payloads (CONTRACT §3.0).

Pure: no I/O, never raises. A message is one event object or a batch (a JSON array of
1..1000 objects); each batch element is judged on its own.

Two paths reach the same verdicts. The fast one decodes and type-checks the whole message in
one msgspec call into ``_Fields`` structs; it takes only messages whose every event is
accepted and holds nothing but the contract's fields, with bounds tight enough that every
value it accepts is one the reference path accepts alike. Anything else — a bad element,
an unknown field, an odd number, a string over its bound — goes the reference path
(orjson, then ``voicemon.event.validate_event``), which decides and explains.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec
import orjson

from voicemon.event import (
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    MAX_MESSAGE_BYTES,
    ORGANIZATION_ID,
    PipelineEvent,
    Rejection,
    RejectReason,
    check_rules,
    validate_event,
)


class AcceptedEvent(msgspec.Struct, frozen=True, gc=False):
    """An event that passed validation; ``batch_index`` is 0 for a single-event message."""

    event: PipelineEvent
    batch_index: int


class RejectedPayload(msgspec.Struct, frozen=True, gc=False):
    """What goes to the DLQ: the original bytes, or one batch element as compact JSON."""

    rejection: Rejection
    payload: bytes | None  # None: a record without a value, forwarded as it came
    batch_index: int | None


Decoded = AcceptedEvent | RejectedPayload


_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
# The bounds the reference path has, plus ones it does not (a bound string, an integer in
# orjson's integer range): values past them go the reference path, which judges them.
_Short = Annotated[str, msgspec.Meta(max_length=64)]
_EpochMs = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_EventTypeName = Literal[
    "artifact_received",
    "artifact_completed",
    "artifact_failed",
    "stage_started",
    "stage_completed",
    "stage_failed",
]


class _Fields(msgspec.Struct, forbid_unknown_fields=True):
    """One event as the fast path takes it (``voicemon.event.EventFields``)."""

    event_id: _Id
    event_type: _EventTypeName
    occurred_at: _Short | _EpochMs
    artifact_id: _Id
    organization_id: _Id | None = None  # ORGANIZATION_ID checked in _decode_fast
    stage: _Short | None = None
    duration_ms: Annotated[float, msgspec.Meta(ge=0, le=86_400_000)] | None = None
    ai_cost_usd: Annotated[float, msgspec.Meta(ge=0, le=10_000)] | None = None
    error_code: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    schema_version: Annotated[int, msgspec.Meta(ge=1, le=65_535)] = 1


_FAST = msgspec.json.Decoder(_Fields | list[_Fields])


def _decode_fast(
    raw: bytes, now_ms: int, stages: frozenset[str], late_ms: int | None = None
) -> list[Decoded] | None:
    """Every event of ``raw`` accepted, or None: the reference path decides."""
    try:
        value = _FAST.decode(raw)
    except Exception:  # invalid UTF-8, deep nesting, ...: the reference path judges
        return None
    if isinstance(value, _Fields):
        if len(raw) > MAX_EVENT_BYTES:  # whitespace can make a small event a large message
            return None
        value = [value]
    elif not value or len(value) > MAX_BATCH_EVENTS:
        return None
    accepted: list[Decoded] = []
    for index, fields in enumerate(value):
        org = fields.organization_id
        if org is not None and ORGANIZATION_ID.fullmatch(org) is None:
            return None
        verdict = check_rules(fields, now_ms=now_ms, stages=stages, late_ms=late_ms)
        if isinstance(verdict, Rejection):
            return None
        accepted.append(AcceptedEvent(verdict, index))
    return accepted


def decode_message(
    raw: bytes | None, *, now_ms: int, stages: frozenset[str], late_ms: int | None = None
) -> list[Decoded]:
    """Split ``raw`` into accepted events and rejections, in batch order. ``now_ms`` is the
    "now" of the time rules; ``late_ms``, if given, that of the too-late rule alone."""
    if raw and len(raw) <= MAX_MESSAGE_BYTES:
        fast = _decode_fast(raw, now_ms, stages, late_ms)
        if fast is not None:
            return fast
    return _decode_reference(raw, now_ms=now_ms, stages=stages, late_ms=late_ms)


def _decode_reference(
    raw: bytes | None, *, now_ms: int, stages: frozenset[str], late_ms: int | None = None
) -> list[Decoded]:
    if not raw:
        detail = "record has no value" if raw is None else "record value is empty"
        return [RejectedPayload(Rejection(RejectReason.INVALID_JSON, detail), raw, None)]
    value = _parse(raw)
    if isinstance(value, Rejection):
        return [RejectedPayload(value, raw, None)]
    if isinstance(value, dict):
        if len(raw) > MAX_EVENT_BYTES:
            return [RejectedPayload(_too_large_event(len(raw)), raw, None)]
        verdict = validate_event(value, now_ms=now_ms, stages=stages, late_ms=late_ms)
        if isinstance(verdict, Rejection):
            return [RejectedPayload(verdict, raw, None)]
        return [AcceptedEvent(verdict, 0)]
    if not isinstance(value, list) or not value:
        shape = "an empty array" if isinstance(value, list) else "not an object or array"
        detail = f"message must be an event object or a batch of them; got {shape}"
        return [RejectedPayload(Rejection(RejectReason.NOT_AN_OBJECT, detail), raw, None)]
    if len(value) > MAX_BATCH_EVENTS:
        detail = f"batch holds {len(value)} events; at most {MAX_BATCH_EVENTS} are allowed"
        return [RejectedPayload(Rejection(RejectReason.TOO_LARGE, detail), raw, None)]
    check_element_size = len(raw) > MAX_EVENT_BYTES
    elements: list[bytes] = []
    decoded: list[Decoded] = []
    for index, element in enumerate(value):
        verdict = _judge_element(element, check_element_size, now_ms, stages, late_ms)
        if isinstance(verdict, Rejection):
            elements = elements or batch_elements(raw)
            decoded.append(RejectedPayload(verdict, elements[index], index))
        else:
            decoded.append(AcceptedEvent(verdict, index))
    return decoded


def _parse(raw: bytes) -> object:
    """The decoded JSON value, or the Rejection of the whole message."""
    if len(raw) > MAX_MESSAGE_BYTES:
        return Rejection(
            RejectReason.TOO_LARGE, f"message is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES}"
        )
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as utf8_error:
            return Rejection(
                RejectReason.INVALID_UTF8, f"message is not UTF-8: {utf8_error.reason}"
            )
        return Rejection(RejectReason.INVALID_JSON, f"message is not valid JSON: {error.msg}")


def _judge_element(
    element: object, check_size: bool, now_ms: int, stages: frozenset[str], late_ms: int | None
) -> PipelineEvent | Rejection:
    if check_size and isinstance(element, dict):
        try:
            size = len(orjson.dumps(element))
        except orjson.JSONEncodeError:  # nested deeper than orjson writes: far over any limit
            size = MAX_MESSAGE_BYTES
        if size > MAX_EVENT_BYTES:
            return _too_large_event(size)
    return validate_event(element, now_ms=now_ms, stages=stages, late_ms=late_ms)


_ELEMENTS = msgspec.json.Decoder(list[msgspec.Raw])
# The tokens that delimit a JSON array's elements: strings (skipped whole, with their
# escapes), brackets, braces and commas. Anything else sits inside one element.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[][{},]', re.DOTALL)
_BLANK = b" \t\n\r"


def batch_elements(raw: bytes) -> list[bytes]:
    """The elements of ``raw``, valid JSON whose top level is an array, each as its own bytes
    as they stood in the batch, without the blanks around them (CONTRACT §2; pure). One C
    pass in the common case; a scan of the array's tokens if msgspec refuses what orjson
    took."""
    try:
        return [bytes(element) for element in _ELEMENTS.decode(raw)]
    except (msgspec.DecodeError, RecursionError):  # nested deeper than msgspec reads
        return [raw[start:end] for start, end in element_spans(raw)]


def element_spans(raw: bytes) -> list[tuple[int, int]]:
    """The byte spans of the elements of ``raw``, valid JSON whose top level is an array,
    without the blanks around them (pure)."""
    spans: list[tuple[int, int]] = []
    depth, after = 0, 0
    for token in _TOKENS.finditer(raw):
        kind = raw[token.start()]
        if kind in b"[{":
            depth += 1
            after = token.end() if depth == 1 else after
        elif kind in b"]}":
            depth -= 1
            if depth == 0:
                spans.append(_trimmed(raw, after, token.start()))
                break
        elif kind == ord(",") and depth == 1:
            spans.append(_trimmed(raw, after, token.start()))
            after = token.end()
    return [span for span in spans if span[0] < span[1]]


def _trimmed(raw: bytes, start: int, end: int) -> tuple[int, int]:
    while start < end and raw[start] in _BLANK:
        start += 1
    while end > start and raw[end - 1] in _BLANK:
        end -= 1
    return start, end


def _too_large_event(size: int) -> Rejection:
    return Rejection(
        RejectReason.TOO_LARGE, f"event is {size} bytes; the limit is {MAX_EVENT_BYTES}"
    )
