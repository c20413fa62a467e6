"""Raw inserts are idempotent by construction: the same rows inserted again (a retry, a
second store worker writing the same chunk) leave one copy, on the real embedded engine."""

from __future__ import annotations

import time

from consumers.raw_writer import RawWriter, deduplication_token
from consumers.rows import Position, RawRow
from voicemon.event import EventType, PipelineEvent
from voicemon.store import Client


def rows(ids: list[str], partition: int = 0, first_offset: int = 0) -> list[RawRow]:
    at = int(time.time() * 1000) - 60_000
    return [
        RawRow(PipelineEvent(event_id, EventType.ARTIFACT_RECEIVED, at, "a", "org"),
               Position(partition, first_offset + i, 0))
        for i, event_id in enumerate(ids)
    ]  # fmt: skip


def stored(store: Client) -> list[tuple[str, int]]:
    result = store.query(
        "SELECT event_id, kafka_offset FROM voicemon.pipeline_events ORDER BY event_id"
    )
    return [(event_id, offset) for event_id, offset in result.result_rows]


def test_the_same_rows_inserted_again_leave_one_copy(clean_store: Client) -> None:
    writer = RawWriter(clean_store)
    chunk = rows(["a", "b", "c"])
    writer.write(chunk)
    writer.write(chunk)  # a retry after an insert whose answer was lost
    RawWriter(clean_store).write(list(chunk))  # a second store worker, the same chunk
    assert stored(clean_store) == [("a", 0), ("b", 1), ("c", 2)]


def test_other_rows_are_inserted_however_alike(clean_store: Client) -> None:
    writer = RawWriter(clean_store)
    writer.write(rows(["a", "b"]))
    writer.write(rows(["a"]))  # a part of the chunk: another insert (a copy, kept)
    writer.write(rows(["x", "y"]))  # the same positions, other events (a recreated topic)
    writer.write(rows(["a", "b"], partition=1))
    assert len(stored(clean_store)) == 7


def test_the_token_is_the_rows_positions_and_ids_in_order() -> None:
    one = rows(["a", "b"])
    assert deduplication_token(one) == deduplication_token(rows(["a", "b"]))
    assert deduplication_token(one) != deduplication_token(list(reversed(one)))
    assert deduplication_token(one) != deduplication_token(rows(["a", "c"]))
    assert deduplication_token(one) != deduplication_token(rows(["a", "b"], first_offset=1))
    assert len({deduplication_token(rows([f"e{i}"])) for i in range(1000)}) == 1000
