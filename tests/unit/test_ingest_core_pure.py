"""Pure parts of the ingest core: seen-marker layout, the record's "now", refusals."""

from __future__ import annotations

import orjson
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError

from consumers.batch import UNSTORABLE, Message, beyond_markers, letter_of
from consumers.raw_writer import refused_for_content
from consumers.rows import Position, RawRow
from voicemon import keys, rolling
from voicemon.event import EventType, PipelineEvent, RejectReason, decision_time_ms

NOW = 1_795_000_000_000  # 2026-11-18T09:46:40Z
MINUTE = 60_000


def test_a_marker_is_a_slot_and_a_12_byte_field_derived_from_the_id_alone() -> None:
    one, again, other = keys.marker("e-1"), keys.marker("e-1"), keys.marker("e-2")
    assert one == again and one != other
    assert len(one.field) == 12 and 0 <= one.slot < 2**32
    shards = {keys.marker(f"e-{i}").slot % 1024 for i in range(20_000)}
    assert len(shards) == 1024  # spread over the shards


def test_markers_are_read_from_the_current_generation_and_the_four_before() -> None:
    generation = NOW // keys.SEEN_GENERATION_MS
    assert keys.seen_generations(NOW) == [generation - age for age in range(5)]
    assert keys.seen_expire_at_ms(NOW) == (generation + 5) * keys.SEEN_GENERATION_MS + MINUTE
    # A marker set at the very end of a generation is still read 80 minutes later...
    set_at = (generation + 1) * keys.SEEN_GENERATION_MS - 1
    assert keys.seen_generation(set_at) in keys.seen_generations(set_at + 80 * MINUTE)
    # ...and none is read 100 minutes after its generation began.
    assert keys.seen_generation(set_at) not in keys.seen_generations(set_at + 101 * MINUTE)
    assert keys.SEEN_FOR_MS == 80 * MINUTE


@pytest.mark.parametrize(
    ("previous", "shards"),
    [(0, 1024), (64 * 1024, 1024), (64 * 1024 + 1, 2048), (1_200_000, 32_768),
     (72_000_000, 2**21), (10**12, 2**22)],
)  # fmt: skip
def test_a_generation_has_shards_for_about_64_markers_a_hash(previous: int, shards: int) -> None:
    assert keys.shards_for(previous) == shards
    assert shards & (shards - 1) == 0  # a power of two


def test_a_marker_is_its_digest_split_into_slot_and_field() -> None:
    digest = keys.digest("e-1")
    assert len(digest) == 16
    assert keys.marker("e-1") == keys.Marker(int.from_bytes(digest[:4], "big"), digest[4:])
    assert keys.seen_hash(10, 1024, keys.Marker(1027, b"b")) == "vm:seen:{s3}:10:3"
    assert keys.seen_hash(10, 1, keys.Marker(1027, b"b")) == "vm:seen:{s3}:10:0"


@pytest.mark.parametrize(
    ("record_ms", "log_append", "expected"),
    [
        (NOW - 3_600_000, True, NOW - 3_600_000),  # log-append time: a replay decides alike
        (NOW + 60 * MINUTE, True, NOW + 60 * MINUTE),  # the broker's time is always trusted
        (NOW - 5 * MINUTE, False, NOW - 5 * MINUTE),  # create time within 5 minutes: trusted
        (NOW - 5 * MINUTE - 1, False, NOW),  # read long after it was created: the clock
        (NOW - 3_600_000, False, NOW),
        (NOW + 5 * MINUTE, False, NOW + 5 * MINUTE),
        (NOW + 5 * MINUTE + 1, False, NOW),  # a producer's clock running ahead: the clock
        (None, False, NOW),
        (-1, False, NOW),
    ],
)
def test_the_now_of_the_time_rules_is_the_records_timestamp(
    record_ms: int | None, log_append: bool, expected: int
) -> None:
    assert decision_time_ms(record_ms, log_append, NOW) == expected


def test_events_beyond_the_markers_are_those_a_marker_may_have_forgotten() -> None:
    def row(at: int) -> RawRow:
        return RawRow(PipelineEvent("e", EventType.ARTIFACT_RECEIVED, at, "a"), Position(0, 0, 0))

    # A copy is counted at most 10 minutes before its occurred_at (5 minutes ahead of a record
    # time at most 5 minutes ahead of the clock), and its marker lives at least 80 minutes.
    limit = NOW - keys.SEEN_FOR_MS + 10 * MINUTE
    assert limit == NOW - 70 * MINUTE
    assert not beyond_markers(row(limit), NOW)
    assert beyond_markers(row(limit - 1), NOW)
    assert not beyond_markers(row(NOW - 60 * MINUTE), NOW)
    assert beyond_markers(row(NOW - 80 * MINUTE), NOW)  # the seam the old rule missed


@pytest.mark.parametrize(
    ("error", "content"),
    [
        (DataError("Unable to create Python array"), True),
        (ValueError("invalid literal for int()"), True),
        (OverflowError("int too big to convert"), True),
        (DatabaseError("Code: 53. DB::Exception: Type mismatch"), True),
        (DatabaseError("Code: 469. DB::Exception: Constraint `c` is violated"), True),
        (DatabaseError("Code: 60. DB::Exception: Table voicemon.x does not exist"), False),
        (DatabaseError("Code: 241. DB::Exception: Memory limit exceeded"), False),
        (DatabaseError("Code: 202. DB::Exception: Too many simultaneous queries"), False),
        (OperationalError("Error HTTPConnectionPool: connection refused"), False),
        (ConnectionError("reset by peer"), False),
        (TimeoutError(), False),
    ],
)
def test_refusals_for_content_are_told_from_outages(error: Exception, content: bool) -> None:
    assert refused_for_content(error) is content


def test_negated_increments_take_the_same_fields_back() -> None:
    event = PipelineEvent("e", EventType.ARTIFACT_COMPLETED, NOW, "a", "org", duration_ms=30.0,
                          ai_cost_usd=0.5)  # fmt: skip
    forward = rolling.increments([event], NOW)
    back = rolling.negated(forward)
    assert set(back) == set(forward)
    for key, bucket in back.items():
        assert bucket.expire_at_ms == forward[key].expire_at_ms
        assert {k: -v for k, v in bucket.fields.items()} == dict(forward[key].fields)


def test_an_unstorable_batch_element_is_dead_lettered_alone_and_a_single_message_whole() -> None:
    first = {"event_id": "a", "event_type": "artifact_received", "occurred_at": NOW,
             "artifact_id": "x"}  # fmt: skip
    second = first | {"event_id": "b", "extra": [1, 2]}
    batch = Message(2, 40, b"k", orjson.dumps([first, second]))
    event = PipelineEvent("b", EventType.ARTIFACT_RECEIVED, NOW, "x")
    letter = letter_of(RawRow(event, Position(2, 40, 1)), batch, UNSTORABLE)
    assert letter.rejected.rejection.reason is RejectReason.UNSTORABLE
    assert letter.rejected.payload == orjson.dumps(second)  # its own bytes
    assert (letter.rejected.batch_index, letter.partition, letter.offset) == (1, 2, 40)
    single = Message(0, 7, None, b' {"event_id": "a"} ')
    alone = letter_of(RawRow(event, Position(0, 7, 0)), single, UNSTORABLE)
    assert alone.rejected.payload == single.value and alone.rejected.batch_index is None
