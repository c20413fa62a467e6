"""Consumer lag from the broker's offsets (consumers/lag.py) and how it is exported
(voicemon/telemetry.py's BrokerOffsets)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError
from prometheus_client import CollectorRegistry

from consumers.lag import PartitionOffsets, offsets_by_partition
from voicemon.telemetry import BrokerOffsets


def test_lag_counts_from_the_committed_offset() -> None:
    assert PartitionOffsets(0, start=0, end=120, committed=100).lag == 20
    assert PartitionOffsets(0, start=0, end=120, committed=120).lag == 0


def test_a_group_that_never_committed_is_behind_by_every_retained_message() -> None:
    assert PartitionOffsets(0, start=30, end=120, committed=None).lag == 90
    assert PartitionOffsets(0, start=0, end=0, committed=None).lag == 0


def test_a_committed_offset_deleted_by_retention_counts_from_the_earliest_retained() -> None:
    assert PartitionOffsets(0, start=500, end=800, committed=100).lag == 300


def test_offsets_combine_per_partition_and_a_negative_committed_offset_is_none() -> None:
    found = offsets_by_partition({1: 0, 0: 5}, {1: 9, 0: 7}, {0: 6, 1: -1001})
    assert found == [
        PartitionOffsets(0, start=5, end=7, committed=6),
        PartitionOffsets(1, start=0, end=9, committed=None),
    ]
    assert offsets_by_partition({0: 0}, {0: 4}, {}) == [PartitionOffsets(0, 0, 4, None)]


def _samples(collector: BrokerOffsets) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
    }


def test_the_broker_view_is_exported_per_group_and_partition() -> None:
    collector = BrokerOffsets()
    collector.update("voicemon", [(0, 120, 100, 20), (1, 9, None, 9)])
    samples = _samples(collector)
    group = ("consumer_group", "voicemon")
    g0, g1 = (group, ("partition", "0")), (group, ("partition", "1"))
    assert samples == {
        ("voicemon_consumer_lag_messages", g0): 20,
        ("voicemon_consumer_lag_messages", g1): 9,
        ("voicemon_input_messages_total", (("partition", "0"),)): 120,
        ("voicemon_input_messages_total", (("partition", "1"),)): 9,
        ("voicemon_consumer_committed_messages_total", g0): 100,
    }


def test_nothing_is_exported_after_a_failed_or_stale_measurement() -> None:
    collector = BrokerOffsets()
    assert _samples(collector) == {}
    collector.update("voicemon", [(0, 5, 5, 0)])
    collector.clear()
    assert _samples(collector) == {}
    stale = BrokerOffsets(max_age_s=0.05)
    stale.update("voicemon", [(0, 5, 5, 0)])
    assert _samples(stale)
    time.sleep(0.1)
    assert _samples(stale) == {}


def test_a_broker_that_does_not_answer_in_time_makes_the_lag_unavailable() -> None:
    """A future timing out (a broker restarting) is an unavailable measurement, not a crash
    of the worker's timer."""
    import pytest

    from consumers.lag import BrokerLag, LagUnavailable

    lag = BrokerLag({"bootstrap.servers": "127.0.0.1:1"}, "group", "topic", timeout_s=0.01)

    def silent() -> list[PartitionOffsets]:
        raise TimeoutError

    lag._measure = silent  # type: ignore[method-assign]
    with pytest.raises(LagUnavailable, match="TimeoutError"):
        lag.measure()


class _Reader:
    """A consumer of the group standing in for the broker: its committed offsets refused
    with ``errors`` in turn, then answered."""

    def __init__(self, errors: list[int]) -> None:
        self.errors = errors
        self.asked = 0

    def list_topics(self, topic: str, timeout: float) -> Any:
        partition = SimpleNamespace()
        return SimpleNamespace(
            topics={topic: SimpleNamespace(error=None, partitions={0: partition})}
        )

    def committed(self, partitions: list[Any], timeout: float) -> list[Any]:
        self.asked += 1
        code = self.errors.pop(0) if self.errors else None
        error = None if code is None else KafkaError(code)
        return [SimpleNamespace(partition=0, offset=7, error=error)]

    def get_watermark_offsets(self, tp: Any, timeout: float) -> tuple[int, int]:
        return 2, 10


@pytest.mark.parametrize(
    ("errors", "lag"),
    [([], 3), ([KafkaError.NOT_COORDINATOR], 3),
     ([KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.NOT_COORDINATOR], 3),
     ([KafkaError.GROUP_AUTHORIZATION_FAILED], None)],
)  # fmt: skip
def test_a_transient_refusal_of_the_committed_offsets_is_asked_again(
    errors: list[int], lag: int | None
) -> None:
    """NOT_COORDINATOR and its kin (a coordinator loading after a broker restart) are asked
    again within the timeout; a refusal for good makes the measurement unavailable."""
    from consumers import lag as module

    broker_lag = module.BrokerLag({}, "group", "topic", timeout_s=5)
    reader = _Reader(list(errors))
    broker_lag._reader = reader  # type: ignore[assignment]
    if lag is None:
        with pytest.raises(module.LagUnavailable, match="GROUP_AUTHORIZATION_FAILED"):
            broker_lag.measure()
        assert reader.asked == 1
    else:
        assert [o.lag for o in broker_lag.measure()] == [lag]
        assert reader.asked == len(errors) + 1


def test_a_refusal_that_lasts_past_the_timeout_makes_the_lag_unavailable() -> None:
    from consumers import lag as module

    broker_lag = module.BrokerLag({}, "group", "topic", timeout_s=0.5)
    broker_lag._reader = _Reader([KafkaError.NOT_COORDINATOR] * 100)  # type: ignore[assignment]
    with pytest.raises(module.LagUnavailable, match=r"no answer within 0\.5 s"):
        broker_lag.measure()
