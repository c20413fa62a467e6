"""One consumed batch made durable, exactly once (CONTRACT §3.1).

Order of effects, each idempotent under replay of the same Kafka messages:

0. a worker that writes raw rows takes the store leases of the batch's partitions
   (``consumers.store_leases``): after a handover, the new owner waits for the old one's store;
1. decode every message (pure, ``consumers.decode``) with the record's time as "now"; events
   too late by the worker's clock or a create time, or accepted by the clock where a create
   time was not trusted, keep the first decision made about their position (CONTRACT §3.2:
   its marker, row or DLQ letter);
2. each rejection is published to the DLQ exactly once (``consumers.publish_once``);
3. Redis scripts mark the new event ids seen (with the position that counted them), one
   call per shard group, then add the counter increments of every event the batch's
   positions own, once per counter scope (``consumers.rolling_counters``); events beyond
   the markers' reach are looked up in the store first;
4. raw rows go to ClickHouse in one columnar insert: the new events, plus events whose
   seen-marker holds their own position (counted before a crash) but that have no row yet;
   then the leases are given back, and the store's progress (watermarks, closed hours that
   got rows) is told to the window closer (``consumers.store_progress``);
5. with VOICEMON_REDIS_WAIT_REPLICAS, the batch's Redis writes are waited for on replicas
   (after step 3 too, before the next chunk is counted or, for a store-only worker, before
   rows are written on the markers it followed)
   (``voicemon.redis_client.Replication``; not replicated in time: the batch is retried);
6. only then does the caller ack the messages, so Kafka offsets follow durable writes.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass

from consumers.batch import (
    TOO_LATE_NOW,
    UNSTORABLE,
    BatchOutcome,
    Classified,
    Message,
    beyond_markers,
    classify,
    letter_from,
    letter_of,
    written_windows,
)
from consumers.decode import AcceptedEvent, batch_elements, decode_message
from consumers.letters import DeadLetter, Source
from consumers.publish_once import OncePublisher
from consumers.raw_writer import RawWriter
from consumers.rolling_counters import MARKED_NOW, DecidedMark, RollingCounters, Span
from consumers.rows import Position, RawRow, position_text
from consumers.store_leases import StoreLeases
from consumers.store_progress import StoreProgress
from consumers.stored_ids import StoredIds
from voicemon import rolling, telemetry
from voicemon.event import (
    FUTURE_TOLERANCE_MS,
    RAW_RETENTION_MS,
    EventType,
    PipelineEvent,
    decision_time_ms,
    late_rule_time_ms,
)
from voicemon.redis_client import Primaries, Replication

FOLLOW_POLL_S = 0.2
FOLLOW_DEADLINE_S = 30.0  # a store-only worker waits this long for the counters' markers
# A store-only worker's clock may differ from its counting workers' by this much: it judges
# time with this to spare, and leaves the events at the edges to them.
ROLE_CLOCK_SLACK_MS = 10 * 60_000
NO_LATE_RULE_MS = -(2**62)  # a "now" of the too-late rule that finds no event too late


@dataclass(frozen=True, slots=True)
class Counted:
    """A batch counted but not yet stored."""

    messages: Sequence[Message]
    classified: Classified
    rejected: int
    now_ms: int
    hold: tuple[int, ...] = ()  # the store leases held for it (``consumers.store_leases``)
    primaries: Primaries = ()  # the Redis primaries it was counted on (``Replication``)


class Ingest:
    """One batch made durable. ``counts``: this worker counts (DLQ, dedup, rolling counters);
    ``raw_writer`` set: it writes raw rows. A worker of role ``all`` does both; role
    ``counters`` only counts; role ``store`` only writes, following the counters. A worker
    that writes takes ``leases`` on a chunk's partitions from counting to storing."""

    def __init__(
        self,
        counters: RollingCounters,
        progress: StoreProgress,
        stages: Sequence[str],
        *,
        dead_letters: OncePublisher,
        raw_writer: RawWriter | None,
        stored_ids: StoredIds | None = None,
        counts: bool = True,
        leases: StoreLeases | None = None,
        replication: Replication | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._counters = counters
        self._progress = progress
        self._stages = frozenset(stages)
        self._dead_letters = dead_letters
        self._raw_writer = raw_writer
        self._stored_ids = stored_ids if raw_writer is not None else None
        self._counts = counts
        self._leases = leases if raw_writer is not None else None
        self._replication = replication
        self._clock = clock
        # A store-only worker's rows decided by the store alone, until their insert ends: the
        # next chunk, counted meanwhile, finds them here (event id -> position).
        self._deciding: dict[str, str] = {}
        # Duplicates of a count whose counter call failed: it may have moved the decided marks
        # past them before it failed, so this process's retry counts them if the mark it finds
        # is still this process's (``_decided_here``).
        self._uncounted: set[Position] = set()

    async def process(self, messages: Sequence[Message]) -> BatchOutcome:
        """Make one batch durable: count it, then store it."""
        return await self.store(await self.count(messages))

    async def count(self, messages: Sequence[Message]) -> Counted:
        """Steps 1-3: decode, rejections to the DLQ, count once (or, for a store-only worker,
        learn what the counting workers counted). Retrying it is safe."""
        if self._leases is None:
            return await self._count(messages, ())
        hold = await self._leases.take(message.partition for message in messages)
        try:
            return await self._count(messages, hold)
        except BaseException:
            await self._leases.give_back(hold)
            raise

    async def _count(self, messages: Sequence[Message], hold: tuple[int, ...]) -> Counted:
        primaries = await self._replication.primaries() if self._replication else ()
        now_ms = int(self._clock() * 1000)
        rows, letters, late, unsure, edge = self._decode(messages, now_ms)
        kept, late_letters = await self._decided_before(late, messages, now_ms)
        letters += late_letters
        replayed = await self._replayed(letters, unsure, messages)
        accepted = await self._not_rejected_before(unsure, messages, replayed, now_ms)
        if kept or accepted:  # in the messages' order: the first copy in a batch wins
            rows = _in_message_order(rows + kept + accepted, messages)
        rejected = len(letters) + len(unsure) - len(accepted)
        if self._counts:
            await self._dead_letters.publish_once(
                letters, self._replicated(primaries), replayed=replayed
            )
            classified = await self._count_once(rows, now_ms, messages)
        else:
            classified = await self._follow_counters(rows, now_ms, edge, messages)
        if self._replication is not None:
            # Counting: replicated before the next chunk is counted, or a failover could lose
            # this chunk's count after the next one moved the applied offsets on the new
            # primary. Following: the markers followed are on the replicas before rows are
            # written on them, or a failover could lose them and let a copy elsewhere be
            # counted, and stored, as the event.
            try:
                await self._replication.confirm(primaries)
            except BaseException:
                self._decided_stored(classified.new)  # not in flight: the retry decides anew
                raise
        return Counted(messages, classified, rejected, now_ms, hold, primaries)

    async def store(self, counted: Counted) -> BatchOutcome:
        """Step 4: the raw rows. If it fails, retry the batch with ``process``: its events
        are then replayed ones, and only the rows the store lacks are written."""
        classified = counted.classified
        recovered: list[RawRow] = []
        refused: list[RawRow] = []
        if self._raw_writer is not None:
            recovered, refused = await self._store(self._raw_writer, counted)
            await self._take_back(refused, counted)
        if self._replication is not None:  # raises if not replicated: the batch is retried
            await self._replication.confirm(counted.primaries)
        return BatchOutcome(len(classified.new), len(recovered), len(classified.duplicates),
                            counted.rejected, len(refused))  # fmt: skip

    async def _store(
        self, raw_writer: RawWriter, counted: Counted
    ) -> tuple[list[RawRow], list[RawRow]]:
        """Write the new rows and the replayed ones the store lacks, under the chunk's
        leases; raise the watermarks. Returns the replayed rows that were missing, and the
        rows the store refused."""
        classified, leases, hold = counted.classified, self._leases, counted.hold
        new, replayed = classified.new, classified.replayed
        insert: asyncio.Future[list[RawRow]] | None = None
        decided = functools.partial(self._decided_stored, classified.new)
        try:
            if leases is not None and not await leases.still_held(hold):
                new, replayed = [], new + replayed  # another worker may have written them
            missing = await asyncio.to_thread(_missing_rows, raw_writer, replayed)
            written = new + missing
            stored_ms = int(self._clock() * 1000)
            insert = asyncio.ensure_future(
                asyncio.to_thread(raw_writer.write_storable, written, stored_ms)
            )
            insert.add_done_callback(decided)
            refused = await asyncio.shield(insert)
        except asyncio.CancelledError:
            if leases is not None and insert is not None and not insert.done():
                leases.give_back_after(insert, hold)  # the insert goes on in its thread
                leases = None
            raise
        finally:
            if insert is None:
                decided()
            if leases is not None:
                await leases.give_back(hold)
        stored = [row for row in written if row not in refused] if refused else written
        present = [row for row in replayed if row not in missing]  # stored before a crash
        windows = written_windows(stored + present)  # their hours too, if the crash came first
        late = await self._progress.record_written(*windows, counted.now_ms)
        telemetry.EVENTS_LATE.inc(late)
        return missing, refused

    def _decided_stored(self, rows: Sequence[RawRow], *_: object) -> None:
        """Rows decided alone are in the store now (or their insert or their chunk failed,
        and the retry decides them again): the store answers for them from here on."""
        if not self._deciding:  # not a store-only worker, or none decided alone
            return
        for row in rows:
            if self._deciding.get(row.event.event_id) == str(row.position):
                del self._deciding[row.event.event_id]

    def _replicated(self, primaries: Primaries) -> Callable[[], Awaitable[None]] | None:
        """What ``publish_once`` awaits before a send: the claims on the replicas."""
        if self._replication is None:
            return None
        return functools.partial(self._replication.confirm, primaries)

    async def _take_back(self, refused: Sequence[RawRow], counted: Counted) -> None:
        """Rows the store refused for what they contain (a safety net: the validator's ranges
        are the store's) go to the DLQ as ``unstorable``, and what they counted is taken
        back, each once (``RollingCounters.settle``)."""
        if not refused:
            return
        found, now_ms = _by_position(counted.messages), counted.now_ms
        letters = [letter_of(row, _message_of(row, found), UNSTORABLE) for row in refused]
        await self._dead_letters.publish_once(
            letters, self._replicated(counted.primaries), step="store"
        )
        for row in refused:
            decrements = rolling.negated(rolling.increments([row.event], now_ms))
            await self._counters.settle(row.event.event_id, str(row.position), decrements, now_ms)

    async def _follow_counters(
        self, rows: list[RawRow], now_ms: int, edge: set[Position], messages: Sequence[Message]
    ) -> Classified:
        """For a store-only worker: keep the events the counting workers counted at their own
        position. An event's owner is the store's for an event beyond the markers' reach (a
        counting worker without a store may have marked an old copy anew), else its
        seen-marker's. An event with neither is waited for: the counting workers mark every
        event they count, old ones too, unless they rejected it (its DLQ marker). An event
        within the markers' reach is waited for as long as it is (the counting workers are
        behind: deciding it alone could disagree with the copy they count first); one beyond
        it, after FOLLOW_DEADLINE_S, is decided by the store and this worker's rows still in
        flight, unless it lies at an ``edge`` of the time rules, which only the counting
        workers decide."""
        deadline = time.monotonic() + FOLLOW_DEADLINE_S
        stored = await self._owners_of_old(rows, now_ms)
        found = _by_position(messages)
        alone: set[str] = set()  # event ids decided by the store alone: no owner, new
        while True:
            now = max(now_ms, int(self._clock() * 1000))  # the wait may outlast a generation
            marked = await self._counters.owners([row.event.event_id for row in rows], now)
            owners = [s if s is not None else m for s, m in zip(stored, marked, strict=True)]
            waiting = [i for i, owner in enumerate(owners)
                       if owner is None and rows[i].event.event_id not in alone]  # fmt: skip
            if waiting:
                sources = {i: _source(rows[i], _message_of(rows[i], found)) for i in waiting}
                rejected = await self._dead_letters.rejected_before(list(sources.values()))
                dropped = {i for i, source in sources.items() if source in rejected}
                if dropped:
                    keep = [i for i in range(len(rows)) if i not in dropped]
                    rows, stored = [rows[i] for i in keep], [stored[i] for i in keep]
                    continue
            old = [rows[i] for i in waiting if beyond_markers(rows[i], now)]
            if old and time.monotonic() > deadline:
                late = await self._stored_owners(old, now)
                for row in old:
                    owner = late.get(row.event.event_id) or self._deciding.get(row.event.event_id)
                    if owner is not None:
                        stored[rows.index(row)] = owner
                    elif row.position not in edge:
                        alone.add(row.event.event_id)
                    else:  # at an edge of the time rules: the counting workers' to decide
                        at = rows.index(row)
                        rows, stored = rows[:at] + rows[at + 1 :], stored[:at] + stored[at + 1 :]
                continue
            if not waiting:
                classified = classify(rows, owners)
                for row in classified.new:  # in flight until stored (``_store``)
                    self._deciding[row.event.event_id] = str(row.position)
                return classified
            await asyncio.sleep(FOLLOW_POLL_S)

    async def _decided_before(
        self, late: Sequence[RawRow], messages: Sequence[Message], now_ms: int
    ) -> tuple[list[RawRow], list[DeadLetter]]:
        """Events too late by the worker's clock, or by a create time, but not by a log-append
        time (CONTRACT §3.2): rejected as ``too_late`` on their first reading. A replay keeps
        the decision made while they were in time: its own position counted the event (its
        marker or row); or a counting worker decided the position
        (``RollingCounters.decided_through``) and a copy was counted (a duplicate); or, for a
        log-append record, the position was not rejected then (accepted, its marker and row
        gone since: it can add nothing now, its row would be past the retention). A
        store-only worker, which decides nothing, follows any copy."""
        if not late:
            return [], []
        marked = await self._counters.owners([row.event.event_id for row in late], now_ms)
        # The rows still retained, not every copy stored within the horizon: a position
        # whose row the TTL dropped has nothing left to keep (below), and must not be
        # written again as a replay's missing row.
        stored = await self._retained_owners(late)
        marks: dict[int, DecidedMark] | None = None
        if self._counts:
            marks = await self._counters.decided_through(
                sorted({row.position.partition for row in late})
            )
        kept: list[RawRow] = []
        letters: list[DeadLetter] = []
        gone: list[RawRow] = []  # decided, accepted unless rejected before
        found = _by_position(messages)
        for row, marker in zip(late, marked, strict=True):
            owner = marker or stored.get(row.event.event_id)
            position = row.position
            decided = marks is None or _decided(marks.get(position.partition), position, found)
            if owner == str(position) or (owner and decided):
                kept.append(row)
            elif decided and marks is not None and _message_of(row, found).log_append:
                gone.append(row)  # a create-time topic may have been recreated: a letter
            else:
                letters.append(letter_of(row, _message_of(row, found), TOO_LATE_NOW))
        if gone:
            sources = [_source(row, _message_of(row, found)) for row in gone]
            rejected = await self._dead_letters.rejected_before(sources)
            letters += [letter_of(row, _message_of(row, found), TOO_LATE_NOW)
                        for row, source in zip(gone, sources, strict=True)
                        if source in rejected]  # fmt: skip
        return kept, letters

    async def _may_be_stored(self, rows: Sequence[RawRow], now_ms: int) -> list[bool]:
        """Whether the store may hold each row's event id (``consumers.stored_ids``)."""
        stored_ids = self._stored_ids
        if stored_ids is None or not rows:
            return [False] * len(rows)
        if stored_ids.due(now_ms):
            await asyncio.to_thread(stored_ids.refresh, now_ms)
        return stored_ids.may_hold([row.event.event_id for row in rows])

    async def _retained_owners(self, rows: Sequence[RawRow]) -> dict[str, str]:
        if not rows or self._raw_writer is None:
            return {}
        events = [row.event for row in rows]
        return await asyncio.to_thread(self._raw_writer.retained_positions_of, events)

    async def _stored_owners(self, rows: Sequence[RawRow], now_ms: int) -> dict[str, str]:
        if not rows or self._raw_writer is None:
            return {}
        events = [row.event for row in rows]
        return await asyncio.to_thread(self._raw_writer.positions_of, events, now_ms)

    def _decode(
        self, messages: Sequence[Message], now_ms: int
    ) -> tuple[list[RawRow], list[DeadLetter], list[RawRow], list[RawRow], set[Position]]:
        """The accepted rows; the rejections; the rows too late by a "now" other than a
        log-append time, the worker's clock or a create time (``_decided_before`` decides
        those, keeping a replay's first decision); the other rows of records without a
        log-append time, which another reading may judge otherwise (``_not_rejected_before``
        keeps a first rejection of those); and, for a store-only
        worker, which judges time with ``ROLE_CLOCK_SLACK_MS`` to spare (its clock is not
        its counting workers'), the rows its own clock would have rejected: those it
        stores only if the counting workers counted them."""
        slack = 0 if self._counts else ROLE_CLOCK_SLACK_MS
        rows: list[RawRow] = []
        letters: list[DeadLetter] = []
        late: list[RawRow] = []
        unsure: list[RawRow] = []
        edge: set[Position] = set()
        oldest_ms = now_ms - RAW_RETENTION_MS
        for message in messages:
            record_ms, log_append = message.timestamp_ms, message.log_append
            decided_at = decision_time_ms(record_ms, log_append, now_ms)
            late_at = late_rule_time_ms(record_ms, log_append, now_ms)
            # Only a log-append time decides "too late" alike on every reading; any other
            # "now" of the late rule (a create time, the clock) is applied below, with the
            # worker's clock, and ``_decided_before`` keeps a replay's first decision.
            record_decides = log_append and late_at == record_ms
            late_ms = late_at - slack if record_decides else NO_LATE_RULE_MS
            oldest = oldest_ms if record_decides else max(oldest_ms, late_at - RAW_RETENTION_MS)
            decoded = decode_message(message.value, now_ms=decided_at + slack,
                                     stages=self._stages, late_ms=late_ms)  # fmt: skip
            for item in decoded:
                if isinstance(item, AcceptedEvent):
                    at = item.event.occurred_at_ms
                    row = RawRow(item.event, Position(message.partition, message.offset,
                                                      item.batch_index))  # fmt: skip
                    if (
                        slack
                        and not late_at - RAW_RETENTION_MS <= at <= decided_at + FUTURE_TOLERANCE_MS
                    ):
                        edge.add(row.position)
                    if at < oldest - slack:
                        late.append(row)
                    elif at < oldest + slack:  # a store-only worker's clock may be either side
                        edge.add(row.position)
                        rows.append(row)
                    else:
                        # Another reading may judge a create time otherwise: a first
                        # rejection is kept (``_not_rejected_before``).
                        (rows if log_append else unsure).append(row)
                else:
                    letters.append(letter_from(item, message))
        return rows, letters, late, unsure, edge

    async def _replayed(
        self, letters: Sequence[DeadLetter], unsure: Sequence[RawRow], messages: Sequence[Message]
    ) -> set[Source]:
        """The DLQ sources, among these letters and rows of records without a log-append
        time, at or below the last such letter settled in their partition
        (``OncePublisher.lettered_through``): a first rejection of theirs may be in the DLQ
        with its marker ended (``OncePublisher.in_dlq``)."""
        if not letters and not unsure:
            return set()
        found = _by_position(messages)
        sources = {letter.source for letter in letters
                   if not found[letter.partition, letter.offset].log_append}  # fmt: skip
        sources.update(_source(row, _message_of(row, found)) for row in unsure)
        if not sources:
            return set()
        partitions = sorted({source[0] for source in sources})
        lettered = await self._dead_letters.lettered_through(partitions)
        return {source for source in sources if source[1] <= lettered.get(source[0], -1)}

    async def _not_rejected_before(
        self,
        unsure: Sequence[RawRow],
        messages: Sequence[Message],
        replayed: Container[Source],
        now_ms: int,
    ) -> list[RawRow]:
        """Rows of records without a log-append time whose position was not rejected before,
        by an earlier reading that judged the record's time otherwise: a replay keeps the
        first decision (CONTRACT §3.2). Its DLQ marker says so, or, once the marker ended, at
        a ``replayed`` position, its letter in the DLQ (``OncePublisher.in_dlq``). Only
        events no seen-marker holds are looked up: of a duplicate, nothing is counted or
        stored either way."""
        if not unsure:
            return []
        found = _by_position(messages)
        sources = [_source(row, _message_of(row, found)) for row in unsure]
        rejected = await self._dead_letters.rejected_before(sources)
        asking = [i for i, source in enumerate(sources)
                  if source in replayed and source not in rejected]  # fmt: skip
        if asking:
            ids = [unsure[i].event.event_id for i in asking]
            owners = await self._counters.owners(ids, now_ms)
            elements: dict[tuple[int, int], list[bytes]] = {}
            asked = {sources[i]: _payload(unsure[i], _message_of(unsure[i], found), sources[i],
                                          elements)
                     for i, owner in zip(asking, owners, strict=True) if owner is None}  # fmt: skip
            rejected |= await self._dead_letters.in_dlq(asked)
        return [row for row, source in zip(unsure, sources, strict=True) if source not in rejected]

    async def _count_once(
        self, rows: list[RawRow], now_ms: int, messages: Sequence[Message]
    ) -> Classified:
        """Count the batch's new events once: claim all of its first occurrences (one script
        call per shard group, pipelined); a group is refused if any of its events was counted
        already, says by whom, and the batch is sorted again with what it said. Then add the
        increments of every event the batch's positions own (``RollingCounters``), and mark
        the batch's messages decided: a duplicate is counted once, by the first count that
        decides its position."""
        owners = await self._owners_of_old(rows, now_ms)
        claimed: set[str] = set()  # event ids this call marked, in rounds before the last
        while True:
            classified = classify(rows, owners)
            new_events = [(row.event.event_id, position_text(row.position))
                          for row in classified.new]  # fmt: skip
            taken = await self._counters.claim(new_events, now_ms)
            if taken is None:
                break
            counted_by: dict[str, str] = {}
            for (event_id, position), owner in zip(new_events, taken, strict=True):
                if owner == MARKED_NOW:
                    claimed.add(event_id)
                    counted_by[event_id] = position
                elif owner is not None:
                    counted_by[event_id] = owner
            owners = [owner if owner is not None else counted_by.get(row.event.event_id)
                      for row, owner in zip(rows, owners, strict=True)]  # fmt: skip
        if claimed:  # marked by this call in an earlier round: new, not replayed
            owners = [None if row.event.event_id in claimed and owner == str(row.position)
                      else owner for row, owner in zip(rows, owners, strict=True)]  # fmt: skip
            classified = classify(rows, owners)
        duplicates = classified.duplicates
        try:
            before = await self._counters.add(
                classified.new + classified.replayed, now_ms, _spans(messages)
            )
        except BaseException:
            self._uncounted.update(duplicates)
            raise
        _observe(row.event for row in classified.new)
        if duplicates:
            found = _by_position(messages)
            undecided = [p for p in duplicates if not self._decided_here(before, p, found)]
            telemetry.EVENTS_DUPLICATE.inc(len(undecided))
        if self._uncounted:
            self._uncounted.difference_update(row.position for row in rows)
        return classified

    def _decided_here(
        self,
        before: Mapping[int, DecidedMark | None],
        position: Position,
        found: Mapping[tuple[int, int], Message],
    ) -> bool:
        """Whether a count before this one decided ``position`` (and counted it if it was a
        duplicate): its mark covered it, unless this process set that mark in an attempt
        whose counter call failed (that attempt counted nothing)."""
        mark = before.get(position.partition)
        if mark is None or not _decided(mark, position, found):
            return False
        return not (position in self._uncounted and mark.token == self._counters.token)

    async def _owners_of_old(self, rows: Sequence[RawRow], now_ms: int) -> list[str | None]:
        """What the store says counted the events an earlier copy of which may be stored
        past its seen-marker: events so old that the marker may be gone, and events whose id
        the stored ids may hold (a copy dated in any hour; rare); None for the others, whose
        markers the count-once script reads."""
        owners: list[str | None] = [None] * len(rows)
        held = await self._may_be_stored(rows, now_ms)
        old = [i for i, row in enumerate(rows) if held[i] or beyond_markers(row, now_ms)]
        stored = await self._stored_owners([rows[i] for i in old], now_ms)
        for i in old:
            owners[i] = stored.get(rows[i].event.event_id)
        return owners


def _source(row: RawRow, message: Message) -> Source:
    """A row's DLQ source: partition, offset, and batch index if its message is a batch."""
    batch = (message.value or b"").lstrip().startswith(b"[")
    return row.position.partition, row.position.offset, row.position.batch_index if batch else None


def _payload(
    row: RawRow, message: Message, source: Source, elements: dict[tuple[int, int], list[bytes]]
) -> bytes | None:
    """The bytes a letter of ``row`` carries (pure): its message's value, or its own element of
    a batch (``elements`` keeps each batch's elements, split once)."""
    if source[2] is None or message.value is None:
        return message.value
    at = message.partition, message.offset
    if at not in elements:
        elements[at] = batch_elements(message.value)
    return elements[at][source[2]]


def _spans(messages: Sequence[Message]) -> dict[int, Span]:
    """The messages' offsets per input partition, and the newest log-append time (pure)."""
    by_partition: dict[int, list[Message]] = defaultdict(list)
    for message in messages:
        by_partition[message.partition].append(message)
    spans: dict[int, Span] = {}
    for partition, found in by_partition.items():
        offsets = [message.offset for message in found]
        times = [m.timestamp_ms for m in found if m.log_append and m.timestamp_ms is not None]
        appended = max(times) if len(times) == len(found) else -1
        spans[partition] = Span(min(offsets), max(offsets), appended)
    return spans


def _decided(
    mark: DecidedMark | None, position: Position, found: Mapping[tuple[int, int], Message]
) -> bool:
    """Whether the decided ``mark`` of its partition covers the message at ``position``."""
    if mark is None:
        return False
    message = found[position.partition, position.offset]
    return mark.covers(position.offset, message.timestamp_ms if message.log_append else None)


def _in_message_order(rows: Iterable[RawRow], messages: Sequence[Message]) -> list[RawRow]:
    """``rows`` in the order of their messages, then of their batch indexes (pure)."""
    order = {(message.partition, message.offset): i for i, message in enumerate(messages)}
    return sorted(rows, key=lambda row: (order[row.position.partition, row.position.offset],
                                         row.position.batch_index))  # fmt: skip


def _by_position(messages: Sequence[Message]) -> dict[tuple[int, int], Message]:
    """The messages by (partition, offset), for ``_message_of``: one pass, not one per row."""
    return {(message.partition, message.offset): message for message in messages}


def _message_of(row: RawRow, found: Mapping[tuple[int, int], Message]) -> Message:
    """The message a row came from."""
    return found[row.position.partition, row.position.offset]


def _missing_rows(raw_writer: RawWriter, replayed: list[RawRow]) -> list[RawRow]:
    """The counted rows of a replayed batch that the store does not hold yet."""
    if not replayed:
        return []
    written = raw_writer.already_written([row.position for row in replayed])
    return [row for row in replayed if row.position not in written]


def _observe(events: Iterable[PipelineEvent]) -> None:
    """Prometheus updates for newly counted events, once per batch."""
    counts: Counter[tuple[EventType, str | None]] = Counter()
    cost = 0.0
    latencies: list[float] = []
    durations: dict[str, list[float]] = defaultdict(list)
    for event in events:
        event_type, stage, duration = event.event_type, event.stage, event.duration_ms
        counts[event_type, stage] += 1  # label values once per kind, below
        cost += event.ai_cost_usd or 0.0
        if duration is None:
            continue
        if event_type is EventType.ARTIFACT_COMPLETED:
            latencies.append(duration / 1000)
        elif event_type is EventType.STAGE_COMPLETED and stage is not None:
            durations[stage].append(duration / 1000)
    for (event_type, stage), count in counts.items():
        telemetry.EVENTS.labels(event_type.value, stage or "").inc(count)
    if cost:
        telemetry.AI_COST.inc(cost)
    telemetry.observe_many(telemetry.END_TO_END_LATENCY, latencies)
    for stage, values in durations.items():
        telemetry.observe_many(telemetry.STAGE_DURATION.labels(stage), values)
