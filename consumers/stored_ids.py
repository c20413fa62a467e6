"""Which event ids the store may hold from before the seen-markers' reach (CONTRACT §3.1).

A seen-marker lives 80 to 100 minutes; the raw row of its event lives 48 hours. A later copy
of the event, identical or conflicting, dated in any hour, must find that row: at most one
raw row per ``event_id`` while it is retained. Asking the store about every event would cost
more than the whole ingest path (``tests.perf.store_lookup``), so each worker that writes
raw rows keeps Bloom filters of the ids stored in the last 49 hours and asks the store only
about the ids they may hold. A filter has no false negatives, so the answer stays exact; a
false positive costs one store lookup.

Every worker's ids reach every filter through the store itself: the materialized view
``voicemon.stored_event_ids_feed`` copies each raw insert's ids (as ``xxHash64``) with the
minute they were stored (``ingested_at``), and each worker reads the minutes it has not read
yet, ``FEED_LAG_MS`` after they end, and again until they are ``FEED_OVERLAP_MS`` older, so
an insert that took that long to land is still read. An id is in every filter within about
``FEED_LAG_MS + READ_EVERY_MS + 1 min`` of its insert (8 minutes), long before its
seen-marker is gone.

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

from voicemon.event import FUTURE_TOLERANCE_MS, RAW_RETENTION_MS
from voicemon.store import Client

log = logging.getLogger("voicemon.ingest")

FEED = "voicemon.stored_event_ids"
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
FEED_LAG_MS = MINUTE_MS  # a stored minute is read once this long has passed since its end
FEED_OVERLAP_MS = 15 * MINUTE_MS  # ... and read again until it is this old
READ_EVERY_MS = 5 * MINUTE_MS
# A raw row lives until its occurred_at (at most FUTURE_TOLERANCE_MS after it was stored) is
# 48 h old, and its hour's part is dropped whole: ids are kept this long after being stored.
KEEP_MS = RAW_RETENTION_MS + FUTURE_TOLERANCE_MS + HOUR_MS
BLOCK_MS = 8 * HOUR_MS
BITS_PER_ID = 24  # with HASHES bit positions an id: about 1 false positive in 100,000 ids
HASHES = 16
MIN_CAPACITY = 1 << 16  # ids a span's first filter is sized for, at the least

Hashes = npt.NDArray[np.uint64]


def id_hashes(event_ids: Sequence[str]) -> Hashes:
    """The ids' 64-bit hashes, as the store's ``xxHash64(event_id)`` computes them."""
    digest = xxhash.xxh64_intdigest
    return np.fromiter(
        (digest(event_id.encode("utf-8", "surrogatepass")) for event_id in event_ids),
        dtype=np.uint64,
        count=len(event_ids),
    )


def _positions(hashes: Hashes, mask: int) -> npt.NDArray[np.uint64]:
    """Each hash's HASHES bit positions (rows), by double hashing on the 64-bit hash."""
    step = (hashes >> np.uint64(32)) | (hashes << np.uint64(32)) | np.uint64(1)
    rounds = np.arange(HASHES, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return (hashes[:, None] + rounds[None, :] * step[:, None]) & np.uint64(mask)


@dataclass(slots=True)
class _Block:
    """One Bloom filter: the ids stored in the span starting at ``span_ms``."""

    span_ms: int
    capacity: int
    words: npt.NDArray[np.uint64]
    held: int = 0

    @classmethod
    def sized(cls, span_ms: int, capacity: int) -> _Block:
        bits = 1 << max(6, (capacity * BITS_PER_ID - 1).bit_length())
        return cls(span_ms, capacity, np.zeros(bits // 64, dtype=np.uint64))

    @property
    def mask(self) -> int:
        return len(self.words) * 64 - 1

    def add(self, hashes: Hashes) -> None:
        positions = _positions(hashes, self.mask).ravel()
        np.bitwise_or.at(
            self.words, positions >> np.uint64(6), np.uint64(1) << (positions & np.uint64(63))
        )
        self.held += len(hashes)

    def may_hold(self, hashes: Hashes) -> npt.NDArray[np.bool_]:
        positions = _positions(hashes, self.mask)
        bits = (self.words[positions >> np.uint64(6)] >> (positions & np.uint64(63))) & np.uint64(1)
        result: npt.NDArray[np.bool_] = bits.all(axis=1)
        return result


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
            before = max((b.held for b in self._blocks), default=0)
            capacity = max(
                MIN_CAPACITY, 2 * len(hashes), before, 2 * (block.capacity if block else 0)
            )
            block = _Block.sized(span_ms, capacity)
            self._blocks.append(block)
        block.add(hashes)

    def may_hold(self, hashes: Hashes) -> npt.NDArray[np.bool_]:
        """Whether each id may have been added (no false negatives)."""
        found = np.zeros(len(hashes), dtype=np.bool_)
        for block in self._blocks:
            found |= block.may_hold(hashes)
        return found

    def forget_before(self, ms: int) -> None:
        """Drop the filters of spans that ended before ``ms``."""
        self._blocks = [block for block in self._blocks if block.span_ms + BLOCK_MS > ms]

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
        self._next_read_ms = -(2**62)

    def due(self, now_ms: int) -> bool:
        return now_ms >= self._next_read_ms

    def refresh(self, now_ms: int) -> None:
        """Read the stored minutes not read yet (all of the last ``KEEP_MS`` the first time),
        and those within ``FEED_OVERLAP_MS`` again; drop what has aged out."""
        through = (now_ms - FEED_LAG_MS) // MINUTE_MS * MINUTE_MS
        if self._read_through is None:
            start = now_ms - KEEP_MS
        else:
            start = min(self._read_through, through) - FEED_OVERLAP_MS
        started = time.perf_counter()
        read = self._client.query_arrow(
            f"SELECT toInt64(toUnixTimestamp(stored_minute)) * 1000 AS stored_ms, id_hash "
            f"FROM {FEED} WHERE stored_minute >= toDateTime(intDiv({{start:Int64}}, 1000)) "
            "AND stored_minute < toDateTime(intDiv({through:Int64}, 1000))",
            parameters={"start": start, "through": through},
        )
        if read.num_rows:
            self._filter.add(
                read.column("stored_ms").to_numpy().astype(np.int64),
                read.column("id_hash").to_numpy().astype(np.uint64),
            )
        self._filter.forget_before(now_ms - KEEP_MS)
        if self._read_through is None:
            log.info(
                "stored event ids read: %d ids of the last %d h in %.1f s, %.1f MB of filters",
                read.num_rows, KEEP_MS // HOUR_MS, time.perf_counter() - started,
                self._filter.size_bytes / 1e6,
            )  # fmt: skip
        self._read_through = max(through, self._read_through or through)
        self._next_read_ms = now_ms + READ_EVERY_MS

    def may_hold(self, event_ids: Sequence[str]) -> list[bool]:
        """Whether the store may hold a row of each id (False: it surely holds none that
        was stored more than ``FEED_LAG_MS + READ_EVERY_MS`` before the last ``refresh``)."""
        if not event_ids:
            return []
        found: list[bool] = self._filter.may_hold(id_hashes(event_ids)).tolist()
        return found
