"""Publishing to Kafka with confluent-kafka: the producer library pipeline services use
(``EventProducer``), and the plain publisher of the DLQ and the snapshots (``KafkaPublisher``).

``EventProducer.publish`` checks an event, buffers it and returns a future resolved once the
broker has acknowledged the message carrying it (acks=all, idempotent). Events leave as
batches (CONTRACT §3.0) when a batch is full by count or bytes, or when its linger passes —
a background thread polls delivery reports and sends lingering batches, so the last events
never wait for the next publish. ``close()`` (also on leaving a ``with`` block, and at
interpreter exit for a producer still open) sends everything and waits for it. Thread-safe.
Imports neither faust, redis, chdb nor clickhouse_connect: a pipeline service needs only
confluent-kafka, orjson, msgspec, pydantic and pydantic-settings.
"""

from __future__ import annotations

import atexit
import functools
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Self

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from voicemon.event import RejectReason
from voicemon.event_builders import EventBuilder, check_event, check_size
from voicemon.kafka_client import confluent_config
from voicemon.producer_batch import BatchLimits, OutgoingMessage, PendingBatch
from voicemon.producer_errors import DeliveryError, InvalidEvent, ProducerClosed, ProducerError
from voicemon.settings import DEFAULT_STAGES, Settings

__all__ = ["Delivery", "DeliveryError", "EventProducer", "InvalidEvent", "KafkaPublisher",
           "ProducerClosed", "ProducerError"]  # fmt: skip

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]]


class KafkaPublisher:
    """A confluent-kafka producer that knows whether everything it sent was acknowledged."""

    def __init__(self, bootstrap: str, **config: Any) -> None:
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "linger.ms": 5,
                "compression.type": "lz4",
                "message.max.bytes": 8 * 1024 * 1024,
                **config,
            }
        )
        self._failures: list[str] = []

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Headers = (),
        partition: int | None = None,
    ) -> None:
        """Queue one message (to ``partition`` if given, else by the key's hash)."""
        while True:
            try:
                self._producer.produce(
                    topic,
                    value,
                    key,
                    partition=-1 if partition is None else partition,  # -1: by the key's hash
                    headers=list(headers) or None,
                    on_delivery=self._delivered,
                )
                return
            except BufferError:
                self._producer.poll(0.05)  # local queue full: let deliveries drain

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failures.append(f"{message.topic()}: {error.str()}")

    def flush(self, timeout_s: float = 30.0) -> None:
        """Block until every message sent so far is acknowledged, or raise DeliveryError."""
        remaining = self._producer.flush(timeout_s)
        failures, self._failures = self._failures, []
        if remaining:
            failures.append(f"{remaining} message(s) still unacknowledged after {timeout_s}s")
        if failures:
            raise DeliveryError("; ".join(failures[:5]))


# The producer library's client settings; anything passed to EventProducer(**config) wins.
EVENT_PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 5,
    "compression.type": "lz4",
    "message.max.bytes": 8 * 1024 * 1024,  # the 1 MiB message cap is ours (BatchLimits)
}


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where the broker acknowledged an event: its message's topic, partition and offset,
    and its index in that message's batch (0 for a message of one event)."""

    event_id: str | None
    topic: str
    partition: int
    offset: int
    batch_index: int


_Ticket = tuple["Future[Delivery] | None", str | None]  # None: sent without a future
_Report = tuple[list[_Ticket], str | None, int, int]  # tickets, failure, partition, offset


