"""The producer library's pure parts: batch limits and batching, the buffer bound and its
overflow episodes, headers, its numbers as metrics, the event builders, and its imports (a
producer-only install has no faust, redis, chDB, clickhouse-connect, pydantic-settings nor
prometheus-client, and none of the worker's packages)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from voicemon.event import (
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    MAX_MESSAGE_BYTES,
    EventType,
    PipelineEvent,
    RejectReason,
    validate_event,
)
from voicemon.event_builders import EventBuilder, check_event, check_size, rfc3339_utc
from voicemon.producer import EventProducer
from voicemon.producer_errors import InvalidEvent, ProducerError
from voicemon.settings import DEFAULT_STAGES
from voicemon_producer.batch import BatchLimits, PendingBatch
from voicemon_producer.buffer import EPISODE_QUIET_S, BufferLimits, Custody, OverflowEpisode
from voicemon_producer.errors import DeliveryError
from voicemon_producer.metrics import register
from voicemon_producer.producer import ProducerStats, _headers

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 28, 16, 0, 0, 123_000, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


def builder(stages: tuple[str, ...] = DEFAULT_STAGES) -> EventBuilder:
    ids = iter(range(1_000_000))
    return EventBuilder(stages, clock=lambda: NOW, new_id=lambda: f"id-{next(ids)}")


# -- batch limits -------------------------------------------------------------------------


def test_limits_are_capped_to_the_contract() -> None:
    limits = BatchLimits.capped(max_events=2000, max_bytes=8 * 1024 * 1024, linger_s=0.1)
    assert (limits.max_events, limits.max_bytes) == (MAX_BATCH_EVENTS, MAX_MESSAGE_BYTES)
    assert BatchLimits.capped(10, 2048, 0) == BatchLimits(10, 2048, 0)


@pytest.mark.parametrize(("events", "size", "linger"), [(0, 10, 0.1), (10, 0, 0.1), (1, 1, -1)])
def test_limits_must_be_positive(events: int, size: int, linger: float) -> None:
    with pytest.raises(ValueError, match="batch limits must be positive"):
        BatchLimits.capped(events, size, linger)


def test_a_setting_the_kafka_client_refuses_is_one_clear_error() -> None:
    with pytest.raises(ProducerError) as caught:
        EventProducer("127.0.0.1:1", **{"no.such.property": "1"})
    message = str(caught.value)
    assert "refused its settings" in message and "no.such.property" in message
    assert message.endswith("fix that setting") and "\n" not in message


# -- the pending batch --------------------------------------------------------------------


def encoded(index: int, pad: int = 0) -> bytes:
    return orjson.dumps({"event_id": f"e{index}", "pad": "x" * pad})


def test_a_batch_is_a_json_array_keyed_by_its_first_event_and_counted_exactly() -> None:
    pending: PendingBatch[int] = PendingBatch(BatchLimits(3, 10_000, 60))
    for index in range(3):
        assert pending.fits(encoded(index))
        pending.add(encoded(index), index, f"k{index}".encode(), now=100.0)
    assert pending.ready(now=100.0)  # full by count
    assert pending._bytes == len(b"[" + b",".join(encoded(i) for i in range(3)) + b"]")
    message = pending.take()
    assert message is not None
    assert orjson.loads(message.value) == [orjson.loads(encoded(i)) for i in range(3)]
    assert (message.key, message.tickets) == (b"k0", [0, 1, 2])
    assert pending.take() is None and len(pending) == 0


def test_a_batch_goes_when_its_linger_passes() -> None:
    pending: PendingBatch[int] = PendingBatch(BatchLimits(1000, 10_000, 0.5))
    assert pending.deadline() is None and not pending.ready(now=0.0)
    pending.add(encoded(1), 1, None, now=10.0)
    pending.add(encoded(2), 2, None, now=10.4)
    assert pending.deadline() == 10.5
    assert not pending.ready(now=10.49)
    assert pending.ready(now=10.5)


def test_single_events_go_one_per_message_as_bare_objects() -> None:
    pending: PendingBatch[int] = PendingBatch(BatchLimits(1000, 10_000, 60), batch=False)
    pending.add(encoded(1), 1, b"a", now=0.0)
    assert pending.ready(now=0.0) and not pending.fits(encoded(2))
    message = pending.take()
    assert message is not None and message.value == encoded(1)


@given(
    sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=300),
    max_events=st.integers(1, 50),
    max_bytes=st.integers(64, 20_000),
)
def test_messages_keep_every_event_in_order_and_within_the_limits(
    sizes: list[int], max_events: int, max_bytes: int
) -> None:
    pending: PendingBatch[int] = PendingBatch(BatchLimits(max_events, max_bytes, 60))
    messages = []
    for index, pad in enumerate(sizes):  # as EventProducer.publish does
        event = encoded(index, pad)
        if not pending.fits(event):
            messages.append(pending.take())
        pending.add(event, index, None, now=0.0)
        if pending.ready(now=0.0):
            messages.append(pending.take())
    messages.append(pending.take())
    sent = [m for m in messages if m is not None]
    assert [t for m in sent for t in m.tickets] == list(range(len(sizes)))
    for message in sent:
        elements = orjson.loads(message.value)
        assert [e["event_id"] for e in elements] == [f"e{t}" for t in message.tickets]
        assert len(elements) <= max_events
        assert len(message.value) <= max_bytes or len(elements) == 1


# -- builders -----------------------------------------------------------------------------


def test_there_is_one_builder_per_event_type() -> None:
    names = {name for name in dir(EventBuilder) if not name.startswith("_")} - {"stages"}
    assert names == {t.value for t in EventType}


def test_builders_fill_id_and_time_and_pass_the_workers_validator() -> None:
    events = EventBuilder()
    built = [
        events.artifact_received("a-1", organization_id="acme", ai_cost_usd=0.5),
        events.stage_started("a-1", "transcription", organization_id="acme"),
        events.stage_completed("a-1", "transcription", duration_ms=812.5, ai_cost_usd=0.01),
        events.stage_failed("a-1", "claims_extraction", error_code="E_X", duration_ms=3.0),
        events.artifact_failed("a-1", error_code="E_X"),
        events.artifact_completed("a-1", duration_ms=1204.0, organization_id="acme"),
    ]
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    for event in built:
        assert uuid.UUID(event["event_id"]).version == 4
        assert event["occurred_at"].endswith("Z")
        occurred = datetime.fromisoformat(event["occurred_at"])
        assert abs(occurred.timestamp() * 1000 - now_ms) < 5000
        verdict = validate_event(event, now_ms=now_ms, stages=frozenset(DEFAULT_STAGES))
        assert isinstance(verdict, PipelineEvent), verdict
    assert len({e["event_id"] for e in built}) == 6
    assert [e["event_type"] for e in built] == [
        "artifact_received", "stage_started", "stage_completed", "stage_failed",
        "artifact_failed", "artifact_completed",
    ]  # fmt: skip


def test_a_builder_writes_exactly_the_fields_given() -> None:
    event = builder().stage_completed(
        "a-1", "transcription", duration_ms=12.5, organization_id="acme"
    )
    assert event == {
        "event_id": "id-0",
        "event_type": "stage_completed",
        "occurred_at": "2026-11-28T16:00:00.123Z",
        "artifact_id": "a-1",
        "stage": "transcription",
        "organization_id": "acme",
        "duration_ms": 12.5,
    }


def test_given_id_and_time_are_kept_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    event = builder().artifact_received(
        "a-1", event_id="mine", occurred_at=datetime(2026, 11, 28, 16, 30, tzinfo=paris)
    )
    assert (event["event_id"], event["occurred_at"]) == ("mine", "2026-11-28T15:30:00.000Z")


@pytest.mark.parametrize(
    ("build", "reason", "field"),
    [
        (lambda b: b.stage_started("a-1", "teleport"), RejectReason.UNKNOWN_STAGE, "stage"),
        (lambda b: b.artifact_received(""), RejectReason.INVALID_FIELD, "artifact_id"),
        (
            lambda b: b.stage_completed("a-1", "transcription", duration_ms=-1.0),
            RejectReason.INVALID_FIELD,
            "duration_ms",
        ),
        (
            lambda b: b.artifact_received("a-1", organization_id="acme corp"),
            RejectReason.INVALID_FIELD,
            "organization_id",
        ),
        (
            lambda b: b.artifact_received("a-1", ai_cost_usd=float("nan")),
            RejectReason.INVALID_FIELD,
            "ai_cost_usd",
        ),
        (
            lambda b: b.artifact_received("a-1", occurred_at=NOW + timedelta(minutes=6)),
            RejectReason.FUTURE_TIMESTAMP,
            "occurred_at",
        ),
        (
            lambda b: b.artifact_received("a-1", occurred_at=NOW - timedelta(hours=49)),
            RejectReason.TOO_LATE,
            "occurred_at",
        ),
        (
            lambda b: b.artifact_received("a-1", occurred_at=datetime(2026, 11, 28, 16)),
            RejectReason.INVALID_FIELD,
            "occurred_at",
        ),
    ],
)
def test_builders_raise_one_clear_error_for_what_the_worker_would_reject(
    build: object, reason: RejectReason, field: str
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        build(builder())  # type: ignore[operator]
    message = str(caught.value)
    assert caught.value.reason == reason
    assert message.count(field) >= 1 and "\n" not in message and reason.value in message
    assert message.endswith("fix the event and publish it again")


def test_custom_stages_are_the_deployments() -> None:
    events = builder(("ocr",))
    assert events.stage_started("a-1", "ocr")["stage"] == "ocr"
    with pytest.raises(InvalidEvent, match="'transcription' is not a configured stage"):
        events.stage_started("a-1", "transcription")


def test_hand_written_events_are_checked_like_the_worker_does() -> None:
    event = {"event_id": "e", "event_type": "stage_started", "occurred_at": NOW_MS,
             "artifact_id": "a"}  # fmt: skip
    with pytest.raises(InvalidEvent, match="stage: required for stage_started") as caught:
        check_event(event, stages=frozenset(DEFAULT_STAGES), now_ms=NOW_MS)
    assert caught.value.reason == RejectReason.MISSING_FIELD
    check_event(event | {"stage": "transcription"}, stages=frozenset(DEFAULT_STAGES),
                now_ms=NOW_MS)  # fmt: skip


def test_an_event_over_64_kib_is_refused() -> None:
    check_size({}, MAX_EVENT_BYTES)
    with pytest.raises(InvalidEvent, match=f"65537 bytes encoded; the limit is {MAX_EVENT_BYTES}"):
        check_size({"event_type": "artifact_received"}, MAX_EVENT_BYTES + 1)


def test_rfc3339_is_utc_with_z() -> None:
    assert rfc3339_utc(datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)) == (
        "2026-01-02T03:04:05.678Z"
    )


# -- a producer-only install ----------------------------------------------------------------

_HEAVY = ("faust", "mode", "aiokafka", "redis", "chdb", "clickhouse_connect")

_CHECK_IMPORTS = f"""
import importlib.abc, sys

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {_HEAVY!r}:
            raise ImportError(f"{{name}} is not installed in a producer-only install")
        return None

