"""The stored event ids: the dedup horizon, and which ids are worth a store lookup (CONTRACT §3.1).

A seen-marker lives 80 to 100 minutes; the raw row of its event lives 48 hours. A later copy
of the event, identical or conflicting, dated in any hour, must find the first one: at most
one raw row per ``event_id``. The materialized view ``voicemon.stored_event_ids_feed`` copies
every raw insert's ids and positions, by stored time, into ``voicemon.stored_event_ids``;
a later copy is a duplicate if a copy was stored within ``KEEP_MS`` (``stored_positions``).

Asking the store about every event would cost more than the whole ingest path
(``tests.perf.store_lookup``), so each worker that writes raw rows keeps Bloom filters of the
ids (their ``xxHash64``) stored within the horizon and asks the store only about the ids they
may hold. A filter has no false negatives, so the answer stays exact; a false positive costs
one store lookup. The filters are fed from the same table: each worker reads the minutes it
has not read yet, ``FEED_LAG_MS`` after they end, and again while they are under
``FEED_OVERLAP_MS`` old if their row count grew (an insert that landed late, a writer whose
clock is behind). An id is in every filter within about ``FEED_LAG_MS + READ_EVERY_MS +
1 min`` of its insert (8 minutes), long before its seen-marker is gone.

``IdFilter`` is the pure part: one Bloom filter per span of ``BLOCK_MS`` of stored time (more
when a span outgrows its first guess), dropped once the span is ``KEEP_MS`` old.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import xxhash

from consumers.rows import Position
from voicemon.event import FUTURE_TOLERANCE_MS, RAW_RETENTION_MS
from voicemon.store import Client
from voicemon.windows import HOUR_MS, MINUTE_MS

log = logging.getLogger("voicemon.ingest")

FEED = "voicemon.stored_event_ids"
FEED_LAG_MS = MINUTE_MS  # a stored minute is read once this long has passed since its end
# ... and read again, if its row count grew, until it is this old: an insert that lands late,
# or a writer whose clock is behind the reader's, by up to this much (less the lag).
FEED_OVERLAP_MS = 60 * MINUTE_MS
READ_EVERY_MS = 5 * MINUTE_MS
# The dedup horizon: a later copy is a duplicate if a copy was stored this long before it at
# most. A raw row lives until its occurred_at (at most FUTURE_TOLERANCE_MS after it was
# stored) is 48 h old, and its hour's part is dropped whole, so the horizon covers every
# retained row, and a copy never counts anew because its first one's row was dropped.
KEEP_MS = RAW_RETENTION_MS + FUTURE_TOLERANCE_MS + HOUR_MS
BLOCK_MS = 8 * HOUR_MS
# A blocked Bloom filter: an id sets BITS_PER_WORD bits in each of two 64-bit words, so that
# adding or asking about an id is two word operations, not one per bit. At BITS_PER_ID bits a
# filter holds its capacity with about 1.5 false positives in 100,000 ids.
BITS_PER_ID = 32
BITS_PER_WORD = 8
MIN_CAPACITY = 1 << 16  # ids a span's first filter is sized for, at the least
ADD_SLICE = 1 << 20  # ids added at a time

Hashes = npt.NDArray[np.uint64]
_SPLITMIX = (
    np.uint64(0x9E3779B97F4A7C15),
    np.uint64(0xBF58476D1CE4E5B9),
    np.uint64(0x94D049BB133111EB),
)


def id_hashes(event_ids: Sequence[str]) -> Hashes:
    """The ids' 64-bit hashes, as the store's ``xxHash64(event_id)`` computes them."""
    digest = xxhash.xxh64_intdigest
    return np.fromiter(
        (digest(event_id.encode("utf-8", "surrogatepass")) for event_id in event_ids),
        dtype=np.uint64,
        count=len(event_ids),
    )


def _mixed(values: Hashes) -> Hashes:
    """SplitMix64's step: 64 fresh bits from each value (pure, vectorized)."""
    add, first, second = _SPLITMIX
    with np.errstate(over="ignore"):
        z = values + add
        z = (z ^ (z >> np.uint64(30))) * first
        z = (z ^ (z >> np.uint64(27))) * second
    return z ^ (z >> np.uint64(31))


