"""``EventProducer``: the library pipeline services publish their events with. It never
blocks its caller on Kafka and never turns its own failure into the caller's.

``publish`` checks an event, puts it in a bounded buffer and returns at once with a future
resolved once the broker has acknowledged the message carrying it (acks=all, idempotent).
Events leave as batches (CONTRACT §3.0) when a batch is full by count or bytes, or when its
linger passes; a background thread polls delivery reports and sends lingering batches. The
buffer holds every event not yet answered by the broker and is bounded by events and bytes;
an event beyond the bound is dropped and counted (or, with ``overflow="block"``, waited for
up to ``block_timeout_s`` first), one log line per overflow episode. ``close()`` — also on
leaving a ``with`` block, at interpreter exit, and on SIGTERM when asked — is bounded by
``close_timeout_s`` and says what it left unsent. Each failure is reported once: through its
event's future, or (for events sent without one) by the next ``flush`` or ``close``.
Imports neither faust, redis, chdb nor clickhouse_connect, nor prometheus_client unless a
registry is passed in. Thread-safe. docs/producer.md has the failure matrix.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import logging
import os
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, Self

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from voicemon_producer.batch import BatchLimits, Headers, OutgoingMessage, PendingBatch
from voicemon_producer.buffer import BufferLimits, Custody, Overflow, OverflowEpisode
from voicemon_producer.builders import EventBuilder, check_event, check_size
from voicemon_producer.errors import (
    BufferFull,
    DeliveryError,
    InvalidEvent,
    ProducerClosed,
    ProducerError,
)
from voicemon_producer.event import DEFAULT_STAGES, RejectReason

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

log = logging.getLogger(__name__)

# What a caller may pass as a message's headers: a mapping or pairs, values str or bytes.
HeadersLike = Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]]

# The producer library's client settings; anything passed to EventProducer(**config) wins.
EVENT_PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 5,
    "compression.type": "lz4",
    "message.max.bytes": 8 * 1024 * 1024,  # the 1 MiB message cap is ours (BatchLimits)
    # The client's own log lines (a broker it cannot reach, ...) go through Python logging,
    # where the service's configuration decides what is shown, not straight to stderr.
    "logger": logging.getLogger("voicemon_producer.kafka"),
}
# Close gives up on what the broker has not answered within its timeout: purging the client
# and collecting the purged messages' reports takes at most this much more.
GIVE_UP_S = 0.5
_YIELD_EVERY = 16  # futures settled between two GIL releases of the background thread


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where the broker acknowledged an event: its message's topic, partition and offset,
    and its index in that message's batch (0 for a message of one event)."""

    event_id: str | None
    topic: str
    partition: int
    offset: int
    batch_index: int


@dataclass(frozen=True, slots=True)
class ProducerStats:
    """The producer's own numbers. ``queued``/``queued_bytes``: held now (pending, or sent
    and not yet answered); since the producer started: ``sent`` (acknowledged), ``dropped``
    (by the overflow policy, never handed to Kafka) and ``failed`` (refused by the broker,
    timed out, or left unsent by ``close``)."""

    queued: int
    queued_bytes: int
    sent: int
    dropped: int
    failed: int


# An event's future: the caller's thread's kind, or the asyncio producer's (resolved on its
# loop, one loop callback per message); None: sent without a future.
Outcome = Future[Delivery] | asyncio.Future[Delivery]
_Ticket = tuple[Outcome | None, str | None]
_Report = tuple[OutgoingMessage[_Ticket], str | None, int, int]  # cause, partition, offset


