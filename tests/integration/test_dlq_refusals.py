"""Rejections that the DLQ refuses, topics that break the DLQ's rules, a worker told to stop
while it waits, and a shared publisher's failures: against the real broker, Redis and workers
(CONTRACT §2, §3.3, §6.1). Worker children get default signal handling (tests/conftest.py)
and are reaped by the pipeline fixture."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import re
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)
from prometheus_client import REGISTRY
from redis.asyncio import Redis as AsyncRedis

from aggregators.closing.closer import TickReport, build_closer
from aggregators.closing.window_state import WindowState
from consumers.dead_letters import DeadLetters
from consumers.decode import RejectedPayload
from consumers.letters import ENVELOPE_BYTES, DeadLetter
from consumers.publish_once import OncePublisher
from tests.integration.harness import STACK_HOME, Pipeline
from voicemon import keys
from voicemon.event import Rejection, RejectReason
from voicemon.publisher import KafkaPublisher, Published, PublishFailed, delivered, outcomes
from voicemon.settings import Settings
from voicemon.store import Client
from voicemon.topics import DLQ_HEADROOM_BYTES, broken_rules

INPUT_LIMIT = 300_000  # the events topic's max.message.bytes in the start-up tests

# -- helpers ---------------------------------------------------------------------------------


def admin(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.kafka_bootstrap})


def create_topic(settings: Settings, name: str, config: dict[str, str]) -> None:
    client = admin(settings)  # held until its futures are done
    for future in client.create_topics([NewTopic(name, 1, 1, config=config)]).values():
        future.result(timeout=30)


def set_config(settings: Settings, topic: str, name: str, value: str) -> None:
    entry = ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource("topic", topic, incremental_configs=[entry])
    client = admin(settings)
    for future in client.incremental_alter_configs([resource]).values():
        future.result(timeout=30)
    deadline = time.monotonic() + 30  # until the broker applies it
    while True:
        found = client.describe_configs([ConfigResource("topic", topic)])
        if next(iter(found.values())).result(timeout=30)[name].value == value:
            return
        assert time.monotonic() < deadline, f"{topic}: {name} not set to {value}"
        time.sleep(0.2)


def worker_log(pipeline: Pipeline, number: int | None = None) -> str:
    path = pipeline.workdir / f"worker-{number or pipeline.started}.log"
    return path.read_text(errors="replace")


def send(pipeline: Pipeline, value: bytes, key: bytes) -> Published:
    """One record on the events topic; where the broker put it."""
    topic = pipeline.settings.events_topic
    future = pipeline.publisher.send(topic, value, key)
    return asyncio.run(delivered([future], 30, topic))[0]


def good(marker: str) -> bytes:
    return orjson.dumps({"event_id": marker, "event_type": "artifact_received",
                         "occurred_at": int(time.time() * 1000), "artifact_id": marker,
                         "organization_id": "org-good"})  # fmt: skip


def wait_counted(pipeline: Pipeline, expected: int, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while pipeline.realtime("org-good")["artifacts_received"] != expected:
        for worker in pipeline.workers:
            assert worker.poll() is None, f"the worker exited: {worker_log(pipeline)[-2000:]}"
        assert time.monotonic() < deadline, f"not counted: {worker_log(pipeline)[-3000:]}"
        time.sleep(0.2)


def dlq_records(pipeline: Pipeline) -> list[tuple[bytes, dict[str, str]]]:
    return pipeline.dlq()


def wait_dlq(pipeline: Pipeline, count: int, timeout_s: float = 60) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    while len(found := dlq_records(pipeline)) < count:
        assert time.monotonic() < deadline, f"{len(found)} DLQ record(s), wanted {count}"
        time.sleep(0.5)
    return found


def metric(worker: subprocess.Popen[bytes], name: str, labels: str) -> float:
    port = worker.web_port  # type: ignore[attr-defined]
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", body, re.M)
    return float(found.group(1)) if found else 0.0


def invalid_utf8(size: int) -> bytes:
    return b"\xff" + os.urandom(size - 1)  # random bytes: lz4 cannot shrink them


# -- item 1 (b, c): letters too large for the DLQ ---------------------------------------------


def test_letter_too_large_for_dlq_goes_out_as_envelope_and_ingest_goes_on(
    pipeline: Pipeline,
) -> None:
    settings = pipeline.settings
    worker = pipeline.start_worker(VOICEMON_CLOSER_ENABLED="false")
    send(pipeline, good("g-0"), b"k")
    wait_counted(pipeline, 1)  # the worker runs (it started on topics that keep the rules)
    # The DLQ's limit lowered behind the worker's back: 200,000 bytes.
    set_config(pipeline.settings, settings.dlq_topic, "max.message.bytes", "200000")

    # Two letters that fit one by one but not in one batch: each arrives whole.
    pair = [invalid_utf8(120_000), invalid_utf8(120_000)]
    pair_at = [send(pipeline, value, b"k") for value in pair]
    # One letter too large on its own (300,000 bytes): an envelope.
    big = invalid_utf8(300_000)
    big_at = send(pipeline, big, b"k")
    # A letter over the DLQ publisher's own limit (8 MiB), compressed to fit the events
    # topic: an envelope too.
    huge = b"[" + b" " * (9 * 1024 * 1024) + b"]"
    squeezer = KafkaPublisher(settings.kafka_bootstrap, **{"message.max.bytes": 16 * 1024 * 1024})
    huge_at = asyncio.run(delivered([squeezer.send(settings.events_topic, huge, b"k")], 30, "in"))
    squeezer.close()
    send(pipeline, good("g-1"), b"k")  # same key: after them, in order
    wait_counted(pipeline, 2)

    letters = wait_dlq(pipeline, 4)
    assert len(letters) == 4, "each letter once"
    by_source = {(h["voicemon-source-partition"], h["voicemon-source-offset"]): (v, h)
                 for v, h in letters}  # fmt: skip
    for value, at in zip(pair, pair_at, strict=True):
        whole, headers = by_source[str(at.partition), str(at.offset)]
        assert whole == value and "voicemon-truncated" not in headers
    for original, at, reason in ((big, big_at, "invalid_utf8"), (huge, huge_at[0], "too_large")):
        value, headers = by_source[str(at.partition), str(at.offset)]
        assert value == original[:ENVELOPE_BYTES] and len(value) == 65_536
        assert headers["voicemon-reason"] == reason and headers["voicemon-detail"]
        assert headers["voicemon-truncated"] == "1"
        assert headers["voicemon-sha256"] == hashlib.sha256(original).hexdigest()
        assert headers["voicemon-original-bytes"] == str(len(original))
    assert metric(worker, "voicemon_dlq_envelopes_total", 'reason="invalid_utf8"') == 1
    assert metric(worker, "voicemon_dlq_envelopes_total", 'reason="too_large"') == 1

    # Now even an envelope is refused (a limit under 64 KiB): counted, logged, and ingest
    # goes on — a permanent refusal never pauses it.
    set_config(pipeline.settings, settings.dlq_topic, "max.message.bytes", "60000")
    send(pipeline, invalid_utf8(100_000), b"k")
    send(pipeline, good("g-2"), b"k")
    wait_counted(pipeline, 3)
    assert metric(worker, "voicemon_dlq_refused_total", 'reason="invalid_utf8"') == 1
    assert metric(worker, "voicemon_ingest_paused", 'dependency="kafka"') == 0
    assert "refused for good" in worker_log(pipeline)
    assert len(dlq_records(pipeline)) == 4


# -- item 1 (a): the worker's start-up rule ---------------------------------------------------


@pytest.fixture
def rule_topics(pipeline: Pipeline) -> Iterator[dict[str, str]]:
    """An events topic of INPUT_LIMIT bytes keeping log-append time, and DLQ topics either
    side of the headroom, plus an events topic keeping create time."""
    prefix = f"rules-{uuid.uuid4().hex[:8]}"
    names = {
        "events": f"{prefix}.events",
        "create_time": f"{prefix}.create-time",
        "dlq_short": f"{prefix}.dlq-short",
        "dlq_enough": f"{prefix}.dlq-enough",
    }
    log_append = {"message.timestamp.type": "LogAppendTime"}
    create_time = {"message.timestamp.type": "CreateTime"}
    limit = {"max.message.bytes": str(INPUT_LIMIT)}
    create_topic(pipeline.settings, names["events"], {**log_append, **limit})
    create_topic(pipeline.settings, names["create_time"], {**create_time, **limit})
    short, enough = INPUT_LIMIT + DLQ_HEADROOM_BYTES - 1, INPUT_LIMIT + DLQ_HEADROOM_BYTES
    create_topic(pipeline.settings, names["dlq_short"], {"max.message.bytes": str(short)})
    create_topic(pipeline.settings, names["dlq_enough"], {"max.message.bytes": str(enough)})
    yield names


def refusal(pipeline: Pipeline, events: str, dlq: str) -> tuple[int, str]:
    worker = pipeline.start_worker(VOICEMON_EVENTS_TOPIC=events, VOICEMON_DLQ_TOPIC=dlq)
    code = worker.wait(timeout=60)
    pipeline.workers.remove(worker)  # reaped
    return code, worker_log(pipeline).strip()


def test_worker_refuses_to_start_on_dlq_smaller_than_input(
    pipeline: Pipeline, rule_topics: dict[str, str]
) -> None:
    bootstrap = pipeline.settings.kafka_bootstrap
    code, said = refusal(pipeline, rule_topics["events"], rule_topics["dlq_short"])
    assert code == 1
    assert said.count("\n") == 0 and said.startswith("error: the worker will not start: "), said
    assert f"max.message.bytes={INPUT_LIMIT + DLQ_HEADROOM_BYTES - 1}" in said
    assert "run voicemon topics ensure" in said

    code, said = refusal(pipeline, rule_topics["create_time"], rule_topics["dlq_enough"])
    assert code == 1 and "message.timestamp.type=CreateTime, not LogAppendTime" in said, said
    missing = f"{rule_topics['events']}-missing"
    code, said = refusal(pipeline, missing, rule_topics["dlq_enough"])
    assert code == 1 and f"topic {missing} does not exist" in said, said

    # Exactly 64 KiB of headroom: the worker starts and counts.
    assert broken_rules(bootstrap, rule_topics["events"], rule_topics["dlq_enough"]) == ""
    pipeline.start_worker(VOICEMON_CLOSER_ENABLED="false",
                 VOICEMON_EVENTS_TOPIC=rule_topics["events"],
                 VOICEMON_DLQ_TOPIC=rule_topics["dlq_enough"])  # fmt: skip
    future = pipeline.publisher.send(rule_topics["events"], good("g-start"), b"k")
    asyncio.run(delivered([future], 30, rule_topics["events"]))
    wait_counted(pipeline, 1)


# -- item 1 (d): SIGTERM whatever the worker waits on -----------------------------------------


def broker_pid() -> int:
    pid = int((STACK_HOME / "kafka" / "kafka.pid").read_text().strip())
    command = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert b"kafka.Kafka" in command, "var/kafka/kafka.pid is not this test stack's broker"
    return pid


def test_sigterm_stops_worker_within_10s_while_dlq_flush_hangs(pipeline: Pipeline) -> None:
    worker = pipeline.start_worker(VOICEMON_CLOSER_ENABLED="false")
    send(pipeline, good("g-0"), b"k")
    wait_counted(pipeline, 1)
    rejected = send(pipeline, b"\xff not UTF-8", b"k")
    marker = keys.dead_lettered(rejected.partition, rejected.offset, None)
    deadline = time.monotonic() + 60
    while not pipeline.redis.exists(marker):  # the worker claimed it: its send comes next
        assert time.monotonic() < deadline, "the worker never claimed the rejection"
        time.sleep(0.01)
    broker = broker_pid()
    os.kill(broker, signal.SIGSTOP)  # the broker answers nothing: the DLQ delivery hangs
    try:
        time.sleep(3)
        assert worker.poll() is None
        signalled = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        finally:
            stopped_after = time.monotonic() - signalled
    finally:
        os.kill(broker, signal.SIGCONT)
    assert stopped_after <= 10, f"stopped {stopped_after:.1f} s after SIGTERM"
    pipeline.workers.remove(worker)  # reaped

    # The letter is neither lost nor published twice: a successor finds the claim abandoned,
    # verifies the DLQ partition and publishes it once.
    pipeline.start_worker(VOICEMON_CLOSER_ENABLED="false")
    send(pipeline, good("g-1"), b"k")
    wait_counted(pipeline, 2, timeout_s=120)
    letters = wait_dlq(pipeline, 1)
    time.sleep(2)
    letters = dlq_records(pipeline)
    assert [(h["voicemon-source-partition"], h["voicemon-source-offset"]) for _, h in letters] \
        == [(str(rejected.partition), str(rejected.offset))]  # fmt: skip
    assert pipeline.redis.get(marker) == b"sent"


# -- item 10: one publisher, each failure to its sender ---------------------------------------


def letter(offset: int) -> DeadLetter:
    rejection = Rejection(RejectReason.INVALID_JSON, "not JSON")
    return DeadLetter(RejectedPayload(rejection, b"{oops", None), b"k", 0, offset)


def test_publisher_reports_each_failure_to_its_sender(
    pipeline: Pipeline, clean_store: Client, now_ms: int
) -> None:
    settings = pipeline.settings
    tiny = f"{settings.snapshots_topic}.tiny"
    create_topic(settings, tiny, {"max.message.bytes": "100"})  # no snapshot record fits
    publisher = KafkaPublisher(settings.kafka_bootstrap)

    # Record by record: the refusal goes to the refused record's future alone.
    refused = publisher.send(tiny, os.urandom(1000), b"k")
    accepted = publisher.send(settings.dlq_topic, b"fine", b"k")
    found = asyncio.run(outcomes([refused, accepted], 30))
    assert isinstance(found[0], PublishFailed) and found[0].too_large and found[0].permanent
    assert isinstance(found[1], Published) and found[1].topic == settings.dlq_topic

    # The closer and the DLQ on that publisher at once: the closer's publish of a snapshot the
    # topic refuses fails and its window stays queued; the DLQ letter is published once.
    async def scenario() -> tuple[list[Any], list[str]]:
        redis = AsyncRedis.from_url(pipeline.env["VOICEMON_REDIS_URL"])
        try:
            state = WindowState(redis)
            refusing = settings.model_copy(update={"snapshots_topic": tiny})
            # The closer believes the topic takes any record: the broker refuses it.
            closer = build_closer(refusing, state, clean_store, publisher,
                                  clock=lambda: now_ms / 1000,
                                  max_record_bytes=1_048_588)  # fmt: skip
            dlq = OncePublisher(redis, DeadLetters(publisher, settings.kafka_bootstrap,
                                                   settings.dlq_topic))  # fmt: skip
            results = await asyncio.gather(
                closer.tick(), dlq.publish_once([letter(7)]), return_exceptions=True
            )
            await dlq.publish_once([letter(7)])  # again: already sent
            queued = [window.member for window in await state.dirty(now_ms)]
            return list(results), queued
        finally:
            await redis.aclose()

    def refusals() -> float:
        labels = {"reason": "refused"}
        return REGISTRY.get_sample_value("voicemon_snapshots_unpublished_total", labels) or 0.0

    before = refusals()
    (tick, published), queued = asyncio.run(scenario())
    assert isinstance(tick, TickReport) and tick.unpublished and not tick.emitted
    assert refusals() == before + len(tick.unpublished)
    assert published is None
    assert queued, "the window whose snapshot was refused was unqueued"
    letters = [h for _, h in dlq_records(pipeline) if h.get("voicemon-source-offset") == "7"]
    assert len(letters) == 1


def test_a_delivery_unanswered_in_time_is_an_outage_not_a_refusal(pipeline: Pipeline) -> None:
    """A record that has no answer by the deadline fails as an outage (not permanent), and
    its future still settles later: the caller may wait for it again."""
    publisher = KafkaPublisher(pipeline.settings.kafka_bootstrap)
    future: Future[Published] = publisher.send(pipeline.settings.dlq_topic, b"late", b"k")
    broker = broker_pid()
    os.kill(broker, signal.SIGSTOP)
    try:
        early = asyncio.run(outcomes([publisher.send(pipeline.settings.dlq_topic, b"x")], 0.5))
    finally:
        os.kill(broker, signal.SIGCONT)
    assert early == [None]
    with pytest.raises(PublishFailed) as failed:
        asyncio.run(delivered([publisher.send(pipeline.settings.dlq_topic, b"y")], 0.0, "dlq"))
    assert not failed.value.permanent and not failed.value.too_large
    assert isinstance(future.result(timeout=30), Published)


def test_a_letter_whose_marker_expired_is_not_sent_again(pipeline: Pipeline) -> None:
    """Against the real broker and Redis: a rejection settled by the count step, replayed
    once its marker is gone (hours later), is not sent again (the step's settled mark); a
    letter above the mark is, and so is one below it appended later (a recreated topic)."""
    settings = pipeline.settings
    appended = int(time.time() * 1000) - 3 * 3_600_000

    def old(offset: int, at: int = appended) -> DeadLetter:
        return dataclasses.replace(letter(offset), appended_ms=at)

    async def publish(letters: list[DeadLetter]) -> None:
        redis = AsyncRedis.from_url(pipeline.env["VOICEMON_REDIS_URL"])
        dead_letters = DeadLetters(KafkaPublisher(settings.kafka_bootstrap),
                                   settings.kafka_bootstrap, settings.dlq_topic)  # fmt: skip
        try:
            await OncePublisher(redis, dead_letters).publish_once(letters)
        finally:
            await redis.aclose()

    def sent(offset: int) -> int:
        return sum(h.get("voicemon-source-offset") == str(offset) for _, h in dlq_records(pipeline))

    asyncio.run(publish([old(20), old(21)]))
    assert pipeline.redis.hget(keys.dlq_settled("count"), "0") == f"21:{appended}".encode()
    for offset in (20, 21):
        pipeline.redis.delete(keys.dead_lettered(0, offset, None))  # expired
    asyncio.run(publish([old(20), old(21), old(22), old(5, appended + 60_000)]))
    assert [sent(offset) for offset in (20, 21, 22, 5)] == [1, 1, 1, 1]
    assert pipeline.redis.get(keys.dead_lettered(0, 21, None)) == b"sent"
    assert pipeline.redis.hget(keys.dlq_settled("count"), "0") == f"22:{appended}".encode()
