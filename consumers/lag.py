"""Consumer lag from the broker's view (CONTRACT §8): the consumer group's committed offsets
against the end offsets of the events topic's partitions.

Every worker measures it on a timer with a client of its own, whatever partitions it holds
and whether or not it can ingest: the lag stays exported while Redis or ClickHouse pauses
ingest and by a worker restarted during such an outage (it needs the broker alone). Every
worker of a group reports the same numbers, so dashboards and rules take ``max by
(consumer_group, partition)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

Config = Mapping[str, str | int | float | bool]
RETRY_S = 0.2  # between two asks of the committed offsets after a transient refusal
# A client that has not answered for this long is closed and opened anew: after a broker
# restart on a loaded machine one was seen to refuse for minutes while a new one answered.
REOPEN_AFTER_S = 30.0
# Refusals a broker gives while a coordinator or a leader moves or loads: asked again. (Per
# partition errors carry no "retriable" flag of their own, hence the codes.)
TRANSIENT = frozenset({
    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE, KafkaError.REQUEST_TIMED_OUT, KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
})  # fmt: skip


class LagUnavailable(Exception):
    """The broker could not be asked for the group's offsets. Operator action: check that the
    broker is reachable and that the client may describe the group and the topic."""


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """One partition of the events topic as the broker sees it."""

    partition: int
    start: int  # the earliest offset still retained
    end: int  # the offset the next appended message will get
    committed: int | None  # the group's committed offset; None if it never committed there

    @property
    def lag(self) -> int:
        """Messages the group has still to consume (pure): from its committed offset, or from
        the earliest retained one when it never committed or its offset was deleted (the
        worker starts there, ``auto.offset.reset=earliest``)."""
        position = self.start if self.committed is None else max(self.committed, self.start)
        return max(0, self.end - position)


def offsets_by_partition(
    starts: dict[int, int], ends: dict[int, int], committed: dict[int, int]
) -> list[PartitionOffsets]:
    """The broker's three answers combined per partition (pure); a negative committed offset
    is none."""
    return [
        PartitionOffsets(p, starts[p], ends[p], committed[p] if committed.get(p, -1) >= 0 else None)
        for p in sorted(ends)
    ]


class BrokerLag:
    """Asks the broker for a group's committed offsets and the events topic's start and end
    offsets (blocking; call it in a thread). One client, opened on first use: a consumer of
    the group that never subscribes (it joins nothing and commits nothing; it only reads).

    Not the admin client's ``list_consumer_group_offsets``: in librdkafka (2.16 here) an
    answer of NOT_COORDINATOR to it, which the broker gives while the group's coordinator
    moves or loads (a broker restart), dereferences the admin client's missing consumer
    group and kills the process with SIGSEGV. A consumer's offset fetch returns it as an error,
    which ``_measure`` asks again."""

    def __init__(
        self,
        config: Config,
        group: str,
        topic: str,
        timeout_s: float = 10,
        clock: Callable[[], float] = time.monotonic,
    ):
        """``clock``: what ``REOPEN_AFTER_S`` is judged by."""
        self.config = config
        self.group = group
        self.topic = topic
        self.timeout_s = timeout_s
        self._clock = clock
        self._reader: Consumer | None = None
        self._failing_since: float | None = None  # ``clock()`` at the first failure

    def measure(self) -> list[PartitionOffsets]:
        try:
            found = self._measure()
        except (KafkaException, TimeoutError) as error:  # a broker restarting: no answer yet
            self._failed()
            raise LagUnavailable(f"consumer lag of group {self.group}: {error!r}") from None
        self._failing_since = None
        return found

    def _failed(self) -> None:
        """Count a failure; close the client once none answered for ``REOPEN_AFTER_S``."""
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._failing_since >= REOPEN_AFTER_S and self._reader is not None:
            reader, self._reader = self._reader, None
            reader.close()
            self._failing_since = now

    def _measure(self) -> list[PartitionOffsets]:
        """One measurement within ``timeout_s`` in all (a partition whose leader does not
        answer ends it, not each partition in turn); a transient refusal of the committed
        offsets (NOT_COORDINATOR while a coordinator loads) is asked again until then."""
        deadline = time.monotonic() + self.timeout_s

        def left() -> float:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no answer within {self.timeout_s:g} s")
            return remaining

        if self._reader is None:
            self._reader = Consumer({**self.config, "group.id": self.group,
                                     "enable.auto.commit": False})  # fmt: skip
        reader = self._reader
        metadata = reader.list_topics(self.topic, timeout=left()).topics[self.topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        partitions = [TopicPartition(self.topic, p) for p in sorted(metadata.partitions)]
        while True:
            committed = reader.committed(partitions, timeout=left())
            refused = next((tp.error for tp in committed if tp.error is not None), None)
            if refused is None:
                break
            if refused.code() not in TRANSIENT:
                raise KafkaException(refused)
            time.sleep(min(RETRY_S, left()))
        starts, ends = {}, {}
        for tp in partitions:
            starts[tp.partition], ends[tp.partition] = reader.get_watermark_offsets(
                tp, timeout=left()
            )
        return offsets_by_partition(starts, ends, {tp.partition: tp.offset for tp in committed})