class EventProducer:
    """Publishes pipeline events to the events topic in batches; see the module docstring.

    Batches: ``max_events``, ``max_bytes``, ``linger_s`` (capped to CONTRACT §3.0);
    ``batch=False`` sends each event as a message of its own. Buffer: ``buffer_events`` and
    ``buffer_bytes`` bound what is held; ``overflow`` is ``"drop"`` (default) or ``"block"``
    (wait up to ``block_timeout_s`` for room, then drop). ``close_timeout_s`` bounds
    ``close()`` and the exit hook; ``close_on_sigterm`` closes on SIGTERM, then chains to the
    handler that was there. ``metrics_registry``: a prometheus-client registry to export
    this producer's numbers to. ``validate`` checks hand-written events with the worker's
    validator; ``events`` builds valid events (``producer.events.stage_completed(...)``).
    ``**config`` is confluent-kafka (librdkafka) configuration, winning over the defaults
    (``EVENT_PRODUCER_DEFAULTS``), e.g. ``**{"security.protocol": "SASL_SSL", ...}``.
    Delivery futures resolve on the producer's background thread: callbacks added to them
    run there and must not call ``flush`` or ``close``.
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
        buffer_events: int = 100_000,
        buffer_bytes: int = 64 * 1024 * 1024,
        overflow: Overflow = "drop",
        block_timeout_s: float = 1.0,
        close_timeout_s: float = 5.0,
        close_on_sigterm: bool = False,
        metrics_registry: CollectorRegistry | None = None,
        **config: Any,
    ) -> None:
        limits = BatchLimits.capped(max_events, max_bytes, linger_s)
        if close_timeout_s < 0:
            raise ValueError(f"close_timeout_s must be 0 or more, not {close_timeout_s}")
        self._custody = Custody(BufferLimits(buffer_events, buffer_bytes, overflow,
                                             block_timeout_s))  # fmt: skip
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
        self.close_timeout_s = close_timeout_s
        self._validate = validate
        self._lock = threading.Lock()  # guards everything below; never held across I/O waits
        self._changed = threading.Condition(self._lock)  # room freed, or everything answered
        self._pending: PendingBatch[_Ticket] = PendingBatch(limits, batch)
        self._outbox: deque[OutgoingMessage[_Ticket]] = deque()  # the client's queue was full
        self._reports: deque[_Report] = deque()  # broker answers not yet told to the futures
        self._episode = OverflowEpisode()
        self._sent = self._failed = self._dropped = 0
        # Failures of events sent without a future, for the next flush or close to raise.
        self._untold_events, self._untold_first = 0, ""
        self._closed = False
        self._stopping = threading.Event()
        # The thread wakes at least this often: a batch opened meanwhile overshoots its linger
        # by at most this much (with no linger, batches never wait for the thread).
        self._poll_s = min(max(linger_s, 0.005), 0.1) if linger_s else 0.1
        self._at_exit = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._at_exit)  # weakly: a closed, dropped producer is not kept alive
        self._thread = threading.Thread(target=self._run, name="voicemon-producer", daemon=True)
        self._thread.start()
        if metrics_registry is not None:
            from voicemon_producer.metrics import register  # prometheus_client only if asked

            register(metrics_registry, self.stats, topic)
        if close_on_sigterm:
            self.close_on_sigterm()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        """Close; with an exception on its way out, close quietly (logged) so that the
        caller's exception is the one that leaves the block."""
        if kind is None:
            self.close()
            return
        try:
            self._close(None, tell=False)
        except Exception:
            log.exception("closing the event producer on %s failed", self.topic)

    # -- publishing ------------------------------------------------------------------------
    def publish(
        self, event: Mapping[str, Any], headers: HeadersLike | None = None
    ) -> Future[Delivery]:
        """Queue one event and return at once; the future resolves once the broker has
        acknowledged it, or fails with ``DeliveryError`` (``BufferFull`` if the overflow
        policy dropped it). ``headers`` (e.g. W3C ``traceparent``) go on the Kafka message:
        events with different headers travel in different messages. Raises ``InvalidEvent``
        (nothing sent) for an event the worker would reject, ``ProducerClosed`` after
        ``close``."""
        future = _running_future()
        self.publish_with(future, event, headers)
        return future

    def publish_with(
        self, future: Outcome | None, event: Mapping[str, Any], headers: HeadersLike | None = None
    ) -> None:
        """``publish`` resolving a future of the caller's (the asyncio producer's own, created
        on its loop and resolved there)."""
        self._accept(self._encode(event), event, _headers(headers), future)

    def send(self, event: Mapping[str, Any], headers: HeadersLike | None = None) -> None:
        """``publish`` without a future (a few microseconds less per event, for bulk
        callers): a failed or dropped event is reported by the next ``flush`` or ``close``."""
        self.publish_with(None, event, headers)

    def publish_raw(
        self, value: bytes, key: bytes | None = None, headers: HeadersLike | None = None
    ) -> Future[Delivery]:
        """Send bytes as they are, as one message of their own, unchecked (the load
        generator's malformed share, tests)."""
        future = _running_future()
        self._accept(value, None, _headers(headers), future, key=key)
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

    def _accept(
        self,
        encoded: bytes,
        event: Mapping[str, Any] | None,
        headers: Headers,
        future: Outcome | None,
        key: bytes | None = None,
    ) -> None:
        """Take one event into the buffer (``event`` None: raw bytes, a message of their
        own), or apply the overflow policy."""
        event_id = event.get("event_id") if event is not None else None
        ticket = (future, event_id if isinstance(event_id, str) else None)
        if event is not None:
            artifact_id = event.get("artifact_id")
            key = artifact_id.encode() if isinstance(artifact_id, str) else None
        size = len(encoded) + sum(len(name) + len(value) for name, value in headers)
        started, ended, dropped = False, 0, False
        with self._lock:
            self._check_open()
            if self._custody.admits(size) or self._wait_for_room(size):
                ended = self._episode.admit(time.monotonic())
                self._custody.take(size)
                self._add(encoded, ticket, key, headers, size, batched=event is not None)
            else:
                dropped, started = True, self._episode.drop(time.monotonic())
                self._dropped += 1
                if future is None:
                    self._tell_later(1, "dropped, the buffer was full")
        if started or ended:
            self._log_episode(started, ended)
        if dropped and future is not None:
            future.set_exception(
                BufferFull(
                    f"event not sent: the producer's buffer on {self.topic} was full (the "
                    "broker is down or slower than the publishers); publish it again later"
                )
            )
            if isinstance(future, asyncio.Future):
                future.exception()  # told to its caller; asyncio need not log it unawaited

    def _add(
        self,
        encoded: bytes,
        ticket: _Ticket,
        key: bytes | None,
        headers: Headers,
        size: int,
        *,
        batched: bool,
    ) -> None:
        """Put one admitted event in the pending batch (the lock is held) and hand over
        whatever is due."""
        if not batched:
            self._hand_over(OutgoingMessage(encoded, key, [ticket], headers, size))
            return
        if not self._pending.fits(encoded, headers):
            self._hand_over(self._pending.take())
        now = time.monotonic()
        self._pending.add(encoded, ticket, key, now, headers, size)
        if self._pending.ready(now):
            self._hand_over(self._pending.take())

    def _wait_for_room(self, size: int) -> bool:
        """The ``"block"`` policy: wait (the lock released meanwhile) up to its bound for
        room; whether there is room now."""
        limits = self._custody.limits
        if limits.overflow != "block" or limits.block_s <= 0:
            return False
        self._changed.wait_for(lambda: self._closed or self._custody.admits(size), limits.block_s)
        self._check_open()
        return self._custody.admits(size)

    def _log_episode(self, started: bool, ended: int) -> None:
        limits = self._custody.limits
        if ended:
            log.warning("event producer on %s: the buffer has room again; %d event(s) were "
                        "dropped while it was full", self.topic, ended)  # fmt: skip
        if started:
            log.warning(
                "event producer on %s: the buffer is full (%d events / %d bytes held, the "
                "broker is down or slower than the publishers): dropping new events until "
                "there is room (counted in stats().dropped)",
                self.topic, limits.max_events, limits.max_bytes,
            )  # fmt: skip

    def _check_open(self) -> None:
        if self._closed:
            raise ProducerClosed("this EventProducer is closed; create a new one to publish")

    def _hand_over(self, message: OutgoingMessage[_Ticket] | None) -> None:
        """Give one message to the client, after any that wait for room in its queue (the
        lock is held; the client's ``produce`` never blocks)."""
        if message is None:
            return
        if self._outbox or not self._produce(message):
            self._outbox.append(message)

    def _produce(self, message: OutgoingMessage[_Ticket]) -> bool:
        """False if the client's own queue is full (the message waits in the outbox)."""
        try:
            self._producer.produce(
                self.topic,
                message.value,
                message.key,
                headers=list(message.headers) or None,
                on_delivery=functools.partial(self._delivered, message),
            )
        except BufferError:
            return False
        except KafkaException as error:
            self._reports.append((message, error.args[0].str(), -1, -1))
        return True

    def _delivered(
        self, message: OutgoingMessage[_Ticket], error: KafkaError | None, record: Message | None
    ) -> None:
        """The client's delivery report, run by whichever thread polls: only recorded, so
        that no user code (a future's callbacks) runs inside the client's poll — a callback
        that publishes must never wait on a poll that waits on it."""
        if error is None and record is not None:
            partition, offset = record.partition(), record.offset()
            self._reports.append((message, None, partition or 0, -1 if offset is None else offset))
        else:
            cause = error.str() if error is not None else "no delivery report"
            self._reports.append((message, cause, -1, -1))

    def _settle(self) -> None:
        """Resolve or fail the futures of every recorded report, then release the events
        from the buffer (the background thread, or ``close`` once that thread has stopped)."""
        while self._reports:
            message, cause, partition, offset = self._reports.popleft()
            try:
                self._tell_futures(message.tickets, cause, partition, offset)
            finally:
                with self._lock:
                    count = len(message.tickets)
                    self._custody.release(count, message.size)
                    if cause is None:
                        self._sent += count
                    else:
                        self._failed += count
                        untold = sum(1 for future, _ in message.tickets if future is None)
                        if untold:
                            self._tell_later(untold, cause)
                    self._changed.notify_all()

    def _tell_futures(
        self, tickets: list[_Ticket], cause: str | None, partition: int, offset: int
    ) -> None:
        failure = None
        if cause is not None:
            failure = DeliveryError(
                f"Kafka did not acknowledge the message carrying this event on {self.topic} "
                f"({cause}); check the broker and the topic, then publish the event again"
            )
        on_loops: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Delivery], Any]]] = {}
        for index, (future, event_id) in enumerate(tickets):
            if future is None:
                continue
            delivery = Delivery(event_id, self.topic, partition, offset, index)
            if isinstance(future, asyncio.Future):
                on_loops.setdefault(future.get_loop(), []).append((future, failure or delivery))
                continue
            if failure is None:
                future.set_result(delivery)
            else:
                future.set_exception(failure)
            if index % _YIELD_EVERY == _YIELD_EVERY - 1:
                time.sleep(0)  # let a publishing thread have the GIL between chunks
        for loop, outcomes in on_loops.items():
            with contextlib.suppress(RuntimeError):  # its loop is closed: no one awaits them
                loop.call_soon_threadsafe(_resolve_on_loop, outcomes)

    # -- the background thread -------------------------------------------------------------
    def _run(self) -> None:
        """Poll delivery reports and send what is due, until closed."""
        while not self._stopping.is_set():
            try:
                self._producer.poll(self._poll_timeout())
                self._settle()
                self._send_due()
            except Exception:  # this thread must outlive any surprise; say what happened
                log.exception("the event producer's background thread hit an error")
                time.sleep(self._poll_s)

    def _poll_timeout(self) -> float:
        if self._outbox:  # read unlocked: only a hint how long to wait
            return 0.01
        deadline = self._pending.deadline()
        if deadline is None:
            return self._poll_s
        return min(self._poll_s, max(deadline - time.monotonic(), 0.001))

    def _send_due(self) -> None:
        with self._lock:
            while self._outbox and self._produce(self._outbox[0]):
                self._outbox.popleft()
            if self._pending.ready(time.monotonic()):
                self._hand_over(self._pending.take())

    # -- numbers, flush and close ----------------------------------------------------------
    def stats(self) -> ProducerStats:
        """This producer's numbers now (see ``ProducerStats``)."""
        with self._lock:
            return ProducerStats(self._custody.events, self._custody.bytes, self._sent,
                                 self._dropped, self._failed)  # fmt: skip

    def flush(self, timeout_s: float = 30.0) -> None:
        """Send what is pending and wait up to ``timeout_s`` until the broker has answered
        for every event held. Raises ``DeliveryError`` for what no future has told: events
        sent without one that failed or were dropped since the last flush, and events still
        unanswered at the timeout. Failures told through futures are not raised again."""
        self._refuse_on_own_thread("flush")
        with self._lock:
            self._hand_over(self._pending.take())
            self._changed.wait_for(lambda: self._custody.events == 0, timeout_s)
            unanswered = self._custody.events
            problems = self._untold_summary()
        if unanswered:
            problems.append(f"{unanswered} unanswered after {timeout_s}s")
        if problems:
            raise DeliveryError(
                f"Kafka did not acknowledge every message on {self.topic} "
                f"({'; '.join(problems)}); check the broker and the topic, then publish the "
                "events whose futures failed again"
            )

    def close(self, timeout_s: float | None = None) -> ProducerStats:
        """Send what is pending, wait up to ``timeout_s`` (default ``close_timeout_s``) for
        the broker's answers, then give up on the rest (their futures fail) within
        ``GIVE_UP_S`` more, stop the background thread and log what was left unsent.
        Raises ``DeliveryError`` only for failures no future has told (events sent without
        one); returns the final numbers. Idempotent."""
        return self._close(timeout_s, tell=True)

    def _close(self, timeout_s: float | None, *, tell: bool) -> ProducerStats:
        self._refuse_on_own_thread("close")
        timeout = self.close_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        if not self._lock.acquire(timeout=timeout):  # a signal landed inside a publish
            log.error("event producer on %s: not closed, a publish on this thread holds it "
                      "(close was called from a signal handler?)", self.topic)  # fmt: skip
            return self.stats()
        try:
            if self._closed:
                return ProducerStats(self._custody.events, self._custody.bytes, self._sent,
                                     self._dropped, self._failed)  # fmt: skip
            self._closed = True
            self._hand_over(self._pending.take())
            self._changed.notify_all()  # publishers waiting for room give up
            self._changed.wait_for(lambda: self._custody.events == 0,
                                   max(deadline - time.monotonic(), 0))  # fmt: skip
        finally:
            self._lock.release()
        atexit.unregister(self._at_exit)
        self._stopping.set()
        self._thread.join(timeout=1.0)
        failed_before = self.stats().failed
        if self.stats().queued and not self._thread.is_alive():
            self._give_up()
        final = self.stats()
        left = final.failed - failed_before
        if left or final.queued:
            log.warning(
                "event producer on %s closed with %d event(s) left unsent after %.1fs "
                "(broker down, slow or refusing; their futures failed)",
                self.topic, left + final.queued, timeout,
            )  # fmt: skip
        with self._lock:
            problems = self._untold_summary()
        if problems:
            error = DeliveryError(
                f"Kafka did not acknowledge every message on {self.topic} "
                f"({'; '.join(problems)}); check the broker and the topic"
            )
            if tell:
                raise error
            log.error("%s", error)
        return final

    def _give_up(self) -> None:
        """Fail everything still held: the outbox, then the client's queue (purged)."""
        with self._lock:
            stranded, self._outbox = list(self._outbox), deque()
        for message in stranded:
            self._reports.append((message, "not handed to Kafka before close", -1, -1))
        self._producer.purge()
        self._producer.flush(GIVE_UP_S)
        self._settle()

    def _tell_later(self, events: int, cause: str) -> None:
        """Keep a failure no future tells for the next flush or close (the lock is held)."""
        self._untold_first = self._untold_first or cause
        self._untold_events += events

    def _untold_summary(self) -> list[str]:
        """The failures kept for flush or close, once: taking them forgets them."""
        if not self._untold_events:
            return []
        summary = f"{self._untold_events} failed, first: {self._untold_first}"
        self._untold_events, self._untold_first = 0, ""
        return [summary]

    def _refuse_on_own_thread(self, what: str) -> None:
        if threading.current_thread() is self._thread:
            raise ProducerError(
                f"{what}() cannot run inside a delivery callback (it would wait on itself); "
                "call it from another thread"
            )

    def close_on_sigterm(self) -> None:
        """On SIGTERM, close this producer (bounded by ``close_timeout_s``), then run the
        handler that was installed before (the default one ends the process as SIGTERM
        does). Call from the main thread."""
        previous = signal.getsignal(signal.SIGTERM)
        handler = functools.partial(_close_on_signal, weakref.ref(self), previous)
        try:
            signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread
            raise ProducerError(
                "close_on_sigterm must be set up from the main thread (signal handlers can "
                "only be installed there)"
            ) from None


