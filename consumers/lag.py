"""Consumer lag from the broker's view (CONTRACT §8): the consumer group's committed offsets
against the end offsets of the events topic's partitions.

Every worker measures it on a timer with a client of its own, whatever partitions it holds
and whether or not it can ingest: the lag stays exported while Redis or ClickHouse pauses
ingest and by a worker restarted during such an outage (it needs the broker alone). Every
worker of a group reports the same numbers, so dashboards and rules take ``max by
(consumer_group, partition)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition

Config = Mapping[str, str | int | float | bool]


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
    group and kills the process with SIGSEGV. A consumer's own offset fetch retries it."""

    def __init__(self, config: Config, group: str, topic: str, timeout_s: float = 10):
        self.config = config
        self.group = group
        self.topic = topic
        self.timeout_s = timeout_s
        self._reader: Consumer | None = None

    def measure(self) -> list[PartitionOffsets]:
        try:
            return self._measure()
        except (KafkaException, TimeoutError) as error:  # a broker restarting: no answer yet
            raise LagUnavailable(f"consumer lag of group {self.group}: {error!r}") from None

    def _measure(self) -> list[PartitionOffsets]:
        if self._reader is None:
            self._reader = Consumer({**self.config, "group.id": self.group,
                                     "enable.auto.commit": False})  # fmt: skip
        reader = self._reader
        metadata = reader.list_topics(self.topic, timeout=self.timeout_s).topics[self.topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        partitions = [TopicPartition(self.topic, p) for p in sorted(metadata.partitions)]
        committed = reader.committed(partitions, timeout=self.timeout_s)
        refused = next((tp.error for tp in committed if tp.error is not None), None)
        if refused is not None:
            raise KafkaException(refused)
        starts, ends = {}, {}
        for tp in partitions:
            starts[tp.partition], ends[tp.partition] = reader.get_watermark_offsets(
                tp, timeout=self.timeout_s
            )
        return offsets_by_partition(starts, ends, {tp.partition: tp.offset for tp in committed})
