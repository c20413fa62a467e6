"""The DLQ record of a first decision (CONTRACT §3.2): ``DeadLetters.holding`` against the
real broker, on a topic of the test's own whose records carry the times the test gives."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator, Sequence

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from consumers import dead_letters
from consumers.dead_letters import READ_IDLE_S, DeadLetters
from consumers.letters import Source, payload_digest
from voicemon.publisher import KafkaPublisher
from voicemon.settings import Settings

# The letters' times: an hour back (a CreateTime topic keeps them; the broker refuses times
# more than an hour ahead of its clock).
T = int(time.time() * 1000) - 3_600_000


@pytest.fixture
def topic(stack: Settings) -> str:
    name = f"dlq-lookup-{uuid.uuid4().hex[:8]}"
    client = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    for future in client.create_topics([NewTopic(name, 2, 1)]).values():
        future.result(timeout=30)
    return name


@pytest.fixture
def reader(stack: Settings, topic: str) -> Iterator[DeadLetters]:
    bootstrap = stack.kafka_bootstrap
    yield DeadLetters(KafkaPublisher(bootstrap), bootstrap, topic)


def put(stack: Settings, topic: str, *records: tuple[int, bytes | None, Sequence[tuple[str, str]]]
        ) -> None:  # fmt: skip
    """Records (time, value, headers) on partition 0 of ``topic``, in order."""
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    errors: list[object] = []
    for at, value, headers in records:
        producer.produce(topic, value, partition=0, timestamp=at,
                         headers=[(k, v.encode()) for k, v in headers],
                         on_delivery=lambda error, _: errors.append(error))  # fmt: skip
    assert producer.flush(30) == 0
    assert errors == [None] * len(records)


def letter_headers(partition: int, offset: int, index: int | None = None) -> list[tuple[str, str]]:
    headers = [("voicemon-reason", "invalid_json"), ("voicemon-detail", "not JSON"),
               ("voicemon-source-partition", str(partition)),
               ("voicemon-source-offset", str(offset))]  # fmt: skip
    return headers + ([("voicemon-batch-index", str(index))] if index is not None else [])


def test_a_letter_is_found_by_its_source_and_its_bytes_and_nothing_else(
    stack: Settings, topic: str, reader: DeadLetters
) -> None:
    original = b"x" * 100_000
    envelope = [*letter_headers(4, 9), ("voicemon-truncated", "1"),
                ("voicemon-sha256", hashlib.sha256(original).hexdigest()),
                ("voicemon-original-bytes", str(len(original)))]  # fmt: skip
    put(stack, topic,
        (T, b"not ours", []),  # a record without voicemon's headers
        (T, b"odd", [("voicemon-source-partition", "two"), ("voicemon-source-offset", "1")]),
        (T, b"{bad", letter_headers(2, 7)),
        (T, b"[1]", letter_headers(2, 8, 3)),
        (T, None, letter_headers(6, 1)),  # a record without a value, forwarded as it came
        (T, original[:65_536], envelope))  # fmt: skip
    wanted: dict[Source, bytes] = {
        (2, 7, None): payload_digest(b"{bad"),
        (2, 8, 3): payload_digest(b"[1]"),
        (6, 1, None): payload_digest(None),
        (4, 9, None): payload_digest(original),
        (0, 7, None): payload_digest(b"{bad"),  # another source partition, same bytes
        (2, 8, None): payload_digest(b"[1]"),  # the message, not its element 3
        (2, 8, 2): payload_digest(b"[1]"),
    }
    assert reader.holding(wanted, T) == {(2, 7, None), (2, 8, 3), (6, 1, None), (4, 9, None)}
    other = {(2, 7, None): payload_digest(b"{bad!"), (6, 1, None): payload_digest(b""),
             (4, 9, None): payload_digest(original[:65_536])}  # fmt: skip
    assert reader.holding(other, T) == set()  # other bytes at those positions: a new topic


def test_only_letters_since_the_time_given_are_read(stack: Settings, topic: str) -> None:
    put(stack, topic, (T - 1, b"a", letter_headers(0, 1)), (T, b"b", letter_headers(0, 2)))
    wanted = {(0, 1, None): payload_digest(b"a"), (0, 2, None): payload_digest(b"b")}
    bootstrap = stack.kafka_bootstrap

    def fresh() -> DeadLetters:
        return DeadLetters(KafkaPublisher(bootstrap), bootstrap, topic)

    assert fresh().holding(wanted, T - 1) == {(0, 1, None), (0, 2, None)}
    assert fresh().holding(wanted, T) == {(0, 2, None)}
    assert fresh().holding(wanted, T + 1) == set()  # past every letter: none is read


def test_a_partition_read_once_is_read_on_from_its_end_and_forgotten_when_idle(
    stack: Settings, topic: str, reader: DeadLetters, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(dead_letters.time, "monotonic", lambda: clock[0])
    put(stack, topic, (T, b"a", letter_headers(0, 1)))
    first, second = {(0, 1, None): payload_digest(b"a")}, {(0, 2, None): payload_digest(b"b")}
    assert reader.holding(first, T) == {(0, 1, None)}
    put(stack, topic, (T + 5, b"b", letter_headers(0, 2)))
    assert reader.holding(second, T + 5) == {(0, 2, None)}  # read on from where it ended
    clock[0] += READ_IDLE_S
    assert reader.holding(first, T + 5) == {(0, 1, None)}  # still kept: read since T
    clock[0] += READ_IDLE_S + 0.001
    assert reader.holding(first, T + 5) == set()  # forgotten: read anew since T + 5


def test_a_dlq_topic_recreated_under_a_kept_read_is_read_anew(
    stack: Settings, topic: str, reader: DeadLetters
) -> None:
    put(stack, topic, *[(T, b"a", letter_headers(0, n)) for n in range(3)])
    assert reader.holding({(0, 2, None): payload_digest(b"a")}, T) == {(0, 2, None)}
    client = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    for future in client.delete_topics([topic]).values():
        future.result(timeout=30)
    deadline = time.monotonic() + 60
    while True:  # the broker deletes a topic in the background
        try:
            for future in client.create_topics([NewTopic(topic, 2, 1)]).values():
                future.result(timeout=30)
            break
        except Exception:
            assert time.monotonic() < deadline, f"{topic} not recreated"
            time.sleep(0.5)
    put(stack, topic, (T, b"b", letter_headers(0, 9)))  # offset 0 of the new topic
    while True:  # the reader learns the new topic's metadata (an outage till then: retried)
        try:
            found = reader.holding({(0, 9, None): payload_digest(b"b")}, T)
            break
        except KafkaException:
            assert time.monotonic() < deadline, "the recreated topic stays unreadable"
            time.sleep(0.5)
    assert found == {(0, 9, None)}