sys.meta_path.insert(0, Absent())
from voicemon.producer import EventProducer
from voicemon.publisher import KafkaPublisher
from voicemon.producer_async import AsyncEventProducer
from voicemon.event_builders import EventBuilder
EventBuilder().stage_completed("a-1", "transcription", duration_ms=1.0)
loaded = sorted(n for n in sys.modules if n.split(".")[0] in {_HEAVY!r})
print(",".join(loaded) or "none")
"""


def test_the_producer_library_imports_no_worker_dependency() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _CHECK_IMPORTS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "none"


_NOT_IN_THE_DISTRIBUTION = (*_HEAVY, "voicemon", "consumers", "aggregators", "runtime",
                            "pydantic_settings", "prometheus_client")  # fmt: skip
_PRODUCER_ONLY = f"""
import importlib.abc, sys

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {_NOT_IN_THE_DISTRIBUTION!r}:
            raise ImportError(f"{{name}} is not in the voicemon-producer distribution")
        return None

sys.meta_path.insert(0, Absent())
from voicemon_producer import AsyncEventProducer, EventProducer
producer = EventProducer("127.0.0.1:1", close_timeout_s=0)
producer.publish(producer.events.stage_completed("a-1", "transcription", duration_ms=1.0))
print(producer.close())
"""


def test_the_producer_distribution_needs_none_of_the_workers_packages() -> None:
    result = subprocess.run([sys.executable, "-c", _PRODUCER_ONLY], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "failed=1" in result.stdout


# -- the buffer bound and overflow episodes ---------------------------------------------------


def test_the_buffer_admits_up_to_its_bound_by_events_and_by_bytes() -> None:
    custody = Custody(BufferLimits(max_events=3, max_bytes=100))
    for _ in range(3):
        assert custody.admits(10)
        custody.take(10)
    assert not custody.admits(1)  # the fourth event: over by count
    custody.release(1, 10)
    assert custody.admits(80) and not custody.admits(81)  # 20 held + 80 = the byte bound
    custody.release(2, 20)
    assert (custody.events, custody.bytes) == (0, 0)
    assert custody.admits(10_000)  # an empty buffer takes any single event


@pytest.mark.parametrize(
    ("events", "size", "overflow", "block_s", "problem"),
    [(0, 1, "drop", 1.0, "must hold something"), (1, 0, "drop", 1.0, "must hold something"),
     (1, 1, "wait", 1.0, "overflow must be 'drop' or 'block'"),
     (1, 1, "block", -0.1, "block_timeout_s must be 0 or more")],
)  # fmt: skip
def test_buffer_settings_are_checked(
    events: int, size: int, overflow: str, block_s: float, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        BufferLimits(events, size, overflow, block_s)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=problem):
        EventProducer("127.0.0.1:1", buffer_events=events, buffer_bytes=size,
                      overflow=overflow, block_timeout_s=block_s)  # type: ignore[arg-type]  # fmt: skip


def test_an_overflow_episode_is_logged_when_it_starts_and_once_it_is_quiet() -> None:
    episode = OverflowEpisode()
    assert episode.admit(now=0.0) == 0  # no episode: nothing to say
    assert episode.drop(now=10.0) is True  # the first drop starts one
    assert [episode.drop(now=10.0 + n / 10) for n in range(1, 5)] == [False] * 4
    assert episode.admit(now=10.4 + EPISODE_QUIET_S - 0.001) == 0  # flapping: still one
    assert episode.drop(now=11.5) is False
    assert episode.admit(now=11.5 + EPISODE_QUIET_S) == 6  # a quiet second: it ends
    assert episode.admit(now=20.0) == 0
    assert episode.drop(now=21.0) is True  # the next one starts afresh


# -- headers and batches ----------------------------------------------------------------------


def test_headers_are_str_names_and_bytes_values_whatever_is_passed() -> None:
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert _headers(None) == _headers({}) == ()
    assert _headers({"traceparent": trace, "raw": b"\x00"}) == (
        ("traceparent", trace.encode()), ("raw", b"\x00"),
    )  # fmt: skip
    assert _headers([("a", "1"), ("a", "2")]) == (("a", b"1"), ("a", b"2"))  # repeats kept
    with pytest.raises(TypeError, match="a header is a str name and a str or bytes value"):
        _headers({"n": 1})  # type: ignore[dict-item]


def test_events_with_other_headers_start_another_message() -> None:
    pending: PendingBatch[int] = PendingBatch(BatchLimits(100, 10_000, 60))
    traced = (("traceparent", b"00-a-b-01"),)
    pending.add(encoded(1), 1, b"k", now=0.0, headers=traced, size=7)
    assert pending.fits(encoded(2), traced) and not pending.fits(encoded(2))
    pending.add(encoded(2), 2, b"k", now=0.0, headers=traced, size=8)
    message = pending.take()
    assert message is not None
    assert (message.headers, message.tickets, message.size) == (traced, [1, 2], 15)
    assert pending.fits(encoded(3))  # an empty batch takes any headers


# -- the producer's numbers as metrics ----------------------------------------------------------


def test_the_numbers_are_exported_to_the_registry_passed_in() -> None:
    registry = CollectorRegistry()
    register(registry, lambda: ProducerStats(3, 300, 10, 2, 1), "voice.pipeline.events")
    text = generate_latest(registry).decode()
    for line in (
        'voicemon_producer_events_queued{topic="voice.pipeline.events"} 3.0',
        'voicemon_producer_events_queued_bytes{topic="voice.pipeline.events"} 300.0',
        'voicemon_producer_events_sent_total{topic="voice.pipeline.events"} 10.0',
        'voicemon_producer_events_dropped_total{topic="voice.pipeline.events"} 2.0',
        'voicemon_producer_events_failed_total{topic="voice.pipeline.events"} 1.0',
    ):
        assert line in text
    producer = EventProducer("127.0.0.1:1", metrics_registry=registry, close_timeout_s=0,
                             topic="other")  # fmt: skip
    producer.send(producer.events.artifact_received("a-1"))
    assert (
        'voicemon_producer_events_queued{topic="other"} 1.0' in generate_latest(registry).decode()
    )
    with pytest.raises(DeliveryError, match="1 failed"):
        producer.close()
    assert (
        registry.get_sample_value("voicemon_producer_events_failed_total", {"topic": "other"}) == 1
    )