def _mask(bits: Hashes) -> Hashes:
    """A word with BITS_PER_WORD bits set, chosen by 6 bits each of ``bits``."""
    mask = np.zeros(len(bits), dtype=np.uint64)
    one, six = np.uint64(1), np.uint64(6)
    for i in range(BITS_PER_WORD):
        mask |= one << ((bits >> (six * np.uint64(i))) & np.uint64(63))
    return mask


@dataclass(frozen=True, slots=True)
class _Probe:
    """What a filter of any size needs of some hashes: two word choices, and each word's
    bits (computed once, asked of every filter)."""

    first: Hashes
    first_mask: Hashes
    second: Hashes
    second_mask: Hashes

    @classmethod
    def of(cls, hashes: Hashes) -> _Probe:
        second = _mixed(hashes)
        third = _mixed(second)
        return cls(hashes, _mask(second), third, _mask(_mixed(third)))


@dataclass(slots=True)
class _Block:
    """One filter: the ids stored in the span starting at ``span_ms``."""

    span_ms: int
    capacity: int
    words: Hashes
    held: int = 0

    @classmethod
    def sized(cls, span_ms: int, capacity: int) -> _Block:
        words = 1 << max(0, (capacity * BITS_PER_ID // 64 - 1).bit_length())
        return cls(span_ms, capacity, np.zeros(words, dtype=np.uint64))

    def add(self, probe: _Probe) -> None:
        last = np.uint64(len(self.words) - 1)
        np.bitwise_or.at(self.words, probe.first & last, probe.first_mask)
        np.bitwise_or.at(self.words, probe.second & last, probe.second_mask)
        self.held += len(probe.first)

    def may_hold(self, probe: _Probe) -> npt.NDArray[np.bool_]:
        last = np.uint64(len(self.words) - 1)
        first = self.words[probe.first & last] & probe.first_mask
        second = self.words[probe.second & last] & probe.second_mask
        found: npt.NDArray[np.bool_] = (first == probe.first_mask) & (second == probe.second_mask)
        return found


class IdFilter:
    """Bloom filters of id hashes by the span of time they were stored in (pure)."""

    def __init__(self) -> None:
        self._blocks: list[_Block] = []

    def add(self, stored_ms: npt.NDArray[np.int64], hashes: Hashes) -> None:
        """Add ids stored at ``stored_ms`` (epoch ms, one per hash)."""
        spans = stored_ms // BLOCK_MS * BLOCK_MS
        for span in np.unique(spans).tolist():
            self._add_to_span(int(span), hashes[spans == span])

    def _add_to_span(self, span_ms: int, hashes: Hashes) -> None:
        blocks = [block for block in self._blocks if block.span_ms == span_ms]
        block = blocks[-1] if blocks else None
        if block is None or block.held + len(hashes) > block.capacity:
            # A span outgrowing its filter gets a larger one beside it: the false positive
            # rate stays bounded at any event rate, and a guess made at a slow hour costs
            # a few more filters to ask, not wrong answers.
            busiest = max((b.held for b in self._blocks), default=0)
            outgrown = 2 * block.capacity if block is not None else 0
            capacity = max(MIN_CAPACITY, len(hashes) * 5 // 4, busiest, outgrown)
            block = _Block.sized(span_ms, capacity)
            self._blocks.append(block)
        for start in range(0, len(hashes), ADD_SLICE):  # bounded scratch memory
            block.add(_Probe.of(hashes[start : start + ADD_SLICE]))

    def may_hold(self, hashes: Hashes) -> npt.NDArray[np.bool_]:
        """Whether each id may have been added (no false negatives)."""
        found = np.zeros(len(hashes), dtype=np.bool_)
        if self._blocks:
            probe = _Probe.of(hashes)
            for block in self._blocks:
                found |= block.may_hold(probe)
        return found

    def forget_before(self, ms: int) -> None:
        """Drop the filters of spans that ended before ``ms``."""
        self._blocks = [block for block in self._blocks if block.span_ms + BLOCK_MS > ms]

    @property
    def empty(self) -> bool:
        return not self._blocks

    @property
    def size_bytes(self) -> int:
        return sum(block.words.nbytes for block in self._blocks)


class StoredIds:
    """The ids the store may hold, read from its feed. ``may_hold`` is exact on the negative
    side only while the feed is read: ``refresh`` when ``due``. Blocking (store I/O): the
    worker calls ``refresh`` in a thread."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._filter = IdFilter()
        self._read_through: int | None = None  # every minute before this was read
        self._rows_read: dict[int, int] = {}  # rows read of each minute still re-read
        self._next_read_ms = -(2**62)

    def due(self, now_ms: int) -> bool:
        return now_ms >= self._next_read_ms

    def refresh(self, now_ms: int) -> None:
        """Read the stored minutes not read yet (all of the last ``KEEP_MS`` the first time),
        and those within ``FEED_OVERLAP_MS`` whose row count grew since, an hour at a time;
        drop what aged out."""
        through = (now_ms - FEED_LAG_MS) // MINUTE_MS * MINUTE_MS
        first = self._read_through is None
        start = (
            now_ms - KEEP_MS if first else min(self._read_through or 0, through) - FEED_OVERLAP_MS
        )
        started = time.perf_counter()
        counted = self._client.query(
            f"SELECT {_MINUTE}, count() FROM {FEED} WHERE {_BETWEEN} GROUP BY stored_ms",
            parameters={"start": start, "through": through},
        ).result_rows
        grown = [(minute, rows) for minute, rows in counted if self._rows_read.get(minute) != rows]
        for hour in sorted({minute // HOUR_MS for minute, _ in grown}):  # bounded memory
            minutes = [minute for minute, _ in grown if minute // HOUR_MS == hour]
            read = self._client.query_arrow(
                f"SELECT {_MINUTE}, xxHash64(event_id) AS id_hash FROM {FEED} "
                f"WHERE {_BETWEEN} AND stored_ms IN {{grown:Array(Int64)}}",
                parameters={"start": min(minutes), "through": max(minutes) + MINUTE_MS,
                            "grown": minutes},
            )  # fmt: skip
            self._filter.add(
                read.column("stored_ms").to_numpy().astype(np.int64),
                read.column("id_hash").to_numpy().astype(np.uint64),
            )
        self._filter.forget_before(now_ms - KEEP_MS)
        reread_from = through - FEED_OVERLAP_MS
        self._rows_read = {m: n for m, n in {**self._rows_read, **dict(grown)}.items()
                           if m >= reread_from}  # fmt: skip
        if first:
            log.info(
                "stored event ids read: %d ids of the last %d h in %.1f s, %.1f MB of filters",
                sum(rows for _, rows in grown), KEEP_MS // HOUR_MS,
                time.perf_counter() - started, self._filter.size_bytes / 1e6,
            )  # fmt: skip
        self._read_through = max(through, self._read_through or through)
        self._next_read_ms = now_ms + READ_EVERY_MS

    @property
    def size_bytes(self) -> int:
        return self._filter.size_bytes

    def may_hold(self, event_ids: Sequence[str]) -> list[bool]:
        """Whether the store may hold a row of each id (False: it surely holds none that
        was stored more than ``FEED_LAG_MS + READ_EVERY_MS`` before the last ``refresh``)."""
        if not event_ids or self._filter.empty:
            return [False] * len(event_ids)
        found: list[bool] = self._filter.may_hold(id_hashes(event_ids)).tolist()
        return found


_MINUTE = "toInt64(toUnixTimestamp(toStartOfMinute(stored_at))) * 1000 AS stored_ms"
_BETWEEN = (
    "stored_at >= fromUnixTimestamp64Milli({start:Int64}, 'UTC') "
    "AND stored_at < fromUnixTimestamp64Milli({through:Int64}, 'UTC')"
)


def stored_positions(client: Client, event_ids: Sequence[str], now_ms: int) -> dict[str, str]:
    """The position of the first copy of each of these events stored within the dedup
    horizon (``KEEP_MS`` before ``now_ms``), whether or not its raw row is still retained.
    The table's key (ten minutes of stored time, event id) makes it a lookup: 100 ids of 6M
    stored rows in tens of ms on the embedded engine (``tests.perf.store_lookup``)."""
    if not event_ids:
        return {}
    result = client.query(
        f"SELECT event_id, argMin((kafka_partition, kafka_offset, batch_index), stored_at) "
        f"FROM {FEED} WHERE event_id IN {{ids:Array(String)}} "
        "AND stored_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC') GROUP BY event_id",
        parameters={"ids": sorted(set(event_ids)), "since": now_ms - KEEP_MS},
    )
    return {event_id: str(Position(*where)) for event_id, where in result.result_rows}
