"""The plain Kafka publisher of the DLQ, the snapshots and the DLQ tools' replays: each
record's delivery is known to the code that sent it.

``KafkaPublisher.send`` returns a ``concurrent.futures.Future`` resolved by that record's own
delivery report: a ``Published`` (topic, partition, offset) once the broker acknowledged it,
or a ``PublishFailed`` saying why not. A background thread polls the delivery reports, so
futures resolve without anyone flushing; ``outcomes`` and ``delivered`` wait for some of them
from asyncio with a deadline. One publisher is shared (the window closer and the DLQ): each
user waits for its own records and never sees another's failure.

A failure is *permanent* (``PublishFailed.permanent``) when the broker or the client refuses
the record or the topic for good — its size, an invalid record, no authorization, an unknown
topic or partition once librdkafka stopped retrying: sending the same record again changes
nothing. Anything else (no answer before a deadline, a broker down, too few replicas) is an
outage: the same record may be sent again later.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from voicemon.producer_errors import DeliveryError

__all__ = ["DeliveryError", "Headers", "KafkaPublisher", "PublishFailed", "Published",
           "delivered", "outcomes"]  # fmt: skip

Headers = Sequence[tuple[str, bytes]]
POLL_S = 0.1  # the delivery-report thread wakes at least this often (to notice a close)

# The record is too big for the topic or for the client's own message.max.bytes.
TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
# Refusals that no retry of the same record changes (librdkafka retried already if it could).
PERMANENT = TOO_LARGE | frozenset({
    KafkaError.INVALID_MSG, KafkaError._BAD_MSG, KafkaError.INVALID_RECORD,
    KafkaError.INVALID_TIMESTAMP, KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED, KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION, KafkaError.TOPIC_EXCEPTION,
    KafkaError.POLICY_VIOLATION, KafkaError._INVALID_ARG, KafkaError.INVALID_REQUIRED_ACKS,
    KafkaError.UNSUPPORTED_FOR_MESSAGE_FORMAT, KafkaError.UNSUPPORTED_COMPRESSION_TYPE,
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class Published:
    """Where the broker acknowledged one record."""

    topic: str
    partition: int
    offset: int


class PublishFailed(DeliveryError):
    """One record was not acknowledged: refused (``code``, librdkafka's error code) or not
    answered in time (``code`` None). Operator action: for a permanent refusal, check the
    topic's ``max.message.bytes`` and the client's ACLs; otherwise check the broker."""

    def __init__(self, topic: str, reason: str, code: int | None = None) -> None:
        super().__init__(f"{topic}: {reason}")
        self.topic, self.reason, self.code = topic, reason, code

    @property
    def permanent(self) -> bool:
        """Sending the same record again would be refused again."""
        return self.code in PERMANENT

    @property
    def too_large(self) -> bool:
        """Refused for its size (by the broker, or by the client's ``message.max.bytes``)."""
        return self.code in TOO_LARGE


MESSAGE_TIMEOUT_MS = 25_000


class KafkaPublisher:
    """A confluent-kafka producer whose every record has its own delivery future; see the
    module docstring. Thread-safe; ``close`` stops its delivery-report thread."""

    def __init__(self, bootstrap: str, **config: Any) -> None:
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "linger.ms": 5,
                "compression.type": "lz4",
                "message.max.bytes": 8 * 1024 * 1024,
                # A record is given up after this (not librdkafka's 300 s): its sender, which
                # waits 30 s, then knows it can never land beside a retry or a successor's copy.
                "message.timeout.ms": MESSAGE_TIMEOUT_MS,
                **config,
            }
        )
        self._closed = threading.Event()
        self._thread = threading.Thread(target=_poll, args=(self._producer, self._closed),
                                        name="voicemon-publisher", daemon=True)  # fmt: skip
        self._thread.start()
        weakref.finalize(self, self._closed.set)  # a publisher dropped unclosed stops polling

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Headers = (),
        partition: int | None = None,
    ) -> Future[Published]:
        """Queue one record (to ``partition`` if given, else by the key's hash); the future
        resolves with its ``Published`` or fails with ``PublishFailed``. Never raises for a
        refusal: a record the client refuses at once fails its future at once."""
        future: Future[Published] = Future()
        future.set_running_or_notify_cancel()  # a queued record cannot be taken back
        while True:
            try:
                self._producer.produce(
                    topic,
                    value,
                    key,
                    partition=-1 if partition is None else partition,  # -1: by the key's hash
                    headers=list(headers) or None,
                    on_delivery=partial(_report, future, topic),
                )
                return future
            except BufferError:
                self._producer.poll(0.05)  # local queue full: let deliveries drain
            except KafkaException as error:
                _report(future, topic, error.args[0], None)
                return future

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait until every record sent so far has its answer, up to ``timeout_s``; how many
        have none yet. Reports no failure: each belongs to its record's future."""
        return int(self._producer.flush(timeout_s))

    def close(self, timeout_s: float = 30.0) -> int:
        """``flush``, then stop the delivery-report thread; how many records had no answer."""
        remaining = self.flush(timeout_s)
        self._closed.set()
        self._thread.join()
        return remaining


def _poll(producer: Producer, closed: threading.Event) -> None:
    """The delivery-report thread (it holds no reference to its publisher)."""
    while not closed.is_set():
        producer.poll(POLL_S)


def _report(
    future: Future[Published], topic: str, error: KafkaError | None, message: Message | None
) -> None:
    """One record's delivery report (on whichever thread polls): its future settles."""
    if future.done():
        return
    if error is None and message is not None:
        offset = message.offset()
        future.set_result(
            Published(topic, message.partition() or 0, -1 if offset is None else offset)
        )
    else:
        reason = error.str() if error is not None else "no delivery report"
        future.set_exception(PublishFailed(topic, reason, None if error is None else error.code()))


async def outcomes(
    futures: Sequence[Future[Published]], timeout_s: float
) -> list[Published | PublishFailed | None]:
    """Each future's outcome once all have one or ``timeout_s`` has passed (None: no answer
    yet; the record may still be delivered later). Waits without blocking the event loop."""
    if futures:
        await asyncio.wait([asyncio.wrap_future(f) for f in futures], timeout=timeout_s)
    return [_outcome(future) for future in futures]


async def delivered(
    futures: Sequence[Future[Published]], timeout_s: float, topic: str
) -> list[Published]:
    """Every future's ``Published`` (records sent to ``topic``); raise the first
    ``PublishFailed``, or one for a record still unanswered after ``timeout_s``."""
    found: list[Published] = []
    for outcome in await outcomes(futures, timeout_s):
        if outcome is None:
            raise PublishFailed(topic, f"no acknowledgement within {timeout_s:g}s")
        if isinstance(outcome, PublishFailed):
            raise outcome
        found.append(outcome)
    return found


def _outcome(future: Future[Published]) -> Published | PublishFailed | None:
    if not future.done():
        return None
    error = future.exception()
    if error is None:
        return future.result()
    if isinstance(error, PublishFailed):
        return error
    return PublishFailed("?", f"{type(error).__name__}: {error}")
