"""Consumer lag of the input partitions this worker holds (CONTRACT §8)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from voicemon import telemetry


def report_lag(
    assignment: Iterable[Any],
    topic: str,
    last_offsets: dict[int, int],
    highwater: Callable[[Any], int | None],
) -> None:
    """Set the lag gauge of each held partition; drop partitions handed over (and forget
    their offsets)."""
    held = set()
    for tp in assignment:
        if tp.topic != topic:
            continue
        held.add(tp.partition)
        last, end = last_offsets.get(tp.partition), highwater(tp)
        if last is not None and end is not None:
            telemetry.CONSUMER_LAG.labels(str(tp.partition)).set(max(0, end - last - 1))
    for partition in set(last_offsets) - held:
        del last_offsets[partition]
        telemetry.CONSUMER_LAG.remove(str(partition))
