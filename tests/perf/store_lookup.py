"""The store's lookup of old events (``RawWriter.positions_of``, by the stored ids' index):
its cost against the store's size and, for comparison, the raw table's lookup in the events'
own hours only; then the stored-ids filter (``consumers.stored_ids``) that decides which ids
are looked up: its first read of the ids, its memory, and its cost per id of a chunk.

    python -m tests.perf.store_lookup [--rows 6000000] [--ids 100]

Fills an embedded store of its own (a temporary folder) with ``--rows`` rows spread over
47 hours (each stored a second after it occurred) and 8 event types, then times the lookup
of ``--ids`` ids, half of them stored (the best of 5 runs of each form). A third form asks a
key-value copy of the ids (an ``EmbeddedRocksDB`` table keyed by event id, the cheapest
point lookup the engine has): what a lookup of every new event of a chunk would cost at the
least.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from typing import Any

import pyarrow as pa

from consumers.raw_writer import SCHEMA, TABLE, RawWriter
from consumers.stored_ids import StoredIds
from voicemon.event import PipelineEvent, validate_event
from voicemon.store import Client, connect
from voicemon.store_migrations import migrate
from voicemon.windows import MINUTE_MS

HOUR_MS = 3_600_000
TYPES = ["artifact_received", "artifact_completed", "artifact_failed", "stage_started",
         "stage_completed", "stage_failed", "t7", "t8"]  # fmt: skip
INSERT_ROWS = 200_000


def fill(client: Client, rows: int, now_ms: int, seed: int) -> None:
    rng = random.Random(seed)
    spacing = 47 * HOUR_MS // rows
    for start in range(0, rows, INSERT_ROWS):
        n = min(INSERT_ROWS, rows - start)
        columns: list[list[Any]] = [
            [f"e-{i:012d}-{rng.random():.6f}" for i in range(start, start + n)],
            [TYPES[i % len(TYPES)] for i in range(n)],
            [now_ms - 47 * HOUR_MS + (start + i) * spacing for i in range(n)],
            ["a"] * n, ["org"] * n, [None] * n, [None] * n, [None] * n, [None] * n, [1] * n,
            [0] * n, list(range(start, start + n)), [0] * n,
            [now_ms - 47 * HOUR_MS + (start + i) * spacing + 1_000 for i in range(n)],
        ]  # fmt: skip
        arrays = [pa.array(v, type=f.type) for v, f in zip(columns, SCHEMA, strict=True)]
        client.insert_arrow(TABLE, pa.Table.from_arrays(arrays, schema=SCHEMA))


def event(event_id: str, occurred_at_ms: int, now_ms: int) -> PipelineEvent:
    body = {"event_id": event_id, "event_type": "artifact_received",
            "occurred_at": occurred_at_ms, "artifact_id": "a"}  # fmt: skip
    found = validate_event(body, now_ms=now_ms, stages=frozenset())
    assert isinstance(found, PipelineEvent), found
    return found


def best_of(runs: int, lookup: Any) -> tuple[float, int]:
    best, found = float("inf"), 0
    for _ in range(runs):
        started = time.perf_counter()
        found = len(lookup())
        best = min(best, time.perf_counter() - started)
    return best, found


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.store_lookup")
    parser.add_argument("--rows", type=int, default=6_000_000)
    parser.add_argument("--ids", type=int, default=100)
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()
    now_ms = int(time.time() * 1000)
    with tempfile.TemporaryDirectory() as folder:
        client = connect(f"chdb://{folder}")
        migrate(client)
        started = time.perf_counter()
        fill(client, args.rows, now_ms, args.seed)
        print(f"{args.rows:,} rows written in {time.perf_counter() - started:.1f} s")
        stored = client.query(
            f"SELECT event_id, toUnixTimestamp64Milli(occurred_at) FROM {TABLE} "
            "ORDER BY rand() LIMIT {n:UInt32}", parameters={"n": args.ids // 2}
        ).result_rows  # fmt: skip
        events = [event(event_id, at, now_ms) for event_id, at in stored]
        events += [event(f"missing-{i}", now_ms - 3 * HOUR_MS, now_ms)
                   for i in range(args.ids - len(events))]  # fmt: skip
        writer = RawWriter(client)
        seconds, found = best_of(5, lambda: writer.positions_of(events, now_ms))
        print(f"the stored ids: {seconds * 1000:.1f} ms for {len(events)} ids ({found} found)")
        hours = sorted({e.occurred_at_ms // HOUR_MS * 3_600 for e in events})
        own_hours = (
            f"SELECT event_id FROM {TABLE} WHERE toStartOfHour(occurred_at) IN "
            "{hours:Array(DateTime('UTC'))} AND event_id IN {ids:Array(String)} GROUP BY event_id"
        )
        ids = [e.event_id for e in events]
        seconds, found = best_of(
            5, lambda: client.query(own_hours, parameters={"hours": hours, "ids": ids}).result_rows
        )
        print(f"the events' own hours only: {seconds * 1000:.1f} ms ({found} found)")
        client.command(
            "CREATE TABLE voicemon.event_keys (event_id String, kafka_partition UInt32, "
            "kafka_offset UInt64) ENGINE = EmbeddedRocksDB PRIMARY KEY event_id"
        )
        client.command(
            f"INSERT INTO voicemon.event_keys SELECT event_id, kafka_partition, kafka_offset "
            f"FROM {TABLE}"
        )
        by_key = "SELECT event_id FROM voicemon.event_keys WHERE event_id IN {ids:Array(String)}"
        seconds, found = best_of(
            5, lambda: client.query(by_key, parameters={"ids": ids}).result_rows
        )
        print(f"a key-value table of the ids: {seconds * 1000:.1f} ms ({found} found), "
              f"{seconds * 1e6 / len(ids):.1f} µs per id")  # fmt: skip
        filtered = StoredIds(client)
        started = time.perf_counter()
        filtered.refresh(now_ms + 2 * MINUTE_MS)
        print(f"the filter's first read: {time.perf_counter() - started:.1f} s, "
              f"{filtered.size_bytes / 1e6:.1f} MB for {args.rows:,} ids")  # fmt: skip
        chunk = [f"new-{i:06d}-{random.random():.6f}" for i in range(500)]
        seconds, found = best_of(50, lambda: [held for held in filtered.may_hold(chunk) if held])
        print(f"the filter, a chunk of 500 new ids: {seconds * 1e6 / 500:.2f} µs per id "
              f"({found} false positives)")  # fmt: skip


if __name__ == "__main__":
    main()
