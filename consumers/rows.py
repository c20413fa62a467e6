"""An accepted event and where it sits in the input topic: one raw row (pure data)."""

from __future__ import annotations

import msgspec

from voicemon.event import PipelineEvent


class Position(msgspec.Struct, frozen=True, gc=False):
    """Where an event sits in the input topic; unique per event occurrence."""

    partition: int
    offset: int
    batch_index: int

    def __str__(self) -> str:
        return position_text(self)


def position_text(position: Position) -> str:
    """``str(position)``, without the method call's cost in a loop over a chunk's rows."""
    return f"{position.partition}:{position.offset}:{position.batch_index}"


class RawRow(msgspec.Struct, frozen=True, gc=False):
    event: PipelineEvent
    position: Position
