"""The local stack waits for the topics ``voicemon topics ensure`` accepts: at least the
configured partitions (more is fine), every one led."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from voicemon.devtools.localstack import all_led


def metadata(count: int, leader: int = 1) -> SimpleNamespace:
    return SimpleNamespace(partitions={p: SimpleNamespace(leader=leader) for p in range(count)})


@pytest.mark.parametrize(("found", "ready"), [(3, False), (4, True), (5, True), (64, True)])
def test_partitions_at_least_the_configured_count(found: int, ready: bool) -> None:
    assert (
        all_led({"events": metadata(found), "dlq": metadata(4)}, {"events": 4, "dlq": 4}) is ready
    )


def test_a_missing_topic_or_a_partition_without_leader_is_not_ready() -> None:
    assert not all_led({"events": metadata(4)}, {"events": 4, "dlq": 4})
    assert not all_led({"events": metadata(4, leader=-1)}, {"events": 4})
