"""The stored-ids feed against the real engine: the materialized view files every raw
insert's ids under the minute they were stored, and a worker's filter reads each minute once
``FEED_LAG_MS`` has passed since it ended, again within ``FEED_OVERLAP_MS``, and the last
``KEEP_MS`` on its first read."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from consumers.raw_writer import RawWriter
from consumers.rows import Position, RawRow
from consumers.stored_ids import (
    FEED_LAG_MS,
    FEED_OVERLAP_MS,
    KEEP_MS,
    READ_EVERY_MS,
    StoredIds,
    id_hashes,
    stored_positions,
)
from voicemon.event import EventType, PipelineEvent
from voicemon.store import Client
from voicemon.windows import MINUTE_MS

M = 1_900_000_000_000 // MINUTE_MS * MINUTE_MS  # the start of a minute


@pytest.fixture
def feed(clean_store: Client) -> Client:
    return clean_store


def store_at(client: Client, stored_ms: int, *event_ids: str) -> None:
    """Raw rows of ``event_ids`` written by a writer whose clock reads ``stored_ms``."""
    rows = [
        RawRow(
            PipelineEvent(event_id, EventType.ARTIFACT_RECEIVED, stored_ms, "art", "org"),
            Position(0, stored_ms // 1000 + i, 0),
        )
        for i, event_id in enumerate(event_ids)
    ]
    RawWriter(client).write(rows, stored_ms)


def held(stored: StoredIds, event_ids: Sequence[str]) -> list[bool]:
    return stored.may_hold(list(event_ids))


def test_the_store_hashes_ids_as_the_worker_does(feed: Client) -> None:
    ids = ["plain", "ünïcödé-✓", "tab\there", "x" * 128]
    store_at(feed, M, *ids)
    found = feed.query(
        "SELECT toUnixTimestamp64Milli(stored_at), xxHash64(event_id) "
        "FROM voicemon.stored_event_ids"
    )
    assert {stored for stored, _ in found.result_rows} == {M}
    assert sorted(h for _, h in found.result_rows) == sorted(id_hashes(ids).tolist())


def test_a_minute_is_read_once_the_lag_after_its_end_has_passed(feed: Client) -> None:
    store_at(feed, M + 30_000, "in-minute-m")
    stored = StoredIds(feed)
    stored.refresh(M + MINUTE_MS + FEED_LAG_MS - 1)  # minute M not read yet
    assert held(stored, ["in-minute-m"]) == [False]
    assert not stored.due(M + MINUTE_MS + FEED_LAG_MS - 1 + READ_EVERY_MS - 1)
    assert stored.due(M + MINUTE_MS + FEED_LAG_MS - 1 + READ_EVERY_MS)
    stored.refresh(M + MINUTE_MS + FEED_LAG_MS)
    assert held(stored, ["in-minute-m", "never-stored"]) == [True, False]


def test_an_insert_landing_late_is_read_within_the_overlap(feed: Client) -> None:
    stored = StoredIds(feed)
    now = M + 2 * FEED_OVERLAP_MS
    stored.refresh(now)  # read through now - lag: every minute before is read
    read_through = (now - FEED_LAG_MS) // MINUTE_MS * MINUTE_MS
    store_at(feed, read_through - FEED_OVERLAP_MS, "landed-late-in-reach")
    store_at(feed, read_through - FEED_OVERLAP_MS - 1, "landed-later-than-the-overlap")
    stored.refresh(now + READ_EVERY_MS)
    assert held(stored, ["landed-late-in-reach", "landed-later-than-the-overlap"]) == [
        True,
        False,
    ]


def test_the_first_read_reaches_back_keep_ms(feed: Client) -> None:
    now = M + KEEP_MS + 10 * MINUTE_MS
    store_at(feed, now - KEEP_MS, "at-the-edge")
    store_at(feed, now - KEEP_MS - MINUTE_MS, "a-minute-beyond")
    stored = StoredIds(feed)
    stored.refresh(now)
    assert held(stored, ["at-the-edge", "a-minute-beyond"]) == [True, False]


def test_a_copy_stored_within_the_horizon_is_found_after_its_raw_row_is_gone(
    feed: Client,
) -> None:
    """The lookup's edge: found at exactly ``KEEP_MS`` after the first copy was stored, not a
    millisecond later; the raw row's retention does not matter."""
    store_at(feed, M, "first-copy", "second-id")
    feed.command("TRUNCATE TABLE voicemon.pipeline_events")  # the rows' hours dropped
    position = str(Position(0, M // 1000, 0))
    assert stored_positions(feed, ["first-copy", "never"], M + KEEP_MS) == {"first-copy": position}
    assert stored_positions(feed, ["first-copy"], M + KEEP_MS + 1) == {}


def test_the_first_stored_copy_is_the_owner(feed: Client) -> None:
    store_at(feed, M + 5_000, "twice")  # inserted first, stamped later
    store_at(feed, M, "twice")
    owner = {"twice": str(Position(0, M // 1000, 0))}
    assert stored_positions(feed, ["twice"], M + 5_000) == owner
