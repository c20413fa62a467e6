"""Decode one Kafka message value into accepted events and rejected payloads (CONTRACT §3.0).

Pure: no I/O, never raises. A message is one event object or a batch (a JSON array of
1..1000 objects); each batch element is judged on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from voicemon.event import (
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    MAX_MESSAGE_BYTES,
    PipelineEvent,
    Rejection,
    RejectReason,
    validate_event,
)


@dataclass(frozen=True, slots=True)
class AcceptedEvent:
    """An event that passed validation; ``batch_index`` is 0 for a single-event message."""

    event: PipelineEvent
    batch_index: int


@dataclass(frozen=True, slots=True)
class RejectedPayload:
    """What goes to the DLQ: the original bytes, or one batch element as compact JSON."""

    rejection: Rejection
    payload: bytes | None  # None: a record without a value, forwarded as it came
    batch_index: int | None


Decoded = AcceptedEvent | RejectedPayload


def decode_message(raw: bytes | None, *, now_ms: int, stages: frozenset[str]) -> list[Decoded]:
    """Split ``raw`` into accepted events and rejections, in batch order."""
    if not raw:
        detail = "record has no value" if raw is None else "record value is empty"
        return [RejectedPayload(Rejection(RejectReason.INVALID_JSON, detail), raw, None)]
    value = _parse(raw)
    if isinstance(value, Rejection):
        return [RejectedPayload(value, raw, None)]
    if isinstance(value, dict):
        if len(raw) > MAX_EVENT_BYTES:
            return [RejectedPayload(_too_large_event(len(raw)), raw, None)]
        verdict = validate_event(value, now_ms=now_ms, stages=stages)
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
    try:
        return [
            _decode_element(element, index, check_element_size, now_ms=now_ms, stages=stages)
            for index, element in enumerate(value)
        ]
    except orjson.JSONEncodeError as error:
        detail = f"a batch element cannot be re-encoded on its own ({error}); message kept whole"
        return [RejectedPayload(Rejection(RejectReason.INVALID_JSON, detail), raw, None)]


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


def _decode_element(
    element: object, index: int, check_size: bool, *, now_ms: int, stages: frozenset[str]
) -> Decoded:
    verdict: PipelineEvent | Rejection
    if check_size and isinstance(element, dict):
        size = len(orjson.dumps(element))
        verdict = (
            _too_large_event(size)
            if size > MAX_EVENT_BYTES
            else validate_event(element, now_ms=now_ms, stages=stages)
        )
    else:
        verdict = validate_event(element, now_ms=now_ms, stages=stages)
    if isinstance(verdict, Rejection):
        return RejectedPayload(verdict, orjson.dumps(element), index)
    return AcceptedEvent(verdict, index)


def _too_large_event(size: int) -> Rejection:
    return Rejection(
        RejectReason.TOO_LARGE, f"event is {size} bytes; the limit is {MAX_EVENT_BYTES}"
    )
