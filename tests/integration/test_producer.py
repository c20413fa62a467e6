"""The producer library against the real broker: what it reports delivered is on the topic,
exactly once, read back with a plain confluent-kafka consumer."""

from __future__ import annotations

import asyncio
import gc
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
import weakref
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from voicemon.event import MAX_MESSAGE_BYTES, RejectReason
from voicemon.producer import Delivery, DeliveryError, EventProducer, InvalidEvent, ProducerClosed
from voicemon.producer_async import AsyncEventProducer
from voicemon.settings import Settings
from voicemon_producer.builders import EventBuilder

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes

    def events(self) -> list[dict[str, Any]]:
        decoded = orjson.loads(self.value)
        return decoded if isinstance(decoded, list) else [decoded]


def new_topic(bootstrap: str, partitions: int = 4, **config: str) -> str:
    name = f"producer-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, 1, config=config)]).values():
        future.result(timeout=30)
    return name


def read_topic(bootstrap: str, topic: str) -> list[Record]:
    """Every record of ``topic`` now, in partition and offset order."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "producer-test-reader",
                         "enable.auto.commit": False})  # fmt: skip
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions}  # fmt: skip
        consumer.assign([TopicPartition(topic, p, 0) for p, end in ends.items() if end])
        records: list[Record] = []
        deadline = time.monotonic() + 30
        while len(records) < sum(ends.values()) and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=1):
                if message.error() is None:
                    records.append(Record(message.partition(), message.offset(),
                                          message.key(), message.value()))  # fmt: skip
    finally:
        consumer.close()
    assert len(records) == sum(ends.values()), "not every record of the topic was read back"
    return sorted(records, key=lambda r: (r.partition, r.offset))


def read_events(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    return [event for record in read_topic(bootstrap, topic) for event in record.events()]


class HasBuilders(Protocol):
    @property
    def events(self) -> EventBuilder: ...


def built_events(producer: HasBuilders, count: int, prefix: str = "art") -> list[dict[str, Any]]:
    """A realistic mix: every event type, several organizations and stages."""
    events = producer.events
    made: list[dict[str, Any]] = []
    for index in range(count):
        artifact, org = f"{prefix}-{index // 6}", f"org-{index % 7}"
        match index % 6:
            case 0:
                made.append(events.artifact_received(artifact, organization_id=org))
            case 1:
                made.append(events.stage_started(artifact, "transcription", organization_id=org))
            case 2:
                made.append(events.stage_completed(artifact, "transcription", duration_ms=index
                                                   + 0.5, ai_cost_usd=0.001))  # fmt: skip
            case 3:
                made.append(events.stage_failed(artifact, "claims_extraction", error_code="E1"))
            case 4:
                made.append(events.artifact_failed(artifact, error_code="E1"))
            case _:
                made.append(events.artifact_completed(artifact, duration_ms=float(index)))
    return made


def results(futures: list[Future[Delivery]], timeout: float = 60) -> list[Delivery]:
    return [future.result(timeout=timeout) for future in futures]


def test_published_events_are_read_back_exactly_where_their_futures_say(stack: Settings) -> None:
    topic = new_topic(stack.kafka_bootstrap)
    with EventProducer(stack.kafka_bootstrap, topic) as producer:
        sent = built_events(producer, 3000)
        futures = [producer.publish(event) for event in sent]
        deliveries = results(futures)
    records = {(r.partition, r.offset): r for r in read_topic(stack.kafka_bootstrap, topic)}
    read = [event for record in records.values() for event in record.events()]
    assert sorted(read, key=lambda e: e["event_id"]) == sorted(sent, key=lambda e: e["event_id"])
    for event, delivery in zip(sent, deliveries, strict=True):
        record = records[(delivery.partition, delivery.offset)]
        assert delivery.event_id == event["event_id"] and delivery.topic == topic
        assert record.events()[delivery.batch_index] == event
        assert record.key == record.events()[0]["artifact_id"].encode()


def test_linger_sends_a_batch_without_another_publish_or_flush(stack: Settings) -> None:
    topic = new_topic(stack.kafka_bootstrap)
    producer = EventProducer(stack.kafka_bootstrap, topic, linger_s=0.5, max_events=1000)
    try:
        started = time.monotonic()
        futures = [producer.publish(event) for event in built_events(producer, 5)]
        results(futures, timeout=10)  # nothing else happens: only the timer can send them
        waited = time.monotonic() - started
        assert 0.45 <= waited < 5, waited
        records = read_topic(stack.kafka_bootstrap, topic)
        assert [len(r.events()) for r in records] == [5]
    finally:
        producer.close()


def test_leaving_the_block_and_close_lose_nothing(stack: Settings) -> None:
    topic = new_topic(stack.kafka_bootstrap)
    with EventProducer(stack.kafka_bootstrap, topic, linger_s=3600, max_events=1000) as producer:
        sent = built_events(producer, 2345)
        futures = [producer.publish(event) for event in sent]
        assert not futures[-1].done()  # the last 345 wait for a linger of an hour
    assert all(f.done() and f.exception() is None for f in futures)
    records = read_topic(stack.kafka_bootstrap, topic)
    assert sorted(len(r.events()) for r in records) == [345, 1000, 1000]
    assert Counter(e["event_id"] for r in records for e in r.events()) == Counter(
        e["event_id"] for e in sent
    )

    second = new_topic(stack.kafka_bootstrap)
    producer = EventProducer(stack.kafka_bootstrap, second, linger_s=3600)
    futures = [producer.publish(event) for event in built_events(producer, 10)]
    producer.close()
    assert all(f.done() and f.exception() is None for f in futures)
    assert len(read_events(stack.kafka_bootstrap, second)) == 10
    with pytest.raises(ProducerClosed, match="closed; create a new one"):
        producer.publish(producer.events.artifact_received("late"))
    producer.close()  # a second close does nothing
    reference = weakref.ref(producer)
    del producer
    gc.collect()
    assert reference() is None, "a closed producer is kept alive (by its thread or atexit)"


def run_child(stack: Settings, topic: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.producer_child", stack.kafka_bootstrap, topic,
         *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip


def test_interpreter_exit_flushes_a_producer_left_open(stack: Settings) -> None:
    topic = new_topic(stack.kafka_bootstrap)
    child = run_child(stack, topic, "exit", "321")
    output, _ = child.communicate(timeout=60)
    assert (child.returncode, output.strip()) == (0, "queued 321")
    assert len(read_events(stack.kafka_bootstrap, topic)) == 321


def test_a_killed_publisher_loses_nothing_it_reported_delivered(stack: Settings) -> None:
    topic = new_topic(stack.kafka_bootstrap)
    child = run_child(stack, topic, "stream")
    assert child.stdout is not None
    reported: list[str] = []
    deadline = time.monotonic() + 60
    while len(reported) < 5000 and time.monotonic() < deadline:
        reported.append(child.stdout.readline())
    os.kill(child.pid, signal.SIGKILL)
    rest, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    reported.extend(rest.splitlines(keepends=True))
    delivered = {line.strip() for line in reported if line.endswith("\n")}  # whole lines only
    assert len(delivered) >= 5000
    on_topic = Counter(e["event_id"] for e in read_events(stack.kafka_bootstrap, topic))
    assert delivered <= set(on_topic), f"{len(delivered - set(on_topic))} reported, not on topic"
    assert max(on_topic.values()) == 1  # the idempotent producer never wrote one twice


def test_threads_publishing_at_once_lose_nothing(stack: Settings) -> None:
    topic = new_topic(stack.kafka_bootstrap)
    futures: list[Future[Delivery]] = []
    lock = threading.Lock()
    with EventProducer(stack.kafka_bootstrap, topic, linger_s=0.01) as producer:

        def publish(thread: int) -> None:
            for event in built_events(producer, 1000, prefix=f"t{thread}"):
                future = producer.publish(event)
                with lock:
                    futures.append(future)

        threads = [threading.Thread(target=publish, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    ids = [delivery.event_id for delivery in results(futures)]
    on_topic = Counter(e["event_id"] for e in read_events(stack.kafka_bootstrap, topic))
    assert len(ids) == 8000 and on_topic == Counter(ids)


def test_a_full_client_queue_and_callbacks_that_publish_again_lose_nothing(
    stack: Settings,
) -> None:
    """A client queue of 5 messages (a setting passed through) fills at once, so publishers
    wait for room while delivery callbacks, run by whichever thread polls, publish again."""
    topic = new_topic(stack.kafka_bootstrap)
    follow_ups: list[Future[Delivery]] = []
    lock = threading.Lock()
    producer = EventProducer(stack.kafka_bootstrap, topic, batch=False,
                             **{"queue.buffering.max.messages": 5})  # fmt: skip

    def follow_up(delivered: Future[Delivery]) -> None:
        artifact = f"follow-{delivered.result().event_id}"
        future = producer.publish(producer.events.artifact_completed(artifact))
        with lock:
            follow_ups.append(future)

    try:
        originals: list[Future[Delivery]] = []

        def publish(prefix: str) -> None:
            for event in built_events(producer, 250, prefix=prefix):
                future = producer.publish(event)
                future.add_done_callback(follow_up)
                with lock:
                    originals.append(future)

        threads = [threading.Thread(target=publish, args=(f"t{n}",)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        results(originals)
        deadline = time.monotonic() + 30
        while len(follow_ups) < len(originals) and time.monotonic() < deadline:
            time.sleep(0.05)
        results(follow_ups)
    finally:
        producer.close()
    on_topic = Counter(e["event_id"] for e in read_events(stack.kafka_bootstrap, topic))
    assert len(on_topic) == 1000 and max(on_topic.values()) == 1


def test_batches_respect_the_contract_caps_whatever_is_asked(stack: Settings) -> None:
    topic = new_topic(stack.kafka_bootstrap)
    with EventProducer(stack.kafka_bootstrap, topic, max_events=2000, max_bytes=8 << 20,
                       linger_s=3600) as producer:  # fmt: skip
        for event in built_events(producer, 2500):
            producer.send(event)  # no future: a failure would be raised on leaving the block
        for event in built_events(producer, 40):  # ~60 KiB each, under the 64 KiB event limit
            producer.publish(event | {"note": secrets.token_hex(30_000)})
        too_big = producer.events.artifact_received("big") | {"note": "x" * 70_000}
        with pytest.raises(InvalidEvent, match="bytes encoded; the limit is 65536") as caught:
            producer.publish(too_big)
        assert caught.value.reason == RejectReason.TOO_LARGE
    records = read_topic(stack.kafka_bootstrap, topic)
    sizes = [len(r.events()) for r in records]
    assert sum(sizes) == 2540 and max(sizes) == 1000
    assert all(len(r.value) <= MAX_MESSAGE_BYTES for r in records)
    padded_messages = [r for r in records if any("note" in e for e in r.events())]
    assert len(padded_messages) >= 3  # 2.4 MB of them cannot fit in two
    assert too_big["event_id"] not in {e["event_id"] for r in records for e in r.events()}


def test_bad_events_are_refused_before_anything_is_sent(stack: Settings) -> None:
    topic = new_topic(stack.kafka_bootstrap)
    with EventProducer(stack.kafka_bootstrap, topic) as producer:
        with pytest.raises(InvalidEvent, match="'teleport' is not a configured stage"):
            producer.events.stage_started("art-1", "teleport")
        with pytest.raises(InvalidEvent, match=r"artifact_id: required field is missing"):
            producer.publish({"event_id": "e1", "event_type": "artifact_received",
                              "occurred_at": int(time.time() * 1000)})  # fmt: skip
        with pytest.raises(InvalidEvent, match="not_an_object"):
            producer.publish(["not", "an", "event"])  # type: ignore[arg-type]
    assert read_topic(stack.kafka_bootstrap, topic) == []


def test_a_refused_message_fails_its_future_and_is_reported_once(stack: Settings) -> None:
    topic = new_topic(stack.kafka_bootstrap, **{"max.message.bytes": "2048"})
    producer = EventProducer(stack.kafka_bootstrap, topic)
    event = producer.events.artifact_received("art-1") | {"note": secrets.token_hex(8000)}
    future = producer.publish(event)
    error = future.exception(timeout=30)
    assert isinstance(error, DeliveryError)
    assert re.search(f"did not acknowledge the message carrying this event on {topic} .*too large",
                     str(error), re.IGNORECASE)  # fmt: skip
    producer.send(producer.events.artifact_received("art-2") | {"note": secrets.token_hex(8000)})
    with pytest.raises(DeliveryError, match=r"did not acknowledge every message .*1 failed"):
        producer.flush()  # the one sent without a future: its failure was told to no one yet
    producer.flush()  # each failure is reported once
    producer.publish(event).exception(timeout=30)
    producer.flush()  # a failure told through its future is not raised again
    assert producer.close().failed == 3  # nothing failed that no one was told about
    assert read_topic(stack.kafka_bootstrap, topic) == []


def test_the_async_producer_delivers(stack: Settings) -> None:
    topic = new_topic(stack.kafka_bootstrap)
    settings = stack.model_copy(update={"events_topic": topic})

    async def publish() -> tuple[list[Delivery], Delivery]:
        async with AsyncEventProducer.from_settings(settings, linger_s=0.05) as producer:
            sent = [producer.events.artifact_received(f"art-{n}") for n in range(300)]
            deliveries = await asyncio.gather(*(producer.publish(event) for event in sent))
            last = producer.publish(producer.events.artifact_failed("art-0", error_code="E"))
        assert last.done()  # leaving the block waited for its acknowledgement
        return deliveries, last.result()

    deliveries, last = asyncio.run(asyncio.wait_for(publish(), timeout=60))
    assert all(d.topic == topic for d in deliveries) and len(deliveries) == 300
    on_topic = [e["event_id"] for e in read_events(stack.kafka_bootstrap, topic)]
    assert Counter(on_topic) == Counter([d.event_id for d in deliveries] + [last.event_id])


def test_async_futures_cancelled_or_left_on_an_ended_loop_hurt_nothing(
    stack: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Futures are resolved on their loop: one its caller cancelled is skipped; answers that
    arrive after the loop has ended are dropped quietly; the producer goes on serving."""
    topic = new_topic(stack.kafka_bootstrap)
    producer = AsyncEventProducer(stack.kafka_bootstrap, topic, linger_s=0.2)

    async def cancel_one() -> list[Delivery]:
        futures = [producer.publish(producer.events.artifact_received(f"a-{n}")) for n in range(3)]
        futures[1].cancel()
        return [await futures[0], await futures[2]]

    async def leave_unawaited() -> None:
        producer.publish(producer.events.artifact_received("left"))

    delivered = asyncio.run(cancel_one())
    asyncio.run(leave_unawaited())  # its loop is closed before the broker answers

    async def close() -> None:
        await producer.aclose()

    asyncio.run(close())
    assert [d.batch_index for d in delivered] == [0, 2]
    assert producer.stats().sent == 4 and producer.stats().failed == 0
    assert not [r for r in caplog.records if "background thread" in r.getMessage()]
    assert len(read_events(stack.kafka_bootstrap, topic)) == 4


def usage_snippet() -> str:
    usage = (ROOT / "docs" / "usage.md").read_text()
    section = usage.split("\n## Publishing events\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "docs/usage.md's Publishing events has no python example"
    return match.group(1)


def test_the_usage_doc_example_works_when_pasted(stack: Settings) -> None:
    topic = new_topic(stack.kafka_bootstrap)
    env = {**os.environ, "VOICEMON_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
           "VOICEMON_EVENTS_TOPIC": topic}  # fmt: skip
    result = subprocess.run([sys.executable, "-c", usage_snippet()], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Delivery(event_id='" in result.stdout and f"topic='{topic}'" in result.stdout
    events = read_events(stack.kafka_bootstrap, topic)
    assert [e["event_type"] for e in events] == [
        "artifact_received", "stage_started", "stage_completed", "artifact_completed",
    ]  # fmt: skip