class EventProducer:
    """Publishes pipeline events to the events topic in batches; see the module docstring.

    ``**config`` is confluent-kafka (librdkafka) configuration, passed through and winning
    over the defaults (``EVENT_PRODUCER_DEFAULTS``), e.g.
    ``EventProducer(bootstrap, **{"security.protocol": "SASL_SSL", ...})`` or
    ``EventProducer(bootstrap, topic, **voicemon.kafka_client.confluent_security(settings))``
    (``from_settings`` does that).
    ``validate`` checks hand-written events with the worker's validator in ``publish``;
    ``events`` builds valid events (``producer.events.stage_completed(...)``).
    Delivery futures resolve on the producer's background thread: callbacks added to them run
    there and must not call ``flush`` or ``close``.
    """

    def __init__(
        self,
        bootstrap: str = "127.0.0.1:9092",
        topic: str = "voice.pipeline.events",
        *,
        max_events: int = 500,
        max_bytes: int = 512 * 1024,
        linger_s: float = 0.05,
        batch: bool = True,
        stages: Iterable[str] = DEFAULT_STAGES,
        validate: bool = True,
        **config: Any,
    ) -> None:
        limits = BatchLimits.capped(max_events, max_bytes, linger_s)
        try:
            self._producer = Producer(
                {**EVENT_PRODUCER_DEFAULTS, "bootstrap.servers": bootstrap, **config}
            )
        except KafkaException as error:
            raise ProducerError(
                f"the Kafka client refused its settings ({error.args[0].str()}); fix that setting"
            ) from None
        self.topic = topic
        self.events = EventBuilder(stages)
        self._validate = validate
        self._pending: PendingBatch[_Ticket] = PendingBatch(limits, batch)
        self._send_lock = threading.Lock()  # one sender at a time keeps messages in order
        self._reports: deque[_Report] = deque()  # broker answers not yet told to the futures
        self._settled = threading.Condition()  # guards _inflight and _failures
        self._inflight = 0  # messages handed to the client whose futures are not settled
        self._failures: list[str] = []
        self._closed = False
        self._stopping = threading.Event()
        # The thread wakes at least this often: a batch opened meanwhile overshoots its linger
        # by at most this much (with no linger, batches never wait for the thread).
        self._poll_s = min(max(linger_s, 0.005), 0.1) if linger_s else 0.1
        self._at_exit = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._at_exit)  # weakly: a closed, dropped producer is not kept alive
        self._thread = threading.Thread(target=self._run, name="voicemon-producer", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> Self:
        """A producer for the deployment ``settings`` describe (``VOICEMON_*``): its broker,
        events topic and stages. ``options`` are the constructor's keyword arguments."""
        return cls(**{**settings_options(settings), **options})

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- publishing ------------------------------------------------------------------------
    def publish(self, event: Mapping[str, Any]) -> Future[Delivery]:
        """Queue one event; the future resolves once the broker has acknowledged it, or
        fails with ``DeliveryError``. Raises ``InvalidEvent`` (nothing sent) for an event the
        worker would reject, ``ProducerClosed`` after ``close``."""
        future = _running_future()
        self._enqueue(event, future)
        return future

    def send(self, event: Mapping[str, Any]) -> None:
        """``publish`` without a future (a few microseconds less per event, for bulk
        callers): a failed delivery is raised by the next ``flush`` or ``close``."""
        self._enqueue(event, None)

    def _enqueue(self, event: Mapping[str, Any], future: Future[Delivery] | None) -> None:
        encoded = self._encode(event)
        event_id, artifact_id = event.get("event_id"), event.get("artifact_id")
        ticket = (future, event_id if isinstance(event_id, str) else None)
        key = artifact_id.encode() if isinstance(artifact_id, str) else None
        with self._send_lock:
            self._check_open()
            if not self._pending.fits(encoded):
                self._send(self._pending.take())
            now = time.monotonic()
            self._pending.add(encoded, ticket, key, now)
            if self._pending.ready(now):
                self._send(self._pending.take())

    def publish_raw(self, value: bytes, key: bytes | None = None) -> Future[Delivery]:
        """Send bytes as they are, as one message of their own, unchecked (the load
        generator's malformed share, tests)."""
        future = _running_future()
        with self._send_lock:
            self._check_open()
            self._send(OutgoingMessage(value, key, [(future, None)]))
        return future

    def _encode(self, event: Mapping[str, Any]) -> bytes:
        if not isinstance(event, dict) and not isinstance(event, Mapping):
            detail = f"an event is a mapping (a JSON object), got {type(event).__name__}"
            raise InvalidEvent(None, RejectReason.NOT_AN_OBJECT, detail)
        if self._validate:
            check_event(event, stages=self.events.stages, now_ms=time.time_ns() // 1_000_000)
        try:
            encoded = orjson.dumps(event if isinstance(event, dict) else dict(event))
        except orjson.JSONEncodeError as error:
            detail = f"it cannot be encoded as JSON ({error})"
            raise InvalidEvent(None, RejectReason.INVALID_JSON, detail) from None
        check_size(event, len(encoded))
        return encoded

    def _check_open(self) -> None:
        if self._closed:
            raise ProducerClosed("this EventProducer is closed; create a new one to publish")

    def _send(self, message: OutgoingMessage[_Ticket] | None) -> None:
        """Hand one message to the client (the send lock is held); its futures settle once
        the broker has answered (``_delivered``, then ``_settle``)."""
        if message is None:
            return
        with self._settled:
            self._inflight += 1
        report = functools.partial(self._delivered, message.tickets)
        while True:
            try:
                self._producer.produce(self.topic, message.value, message.key, on_delivery=report)
                return
            except BufferError:
                self._producer.poll(0.05)  # the client's queue is full: let deliveries drain
            except KafkaException as error:
                self._delivered(message.tickets, error.args[0], None)
                return

    def _delivered(
        self, tickets: list[_Ticket], error: KafkaError | None, message: Message | None
    ) -> None:
        """The client's delivery report, run by whichever thread polls: only recorded, so
        that no user code (a future's callbacks) runs inside the client's poll — a callback
        that publishes must never wait on a poll that waits on it."""
        if error is None and message is not None:
            partition, offset = message.partition(), message.offset()
            self._reports.append((tickets, None, partition or 0, -1 if offset is None else offset))
        else:
            cause = error.str() if error is not None else "no delivery report"
            self._reports.append((tickets, cause, -1, -1))

    def _settle(self) -> None:
        """Resolve or fail the futures of every recorded report (the background thread, or
        ``close`` once that thread has stopped)."""
        while self._reports:
            tickets, cause, partition, offset = self._reports.popleft()
            try:
                if cause is None:
                    for index, (future, event_id) in enumerate(tickets):
                        if future is not None:
                            delivery = Delivery(event_id, self.topic, partition, offset, index)
                            future.set_result(delivery)
                else:
                    failure = DeliveryError(
                        f"Kafka did not acknowledge the message carrying this event on "
                        f"{self.topic} ({cause}); check the broker and the topic, then publish "
                        "the event again"
                    )
                    for future, _ in tickets:
                        if future is not None:
                            future.set_exception(failure)
            finally:
                with self._settled:
                    if cause is not None:
                        self._failures.append(f"{len(tickets)} event(s): {cause}")
                    self._inflight -= 1
                    self._settled.notify_all()

    # -- the background thread -------------------------------------------------------------
    def _run(self) -> None:
        """Poll delivery reports and send a batch whose linger has passed, until closed."""
        while not self._stopping.is_set():
            try:
                self._producer.poll(self._poll_timeout())
                self._settle()
                self._send_if_due()
            except Exception:  # this thread must outlive any surprise; say what happened
                log.exception("the event producer's background thread hit an error")
                time.sleep(self._poll_s)

    def _poll_timeout(self) -> float:
        deadline = self._pending.deadline()  # read unlocked: only a hint how long to wait
        if deadline is None:
            return self._poll_s
        return min(self._poll_s, max(deadline - time.monotonic(), 0.001))

    def _send_if_due(self) -> None:
        if not self._send_lock.acquire(blocking=False):
            return  # a publisher is sending right now (maybe waiting on us to poll)
        try:
            if self._pending.ready(time.monotonic()):
                self._send(self._pending.take())
        finally:
            self._send_lock.release()

    # -- flush and close -------------------------------------------------------------------
    def flush(self, timeout_s: float = 30.0) -> None:
        """Send what is pending and wait until the broker has answered for every message;
        raise ``DeliveryError`` if any message failed since the last flush, or is still
        unanswered after ``timeout_s``."""
        self._refuse_on_own_thread("flush")
        with self._send_lock:
            self._send(self._pending.take())
        self._raise_failures(self._wait_settled(timeout_s), timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        """Send what is pending, wait up to ``timeout_s`` for every acknowledgement, stop the
        background thread. Raises ``DeliveryError`` if anything was not delivered (those
        events' futures failed too). Idempotent."""
        self._refuse_on_own_thread("close")
        if not self._send_lock.acquire(timeout=timeout_s):  # never hang an exiting process
            raise ProducerError(
                f"close() waited {timeout_s}s for a publish stuck in another thread; events "
                "not yet sent were lost: look for a thread blocked inside publish()"
            )
        try:
            if self._closed:
                return
            self._closed = True
            self._send(self._pending.take())
        finally:
            self._send_lock.release()
        atexit.unregister(self._at_exit)
        remaining = self._wait_settled(timeout_s)
        self._stopping.set()
        self._thread.join()
        if remaining:  # give up on them: their futures fail with the purge's error
            self._producer.purge()
            self._producer.flush(5.0)
        self._settle()
        self._raise_failures(remaining, timeout_s)

    def _refuse_on_own_thread(self, what: str) -> None:
        if threading.current_thread() is self._thread:
            raise ProducerError(
                f"{what}() cannot run inside a delivery callback (it would wait on itself); "
                "call it from another thread"
            )

    def _wait_settled(self, timeout_s: float) -> int:
        """Wait until no message is unanswered, up to ``timeout_s``; how many still are."""
        with self._settled:
            self._settled.wait_for(lambda: self._inflight == 0, timeout_s)
            return self._inflight

    def _raise_failures(self, unanswered: int, timeout_s: float) -> None:
        with self._settled:
            failures, self._failures = self._failures, []
        problems = [f"{len(failures)} failed, first: {failures[0]}"] if failures else []
        if unanswered:
            problems.append(f"{unanswered} unanswered after {timeout_s}s")
        if problems:
            raise DeliveryError(
                f"Kafka did not acknowledge every message on {self.topic} "
                f"({'; '.join(problems)}); check the broker and the topic, then publish the "
                "events whose futures failed again"
            )


def settings_options(settings: Settings) -> dict[str, Any]:
    """``EventProducer``'s arguments for a deployment: broker, events topic, stages and the
    Kafka client settings (the security of ``VOICEMON_KAFKA_*``, ``kafka_client``)."""
    return {
        "bootstrap": settings.kafka_bootstrap,
        "topic": settings.events_topic,
        "stages": settings.stages,
        **confluent_config(settings),
    }


def _running_future() -> Future[Delivery]:
    """A future that can no longer be cancelled: a queued event cannot be taken back."""
    future: Future[Delivery] = Future()
    future.set_running_or_notify_cancel()
    return future


def _close_at_exit(producer_ref: weakref.ReferenceType[EventProducer]) -> None:
    """Flush a producer still open at interpreter exit (registered with a weak reference)."""
    producer = producer_ref()
    if producer is None:
        return
    try:
        producer.close()
    except ProducerError as error:
        log.error("at exit: %s", error)
