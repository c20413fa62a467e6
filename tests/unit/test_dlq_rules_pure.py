"""The DLQ's rules without a broker: the topic rules at their edges, the envelope's form,
which refusals are permanent (CONTRACT §2, §3.3), and when a step settled a letter before."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from confluent_kafka import KafkaError

from consumers.decode import RejectedPayload
from consumers.letters import (
    ENVELOPE_BYTES,
    DeadLetter,
    SentLetters,
    payload_digest,
    record_digest,
)
from consumers.publish_once import settled_before
from voicemon.event import Rejection, RejectReason
from voicemon.publisher import PublishFailed
from voicemon.topics import DLQ_HEADROOM_BYTES, rule_problems

LOG_APPEND = {"message.timestamp.type": "LogAppendTime", "max.message.bytes": "1048588"}


@pytest.mark.parametrize(
    ("dlq_limit", "broken"),
    [(1048588 + DLQ_HEADROOM_BYTES - 1, True), (1048588 + DLQ_HEADROOM_BYTES, False),
     (1048588 + DLQ_HEADROOM_BYTES + 1, False)],
)  # fmt: skip
def test_the_dlq_limit_must_exceed_the_events_topics_by_64_kib(
    dlq_limit: int, broken: bool
) -> None:
    problems = rule_problems("in", LOG_APPEND, "dlq", {"max.message.bytes": str(dlq_limit)})
    assert bool(problems) is broken
    if broken:
        assert problems == (
            f"the DLQ topic dlq has max.message.bytes={dlq_limit}, under in's 1048588 plus "
            "65536 (so a rejected message may not fit)"
        )


def test_the_events_topic_must_keep_log_append_time() -> None:
    dlq = {"max.message.bytes": str(1048588 + DLQ_HEADROOM_BYTES)}
    create_time = {**LOG_APPEND, "message.timestamp.type": "CreateTime"}
    assert rule_problems("in", create_time, "dlq", dlq) == (
        "in has message.timestamp.type=CreateTime, not LogAppendTime"
    )
    assert rule_problems("in", LOG_APPEND, "dlq", dlq) == ""


def letter(payload: bytes | None, batch_index: int | None = None) -> DeadLetter:
    rejected = RejectedPayload(Rejection(RejectReason.INVALID_UTF8, "bad"), payload, batch_index)
    return DeadLetter(rejected, b"key", 3, 41)


@pytest.mark.parametrize("size", [0, ENVELOPE_BYTES - 1, ENVELOPE_BYTES, ENVELOPE_BYTES + 1])
def test_an_envelope_holds_the_first_64_kib_and_the_originals_digest(size: int) -> None:
    original = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    value, headers = letter(original, 2).envelope()
    assert value == original[:ENVELOPE_BYTES] and len(value) == min(size, 65_536)
    assert dict(headers) == {
        "voicemon-reason": b"invalid_utf8",
        "voicemon-detail": b"bad",
        "voicemon-source-partition": b"3",
        "voicemon-source-offset": b"41",
        "voicemon-batch-index": b"2",
        "voicemon-truncated": b"1",
        "voicemon-sha256": hashlib.sha256(original).hexdigest().encode(),
        "voicemon-original-bytes": str(size).encode(),
    }
    named = {name: raw.decode() for name, raw in headers}
    assert record_digest(named, value) == payload_digest(original)  # found by its original


@pytest.mark.parametrize(
    ("headers", "value", "found"),
    [
        ({}, b"{bad", [True, False, False]),
        ({}, b"", [False, True, False]),
        ({}, None, [False, False, True]),  # a record without a value, forwarded so
        ({"voicemon-truncated": "1", "voicemon-sha256": "zz"}, b"", [False, False, False]),
        ({"voicemon-truncated": "1", "voicemon-sha256": ""}, None, [False, False, False]),
        ({"voicemon-truncated": "1", "voicemon-sha256": "ab" * 31}, b"", [False, False, False]),
        ({"voicemon-truncated": "1"}, b"{bad", [False, False, False]),
        ({"voicemon-truncated": "0"}, b"{bad", [True, False, False]),
    ],
)
def test_a_dlq_records_digest_is_its_originals_or_matches_no_payload(
    headers: dict[str, str], value: bytes | None, found: list[bool]
) -> None:
    digest = record_digest(headers, value)
    assert [payload_digest(p) == digest for p in (b"{bad", b"", None)] == found


@pytest.mark.parametrize(
    ("code", "permanent", "too_large"),
    [(KafkaError.MSG_SIZE_TOO_LARGE, True, True), (KafkaError.RECORD_LIST_TOO_LARGE, True, True),
     (KafkaError.INVALID_RECORD, True, False), (KafkaError.TOPIC_AUTHORIZATION_FAILED, True, False),
     (KafkaError.UNKNOWN_TOPIC_OR_PART, True, False), (KafkaError._UNKNOWN_TOPIC, True, False),
     (KafkaError._MSG_TIMED_OUT, False, False), (KafkaError._TRANSPORT, False, False),
     (KafkaError.NOT_ENOUGH_REPLICAS, False, False), (None, False, False)],
)  # fmt: skip
def test_a_refusal_is_permanent_an_outage_is_not(
    code: int | None, permanent: bool, too_large: bool
) -> None:
    failed = PublishFailed("t", "why", code)
    assert (failed.permanent, failed.too_large) == (permanent, too_large)


def test_a_claim_outlives_every_attempt_of_its_claimant_to_publish() -> None:
    """A DLQ claim is taken over only once its claimant can no longer publish: the client
    gives a record up before the claimant stops waiting for it, and that wait ends before
    the claim counts as abandoned."""
    from consumers.dead_letters import DELIVERY_TIMEOUT_S
    from consumers.publish_once import DLQ_ABANDONED_MS, WAIT_FOR_OTHERS_S
    from voicemon.publisher import MESSAGE_TIMEOUT_MS

    assert MESSAGE_TIMEOUT_MS < DELIVERY_TIMEOUT_S * 1000
    assert DELIVERY_TIMEOUT_S * 1000 < DLQ_ABANDONED_MS < WAIT_FOR_OTHERS_S * 1000


@pytest.mark.parametrize(
    ("offset", "appended_ms", "before"),
    [(40, 1_000, True), (41, 1_000, True), (42, 1_000, False),  # at, below, above the mark
     (41, 999, True), (41, 1_001, False),  # appended later at a lower offset: a new topic
     (41, None, False)],  # no log-append time: never judged by the mark
)  # fmt: skip
def test_a_letter_at_or_below_its_steps_settled_mark_was_settled_before(
    offset: int, appended_ms: int | None, before: bool
) -> None:
    marks = {3: (41, 1_000)}  # partition 3: the last letter settled at offset 41, appended 1000
    found = dataclasses.replace(letter(b"{"), offset=offset, appended_ms=appended_ms)
    assert settled_before(found, marks) is before
    assert not settled_before(dataclasses.replace(found, partition=4), marks)  # no mark there


def test_sent_letters_are_found_by_source_and_digest_and_forgotten_by_the_hour() -> None:
    hour = 3_600_000
    letters = SentLetters()
    letters.add((0, 7, None), payload_digest(b"a"), 10 * hour - 1)  # the last ms of hour 9
    letters.add((0, 8, 2), payload_digest(b"b"), 10 * hour)
    assert not letters.holds((0, 7, None), payload_digest(b"a"))  # not sealed yet
    letters.seal()
    letters.add((0, 8, 2), payload_digest(b"b"), 10 * hour + 5)  # again: kept once
    letters.seal()
    assert letters.holds((0, 7, None), payload_digest(b"a"))
    assert letters.holds((0, 8, 2), payload_digest(b"b"))
    assert not letters.holds((0, 8, None), payload_digest(b"b"))  # the message, not element 2
    assert not letters.holds((0, 7, None), payload_digest(b"b"))
    assert not letters.holds((1, 7, None), payload_digest(b"a"))
    letters.forget_before(9 * hour)  # hour 9 is still reached
    assert letters.holds((0, 7, None), payload_digest(b"a"))
    letters.forget_before(10 * hour)  # hour 9 is wholly before
    assert not letters.holds((0, 7, None), payload_digest(b"a"))
    assert letters.holds((0, 8, 2), payload_digest(b"b"))
