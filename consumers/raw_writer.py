"""Raw events into ``voicemon.pipeline_events``: one columnar insert per batch.

The batch travels as an Arrow table: its columns are built in C from the rows, and the
engine reads them without Python's help, so the insert holds the interpreter only briefly.
Synchronous (clickhouse-connect has no async client); the worker calls it in a thread.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence

import pyarrow as pa
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError

from consumers.rows import Position, RawRow, position_text
from consumers.stored_ids import stored_positions
from voicemon import telemetry
from voicemon.event import PipelineEvent
from voicemon.store import Client

TABLE = "voicemon.pipeline_events"
_MS = pa.timestamp("ms", tz="UTC")
# The insert's Arrow schema: the table's columns, with ClickHouse's ranges as Arrow types.
SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("occurred_at", _MS),
        ("artifact_id", pa.string()),
        ("organization_id", pa.string()),
        ("stage", pa.string()),
        ("duration_ms", pa.float64()),
        ("ai_cost_usd", pa.float64()),
        ("error_code", pa.string()),
        ("schema_version", pa.uint16()),
        ("kafka_partition", pa.uint32()),
        ("kafka_offset", pa.uint64()),
        ("batch_index", pa.uint16()),
        ("ingested_at", _MS),
    ]
)

# ClickHouse error codes that mean "these rows cannot be stored as they are", as opposed to
# an outage: CANNOT_PARSE_TEXT, CANNOT_PARSE_INPUT_ASSERTION_FAILED, CANNOT_PARSE_DATE,
# CANNOT_PARSE_DATETIME, TYPE_MISMATCH, ARGUMENT_OUT_OF_BOUND, CANNOT_CONVERT_TYPE,
# CANNOT_PARSE_NUMBER, INCORRECT_DATA, TOO_LARGE_STRING_SIZE, VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE,
# CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN, CANNOT_PARSE_UUID, DECIMAL_OVERFLOW, VIOLATED_CONSTRAINT.
CONTENT_ERROR_CODES = frozenset({6, 27, 38, 41, 53, 69, 70, 72, 117, 131, 321, 349, 376, 407, 469})
_CODE = re.compile(r"\bCode: (\d+)")


def refused_for_content(error: BaseException) -> bool:
    """Whether an insert failed because of the rows themselves (a client-side encoding error
    or a server's data error), not because of an outage (connection, timeout, overload)."""
    if isinstance(error, DataError | ValueError | TypeError | OverflowError):
        return True
    if isinstance(error, OperationalError) or not isinstance(error, DatabaseError):
        return False
    code = _CODE.search(str(error))
    return code is not None and int(code.group(1)) in CONTENT_ERROR_CODES


def raw_columns(rows: Sequence[RawRow], ingested_at_ms: int) -> pa.Table:
    """The insert as an Arrow table (times as epoch ms); a value out of its column's range
    raises ``ValueError`` (pyarrow's ArrowInvalid), as the store would refuse it."""
    events = [row.event for row in rows]
    columns: list[list[object]] = [
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
    return pa.Table.from_arrays(
        [pa.array(values, type=field.type) for values, field in zip(columns, SCHEMA, strict=True)],
        schema=SCHEMA,
    )


def deduplication_token(rows: Sequence[RawRow]) -> str:
    """The insert's ``insert_deduplication_token`` (pure): a digest of its rows' positions and
    event ids, in order. The same rows inserted again (a retry, a second store worker) are
    dropped by the store; any other insert has another token (the ids tell a reused position
    of a recreated topic apart)."""
    text = "".join([f"{position_text(row.position)}\x00{row.event.event_id}\x00" for row in rows])
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


class RawWriter:
    def __init__(self, client: Client) -> None:
        self._client = client

    def write(self, rows: Sequence[RawRow], stored_ms: int | None = None) -> None:
        """Insert ``rows`` stamped ``stored_ms`` (``ingested_at``; now by default), the time
        the dedup horizon counts from (``consumers.stored_ids``)."""
        if not rows:
            return
        started = time.perf_counter()
        stamp = int(time.time() * 1000) if stored_ms is None else stored_ms
        columns = raw_columns(rows, stamp)
        self._client.insert_arrow(TABLE, columns, settings={
            "insert_deduplication_token": deduplication_token(rows)})  # fmt: skip
        telemetry.CLICKHOUSE_INSERT.observe(time.perf_counter() - started)
        telemetry.CLICKHOUSE_ROWS.inc(len(rows))

    def write_storable(self, rows: Sequence[RawRow], stored_ms: int | None = None) -> list[RawRow]:
        """Insert ``rows``; if the store refuses them for what they contain, split the batch
        until the refused rows stand alone, insert the rest and return the refused ones.
        An outage raises, as ``write`` does."""
        try:
            self.write(rows, stored_ms)
            return []
        except Exception as error:
            if not refused_for_content(error):
                raise
            if len(rows) == 1:
                return list(rows)
        middle = len(rows) // 2
        return self.write_storable(rows[:middle], stored_ms) + self.write_storable(
            rows[middle:], stored_ms
        )

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

    def positions_of(self, events: Sequence[PipelineEvent], now_ms: int) -> dict[str, str]:
        """The position of the first stored copy of each of these events within the dedup
        horizon, in every hour, its raw row retained or not: copies older than the
        seen-markers are caught here, a conflicting one dated in another hour too
        (``consumers.stored_ids``)."""
        return stored_positions(self._client, [event.event_id for event in events], now_ms)

    def retained_positions_of(self, events: Sequence[PipelineEvent]) -> dict[str, str]:
        """The position of the first retained raw row of each of these events, if any."""
        if not events:
            return {}
        result = self._client.query(
            f"SELECT event_id, argMin((kafka_partition, kafka_offset, batch_index), ingested_at) "
            f"FROM {TABLE} WHERE event_id IN {{ids:Array(String)}} GROUP BY event_id",
            parameters={"ids": sorted({e.event_id for e in events})},
        )
        return {event_id: str(Position(*where)) for event_id, where in result.result_rows}