def _headers(given: HeadersLike | None) -> Headers:
    """A message's headers as (str, bytes) pairs; str values are UTF-8 encoded."""
    if not given:
        return ()
    pairs = given.items() if isinstance(given, Mapping) else given
    out = []
    for name, value in pairs:
        if not isinstance(name, str) or not isinstance(value, str | bytes):
            raise TypeError(
                f"a header is a str name and a str or bytes value, got {name!r}: {value!r}"
            )
        out.append((name, value.encode() if isinstance(value, str) else value))
    return tuple(out)


def _running_future() -> Future[Delivery]:
    """A future that can no longer be cancelled: a queued event cannot be taken back."""
    future: Future[Delivery] = Future()
    future.set_running_or_notify_cancel()
    return future


def _resolve_on_loop(outcomes: list[tuple[asyncio.Future[Delivery], Any]]) -> None:
    """Resolve a message's asyncio futures on their loop (a failure counts as seen: asyncio
    does not log it once per unawaited event; the overflow log and the numbers say it)."""
    for future, outcome in outcomes:
        if future.done():  # cancelled by its caller
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
            future.exception()
        else:
            future.set_result(outcome)


def _close_at_exit(producer_ref: weakref.ReferenceType[EventProducer]) -> None:
    """Close a producer still open at interpreter exit, bounded, saying what was left."""
    producer = producer_ref()
    if producer is None:
        return
    try:
        producer._close(None, tell=False)
    except Exception:
        log.exception("at exit: closing the event producer on %s failed", producer.topic)


def _close_on_signal(
    producer_ref: weakref.ReferenceType[EventProducer],
    previous: Any,
    signum: int,
    frame: FrameType | None,
) -> None:
    producer = producer_ref()
    if producer is not None:
        try:
            producer._close(None, tell=False)
        except Exception:
            log.exception("on SIGTERM: closing the event producer failed")
    if callable(previous):
        previous(signum, frame)
    elif previous in (signal.SIG_DFL, None):
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
