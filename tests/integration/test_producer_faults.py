"""The producer library never hurts the service it monitors: with the broker down (stopped
mid-stream), slow (frozen with SIGSTOP) or refusing (a topic whose max.message.bytes is
smaller than every message), ``publish`` returns at once, the event loop keeps its pace, the
caller's exception survives, close and exit are bounded, and nothing is dropped while the
buffer has room and the broker comes back. The broker these tests stop is their own (a
second LocalStack broker on free ports); the session's broker serves the rest."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.integration.test_producer import built_events, new_topic, read_events, results
from tests.ports import free_port
from voicemon.devtools.localstack import LocalStack
from voicemon.producer import BufferFull, DeliveryError, EventProducer
from voicemon.producer_async import AsyncEventProducer
from voicemon.settings import Settings
from voicemon_producer.producer import GIVE_UP_S

ROOT = Path(__file__).resolve().parents[2]
PUBLISH_P99_S = 0.001  # the bound on the caller's thread
LOOP_LAG_P99_S = 0.005
SLACK_S = 0.5  # scheduling on a shared 2-core machine, on top of a bound


def p99(samples: list[float]) -> float:
    """Nearest-rank 99th percentile (CONTRACT §4's rule)."""
    ordered = sorted(samples)
    return ordered[min(int(0.99 * len(ordered)), len(ordered) - 1)]


@contextmanager
def ahead_of_other_load() -> Iterator[bool]:
    """Run the calling thread, and the threads it starts (the producer's), at real-time
    priority, so that the other work on the machine (the parallel test workers on 2 cores) is
    not part of what is measured; yields whether that was allowed (root here and in CI).
    The kernel's real-time throttling leaves other processes 5 % of each second."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
    except PermissionError:
        yield False
        return
    try:
        yield True
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


@dataclass
class OwnBroker:
    """A broker of the tests' own, to stop, freeze and start again."""

    stack: LocalStack

    @property
    def bootstrap(self) -> str:
        return self.stack.settings.kafka_bootstrap

    def pid(self) -> int:
        return int((self.stack.home / "kafka" / "kafka.pid").read_text())

    @contextmanager
    def fault(self, kind: str) -> Iterator[None]:
        """``down``: stopped; ``slow``: frozen (connections open, nothing answered);
        ``refusing``: running (the topic refuses)."""
        if kind == "down":
            self.stack.stop("kafka")
        elif kind == "slow":
            os.kill(self.pid(), signal.SIGSTOP)
        try:
            yield
        finally:
            if kind == "down":
                self.stack.up()
            elif kind == "slow":
                os.kill(self.pid(), signal.SIGCONT)


@pytest.fixture(scope="module")
def broker(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnBroker]:
    settings = stack.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    own = OwnBroker(LocalStack(settings, tmp_path_factory.mktemp("own-broker")))
    own.stack.up()  # its Redis is the session's, already running
    yield own
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        os.kill(own.pid(), signal.SIGCONT)
    own.stack.stop("kafka")


def nowhere() -> str:
    """A bootstrap address nothing listens on: a broker that is down from the start."""
    return f"127.0.0.1:{free_port()}"


def overflow_lines(caplog: pytest.LogCaptureFixture, what: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if what in r.getMessage()]


# -- publish returns at once -------------------------------------------------------------


@pytest.mark.parametrize("fault", ["down", "slow", "refusing"])
def test_publish_returns_at_once_whatever_the_broker_does(
    broker: OwnBroker, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="voicemon_producer")
    refusing = {"max.message.bytes": "2048"} if fault == "refusing" else {}
    topic = new_topic(broker.bootstrap, **refusing)
    with ahead_of_other_load():
        producer = EventProducer(broker.bootstrap, topic, buffer_events=5_000,
                                 close_timeout_s=1.0)  # fmt: skip
        events = built_events(producer, 20_200)  # built first: building is not publishing
        if fault == "refusing":  # every message over the topic's limit, even a single event,
            # and after lz4 too: a note that compresses (say "x" * 2100) lets a batch through
            events = [event | {"note": secrets.token_hex(1050)} for event in events]
        warm = [producer.publish(event) for event in events[:200]]
        for future in warm:  # the stream runs before the fault (refused on the refusing topic)
            future.exception(timeout=30)
        with broker.fault(fault):
            latencies = []
            for event in events[200:]:
                started = time.perf_counter()
                producer.publish(event)
                latencies.append(time.perf_counter() - started)
            during = producer.stats()
            closing = time.monotonic()
            final = producer.close()
            closed_in = time.monotonic() - closing
    print(f"{fault}: publish p99 {p99(latencies) * 1e6:.0f} us, max {max(latencies) * 1e3:.2f} "
          f"ms over {len(latencies)}; close {closed_in:.2f} s; {final}")  # fmt: skip
    assert p99(latencies) <= PUBLISH_P99_S
    assert closed_in <= 1.0 + GIVE_UP_S + SLACK_S
    assert final.queued == 0 and final.sent + final.failed + final.dropped == 20_200
    if fault == "refusing":
        assert final.sent == 0
    else:  # nothing answered during the fault: the buffer fills, the newest are dropped
        assert (during.queued, during.dropped) == (5_000, 15_000)
        assert final.sent == 200 and final.failed == 5_000
        assert len(overflow_lines(caplog, "the buffer is full")) == 1  # once per episode
        assert len(overflow_lines(caplog, "5000 event(s) left unsent")) == 1


def test_the_event_loop_keeps_its_pace_while_the_broker_is_down(broker: OwnBroker) -> None:
    topic = new_topic(broker.bootstrap)

    async def measure(down: bool) -> tuple[list[float], int]:
        producer = AsyncEventProducer(broker.bootstrap, topic, buffer_events=5_000,
                                      close_timeout_s=1.0)  # fmt: skip
        events = built_events(producer, 20_000)
        await asyncio.gather(*(producer.publish(event) for event in events[:100]))
        lags: list[float] = []
        publishing = True

        async def ticker() -> None:
            while publishing:
                started = time.perf_counter()
                await asyncio.sleep(0.001)
                lags.append(time.perf_counter() - started - 0.001)

        ticking = asyncio.create_task(ticker())
        with broker.fault("down") if down else contextlib.nullcontext():
            pending = [producer.publish(event) for event in events[100:200]]
            for start in range(200, len(events), 20):  # a busy service: 20 events a turn
                for event in events[start : start + 20]:
                    producer.publish(event)
                await asyncio.sleep(0)
            publishing = False
            await ticking
            dropped = producer.stats().dropped
            await producer.aclose()
        if down:
            assert all(isinstance(f.exception(), DeliveryError) for f in pending)
        return lags, dropped

    with ahead_of_other_load() as alone:
        lags, dropped = asyncio.run(measure(down=True))
        print(f"loop lag p99 {p99(lags) * 1e3:.2f} ms, max {max(lags) * 1e3:.2f} ms over "
              f"{len(lags)} ticks; {dropped} dropped; real-time priority: {alone}")  # fmt: skip
        assert len(lags) >= 50 and dropped == 14_900
        if alone:
            assert p99(lags) <= LOOP_LAG_P99_S
            return
        # Without the privilege the ceiling is measured in the same run, the same work with
        # the broker up: a call that waited on the broker would add 100s of ms.
        up, _ = asyncio.run(measure(down=False))
        assert p99(lags) <= max(p99(up), LOOP_LAG_P99_S) + LOOP_LAG_P99_S


# -- the caller's exception, close and exit ---------------------------------------------


def test_the_callers_exception_survives_the_with_block() -> None:
    for sends in (False, True):  # a future failed, or a failure no future tells
        started = time.monotonic()
        with (
            pytest.raises(RuntimeError, match="the service's own error"),
            EventProducer(nowhere(), close_timeout_s=0.5) as producer,
        ):
            event = producer.events.artifact_received("art-1")
            if sends:
                producer.send(event)
            else:
                producer.publish(event)
            raise RuntimeError("the service's own error")
        assert time.monotonic() - started <= 0.5 + GIVE_UP_S + SLACK_S
    # Without an exception of the caller's, the failure no future told is raised.
    with (
        pytest.raises(DeliveryError, match="1 failed, first: Local: Purged in queue"),
        EventProducer(nowhere(), close_timeout_s=0.2) as producer,
    ):
        producer.send(producer.events.artifact_received("art-1"))

    async def leave_with_an_error() -> None:
        async with AsyncEventProducer(nowhere(), close_timeout_s=0.5) as producer:
            producer.send(producer.events.artifact_received("art-1"))
            raise KeyError("the service's own")

    with pytest.raises(KeyError, match="the service's own"):
        asyncio.run(leave_with_an_error())


@pytest.mark.parametrize("timeout_s", [0.0, 1.0])
def test_close_is_bounded_and_says_what_was_left(
    timeout_s: float, caplog: pytest.LogCaptureFixture
) -> None:
    producer = EventProducer(nowhere(), close_timeout_s=timeout_s)
    futures = [producer.publish(e) for e in built_events(producer, 100)]
    started = time.monotonic()
    final = producer.close()
    took = time.monotonic() - started
    assert timeout_s <= took <= timeout_s + GIVE_UP_S + SLACK_S, took
    assert (final.queued, final.failed, final.sent) == (0, 100, 0)
    assert all(isinstance(f.exception(), DeliveryError) for f in futures)
    assert overflow_lines(caplog, f"closed with 100 event(s) left unsent after {timeout_s:.1f}s")


def test_close_with_the_broker_up_waits_for_everything_and_says_nothing(
    stack: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    topic = new_topic(stack.kafka_bootstrap)
    producer = EventProducer(stack.kafka_bootstrap, topic, linger_s=3600, close_timeout_s=30)
    futures = [producer.publish(e) for e in built_events(producer, 100)]
    started = time.monotonic()
    final = producer.close()
    assert time.monotonic() - started < 5
    assert (final.sent, final.failed) == (100, 0) and len(results(futures)) == 100
    assert not overflow_lines(caplog, "left unsent")


def child(bootstrap: str, topic: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.producer_child", bootstrap, topic, *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_interpreter_exit_with_the_broker_down_is_bounded_and_says_what_was_left() -> None:
    process = child(nowhere(), "voice.pipeline.events", "exit", "50", "1.0")
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "queued 50"
    queued_at = time.monotonic()
    _, errors = process.communicate(timeout=30)
    took = time.monotonic() - queued_at
    print(f"exit took {took:.2f} s after the last publish")
    assert process.returncode == 0
    assert 1.0 <= took <= 1.0 + GIVE_UP_S + 1.5, took  # + the interpreter's own teardown
    assert "closed with 50 event(s) left unsent after 1.0s" in errors


@pytest.mark.parametrize(
    ("mode", "returncode", "delivered", "printed"),
    [("on", -signal.SIGTERM, 40, ""), ("off", -signal.SIGTERM, 0, ""),
     ("chain", 3, 40, "previous handler ran")],
)  # fmt: skip
def test_sigterm_closes_only_when_asked_and_chains_to_the_previous_handler(
    stack: Settings, mode: str, returncode: int, delivered: int, printed: str
) -> None:
    topic = new_topic(stack.kafka_bootstrap)
    process = child(stack.kafka_bootstrap, topic, "sigterm", "40", mode)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "queued 40"
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert (process.returncode, output.strip()) == (returncode, printed)
    assert len(read_events(stack.kafka_bootstrap, topic)) == delivered


# -- the buffer's edge, and the broker coming back -----------------------------------------


def test_nothing_is_dropped_while_the_buffer_has_room_and_the_broker_comes_back(
    broker: OwnBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="voicemon_producer")
    topic = new_topic(broker.bootstrap)
    producer = EventProducer(broker.bootstrap, topic, buffer_events=3_000, linger_s=0.01)
    events = built_events(producer, 3_102)
    first = [producer.publish(event) for event in events[:100]]
    results(first)
    with broker.fault("down"):
        held = [producer.publish(event) for event in events[100:3_100]]  # exactly the bound
        assert producer.stats().dropped == 0
        over = producer.publish(events[3_100])  # one past it: the newest is dropped
        assert isinstance(over.exception(timeout=0), BufferFull)
        assert producer.stats().dropped == 1
    results(held, timeout=120)  # the broker is back: every held event is delivered
    after = producer.publish(events[3_101])
    after.result(timeout=30)
    final = producer.close()
    assert (final.sent, final.dropped, final.failed) == (3_101, 1, 0)
    on_topic = [event["event_id"] for event in read_events(broker.bootstrap, topic)]
    expected = [e["event_id"] for e in events[:3_100]] + [events[3_101]["event_id"]]
    assert sorted(on_topic) == sorted(expected)
    assert len(overflow_lines(caplog, "the buffer is full")) == 1
    assert overflow_lines(caplog, "room again; 1 event(s) were dropped")


def test_the_block_policy_waits_up_to_its_bound_then_drops() -> None:
    producer = EventProducer(nowhere(), buffer_events=10, overflow="block",
                             block_timeout_s=0.3, close_timeout_s=0)  # fmt: skip
    events = built_events(producer, 12)
    for event in events[:10]:
        started = time.monotonic()
        producer.publish(event)
        assert time.monotonic() - started < 0.05  # room: at once
    started = time.monotonic()
    dropped = producer.publish(events[10])
    waited = time.monotonic() - started
    assert 0.3 <= waited <= 0.3 + SLACK_S, waited
    assert isinstance(dropped.exception(timeout=0), BufferFull)
    assert producer.stats().dropped == 1
    producer.close()


def test_the_block_policy_goes_on_as_soon_as_the_broker_frees_room(stack: Settings) -> None:
    topic = new_topic(stack.kafka_bootstrap)
    producer = EventProducer(stack.kafka_bootstrap, topic, buffer_events=5, batch=False,
                             overflow="block", block_timeout_s=10)  # fmt: skip
    started = time.monotonic()
    futures = [producer.publish(event) for event in built_events(producer, 200)]
    assert time.monotonic() - started < 10
    assert len(results(futures)) == 200
    assert producer.close().dropped == 0


# -- headers -------------------------------------------------------------------------------


def test_headers_reach_the_kafka_record(stack: Settings) -> None:
    topic = new_topic(stack.kafka_bootstrap, partitions=1)
    trace_a = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    trace_b = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with EventProducer(stack.kafka_bootstrap, topic, linger_s=3600) as producer:
        events = built_events(producer, 6)
        producer.publish(events[0], headers={"traceparent": trace_a, "tenant": b"acme"})
        producer.publish(events[1], headers={"traceparent": trace_a, "tenant": b"acme"})
        producer.publish(events[2], headers=[("traceparent", trace_b)])
        producer.publish(events[3])
        producer.publish(events[4])
    consumer = Consumer({"bootstrap.servers": stack.kafka_bootstrap, "group.id": "headers"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    records = []
    deadline = time.monotonic() + 30
    while len(records) < 3 and time.monotonic() < deadline:
        records += [m for m in consumer.consume(10, timeout=1) if m.error() is None]
    consumer.close()
    seen = [(m.headers(), len(m.value().split(b'"event_id"')) - 1) for m in records]
    assert seen == [
        ([("traceparent", trace_a.encode()), ("tenant", b"acme")], 2),
        ([("traceparent", trace_b.encode())], 1),
        (None, 2),
    ]
