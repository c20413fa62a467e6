"""Raw events into ``voicemon.pipeline_events``: one column-oriented insert per batch.

Synchronous (clickhouse-connect has no async client); the worker calls it in a thread.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from voicemon import telemetry
from voicemon.event import PipelineEvent
from voicemon.store import Client

TABLE = "voicemon.pipeline_events"
COLUMNS = (
    "event_id",
    "event_type",
    "occurred_at",
    "artifact_id",
    "organization_id",
    "stage",
    "duration_ms",
    "ai_cost_usd",
    "error_code",
    "schema_version",
    "kafka_partition",
    "kafka_offset",
    "batch_index",
    "ingested_at",
)


@dataclass(frozen=True, slots=True)
class Position:
    """Where an event sits in the input topic; unique per event occurrence."""

    partition: int
    offset: int
    batch_index: int

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}:{self.batch_index}"


@dataclass(frozen=True, slots=True)
class RawRow:
    event: PipelineEvent
    position: Position


def raw_columns(rows: Sequence[RawRow], ingested_at_ms: int) -> list[list[object]]:
    """The insert's columns, in ``COLUMNS`` order (times as epoch ms)."""
    events = [row.event for row in rows]
    return [
        [e.event_id for e in events],
        [e.event_type.value for e in events],
        [e.occurred_at_ms for e in events],
        [e.artifact_id for e in events],
        [e.organization_id for e in events],
        [e.stage for e in events],
        [e.duration_ms for e in events],
        [e.ai_cost_usd for e in events],
        [e.error_code for e in events],
        [e.schema_version for e in events],
        [row.position.partition for row in rows],
        [row.position.offset for row in rows],
        [row.position.batch_index for row in rows],
        [ingested_at_ms] * len(rows),
    ]


class RawWriter:
    def __init__(self, client: Client) -> None:
        self._client = client

    def write(self, rows: Sequence[RawRow]) -> None:
        if not rows:
            return
        started = time.perf_counter()
        self._client.insert(
            TABLE,
            raw_columns(rows, int(time.time() * 1000)),
            column_names=COLUMNS,
            column_oriented=True,
        )
        telemetry.CLICKHOUSE_INSERT.observe(time.perf_counter() - started)
        telemetry.CLICKHOUSE_ROWS.inc(len(rows))

    def already_written(self, positions: Sequence[Position]) -> set[Position]:
        """Which of ``positions`` already have a row (a replay after a crash mid-batch)."""
        if not positions:
            return set()
        result = self._client.query(
            f"SELECT kafka_partition, kafka_offset, batch_index FROM {TABLE} "
            "WHERE (kafka_partition, kafka_offset) IN {wanted:Array(Tuple(UInt32, UInt64))}",
            parameters={"wanted": sorted({(p.partition, p.offset) for p in positions})},
        )
        return {Position(*row) for row in result.result_rows} & set(positions)
