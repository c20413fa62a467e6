"""The DLQ record of a first decision (CONTRACT §3.2): ``DeadLetters.holding`` against the
real broker, on a topic of the test's own whose records carry the times the test gives."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from redis.asyncio import Redis as AsyncRedis

from consumers import dead_letters
from consumers.dead_letters import READ_IDLE_S, DeadLetters
from consumers.letters import Source, payload_digest
from consumers.publish_once import DLQ_LOOKBACK_MS, OncePublisher
from voicemon.publisher import DeliveryError, KafkaPublisher
from voicemon.settings import Settings

# The letters' times: half past an hour 1.5-2.5 h back, whatever the time of day (a CreateTime
# topic keeps them; the broker refuses times more than an hour ahead of its clock).
HOUR = 3_600_000
T = (int(time.time() * 1000) // HOUR - 2) * HOUR + HOUR // 2


def new_topic(stack: Settings, partitions: int = 2) -> str:
    name = f"dlq-lookup-{uuid.uuid4().hex[:8]}"
    client = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    for future in client.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(timeout=30)
    return name


@pytest.fixture
def topic(stack: Settings) -> str:
    return new_topic(stack)


@pytest.fixture
def reader(stack: Settings, topic: str) -> Iterator[DeadLetters]:
    bootstrap = stack.kafka_bootstrap
    yield DeadLetters(KafkaPublisher(bootstrap), bootstrap, topic)


def put(stack: Settings, topic: str, *records: tuple[int, bytes | None, Sequence[tuple[str, str]]],
        partition: int = 0) -> None:  # fmt: skip
    """Records (time, value, headers) on ``partition`` of ``topic``, in order."""
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "linger.ms": 20})
    errors: list[object] = []
    for at, value, headers in records:
        producer.produce(topic, value, partition=partition, timestamp=at,
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


# -- the break-it review of bdaca2f -----------------------------------------------------------


def test_a_dlq_ending_in_an_aborted_write_is_read_without_waiting_out_a_timeout(
    stack: Settings, topic: str, reader: DeadLetters
) -> None:
    """Offsets below the end that hold no readable record (an aborted transaction and its
    marker) end a read at once, not after the reader's timeout: a replay asks every chunk."""
    put(stack, topic, (T, b"{bad", letter_headers(0, 1)))
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap,
                         "transactional.id": f"aborted-{topic}"})  # fmt: skip
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"foreign", partition=0)
    producer.flush(30)
    producer.abort_transaction(30)
    wanted = {(0, 1, None): payload_digest(b"{bad")}
    took = []
    for _ in range(3):
        started = time.monotonic()
        assert reader.holding(wanted, T) == {(0, 1, None)}
        took.append(time.monotonic() - started)
    assert max(took) < 2.0, f"each lookup took {[round(t, 2) for t in took]} s"


def test_two_lookups_at_once_on_one_worker_both_answer(stack: Settings, topic: str) -> None:
    """A chunk is counted while the one before is stored, each in a thread: two lookups of one
    ``DeadLetters`` at once must both answer in full (one reader, one thread at a time)."""
    letters = 20_000
    for partition in (0, 1):
        put(stack, topic, *[(T, b"v%d" % o, letter_headers(partition, o))
                            for o in range(letters)], partition=partition)  # fmt: skip
    sample = range(0, letters, 97)
    bootstrap = stack.kafka_bootstrap
    for _ in range(3):
        reader = DeadLetters(KafkaPublisher(bootstrap), bootstrap, topic)
        answers: dict[int, object] = {}

        def ask(
            partition: int, reader: DeadLetters = reader, answers: dict[int, object] = answers
        ) -> None:
            wanted = {(partition, o, None): payload_digest(b"v%d" % o) for o in sample}
            try:
                answers[partition] = len(reader.holding(wanted, T))
            except Exception as error:  # reported below
                answers[partition] = repr(error)

        threads = [threading.Thread(target=ask, args=(p,)) for p in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert answers == {0: len(sample), 1: len(sample)}


class _FailingTimes:
    """A reader whose first time lookup fails for the partition (librdkafka then leaves the
    asked time in ``offset``, beside the error), as on a leader change; then answers."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader
        self.asked = 0

    def offsets_for_times(self, asked: list[Any], timeout: float) -> list[Any]:
        self.asked += 1
        if self.asked == 1:
            error = KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION)
            return [SimpleNamespace(offset=asked[0].offset, error=error)]
        return self._reader.offsets_for_times(asked, timeout=timeout)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


def test_a_failed_time_lookup_is_an_outage_not_an_empty_partition(
    stack: Settings, topic: str, reader: DeadLetters
) -> None:
    """Taken for the offset to read from, the asked time would start the read past the end
    and keep it so: every lookup of that partition would miss. It raises (the chunk is
    retried), and the next lookup finds the letter."""
    put(stack, topic, (T, b"{bad", letter_headers(0, 7)))
    reader._reader = _FailingTimes(reader._reader)  # type: ignore[assignment]
    wanted = {(0, 7, None): payload_digest(b"{bad")}
    with pytest.raises(DeliveryError):
        reader.holding(wanted, T)
    assert reader.holding(wanted, T) == {(0, 7, None)}


@pytest.mark.parametrize(
    ("after", "found"),
    [(DLQ_LOOKBACK_MS - 1, True), (DLQ_LOOKBACK_MS, True), (DLQ_LOOKBACK_MS + 1, False)],
)
def test_a_replay_finds_letters_published_within_the_lookback_and_no_older(
    stack: Settings, topic: str, after: int, found: bool
) -> None:
    put(stack, topic, (T, b"{bad", letter_headers(0, 3)))
    bootstrap = stack.kafka_bootstrap
    dead = DeadLetters(KafkaPublisher(bootstrap), bootstrap, topic)

    async def ask() -> set[Source]:
        redis = AsyncRedis.from_url(stack.redis_url.get_secret_value())
        try:
            publisher = OncePublisher(redis, dead, clock=lambda: (T + after) / 1000)
            return await publisher.in_dlq({(0, 3, None): b"{bad"})
        finally:
            await redis.aclose()

    assert asyncio.run(ask()) == ({(0, 3, None)} if found else set())
