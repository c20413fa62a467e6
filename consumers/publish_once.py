"""Each rejection published to the DLQ exactly once, across workers, retries and crashes.

``OncePublisher.publish_once(letters)`` is the whole protocol. A rejection's marker in Redis
(``keys.dead_lettered``) holds a ``Claim`` while one worker publishes it and "sent" once Kafka
acknowledged it — in full or as an envelope, which carries the same source headers — or refused
it for good (``DeadLetters.send``: counted and logged, never retried). The Lua scripts here
decide claims atomically; ``DeadLetters`` does the Kafka I/O. A claim that is this worker's own
(a retried batch) or abandoned (older than ``DLQ_ABANDONED_MS``: its worker died or lost the
partition) is verified by reading the DLQ partition from the offset the claim recorded: found
there, it is marked sent; not found, the claim is taken over (compare-and-set) and the
rejection published. A rejection another worker is publishing is waited for, never sent twice.
Markers live ``DLQ_MARKER_TTL_MS``; a replay later than that (an outage of hours, a group's
offsets reset) finds none. So each step that publishes letters (``step``: the count step's
rejections, the store step's ``unstorable``) also keeps, per input partition, the offset and
log-append time of the last letter it settled (``keys.dlq_settled``), raised once all of a
call's letters are settled. A step settles a partition's letters in offset order (a worker
counts and stores its chunks one after the other; a new owner starts at the committed
offset, behind anything not settled), so a letter claimed afresh at or below that offset,
appended no later, was settled before: it is marked sent, not sent again. (A letter appended
later at a lower offset comes from a recreated topic, and is sent.) A record without a
log-append time has no such proof: at or below the offset of the last such letter the count
step settled in its partition (``lettered_through``), a letter claimed afresh is looked up
in the DLQ itself, by its source and bytes (``in_dlq``).

Known limit: the publish and its "sent" mark are not one transaction; a crash between them
publishes that rejection again once its claim is abandoned — unless the successor finds it
in the DLQ partition first, which it does whenever the first publish was acknowledged.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass

from consumers.dead_letters import DeadLetters
from consumers.letters import DeadLetter, Source, payload_digest
from consumers.rolling_counters import DECIDED_TTL_MS
from voicemon import keys
from voicemon.redis_client import AsyncRedis as Redis

FOLLOW_POLL_S = 0.2
WAIT_FOR_OTHERS_S = 60.0  # claims are abandoned after DLQ_ABANDONED_MS; this bounds the wait

# A claim this old, not marked sent, may be taken over: longer than a live worker waits for
# its letter (dead_letters.DELIVERY_TIMEOUT_S; the client gives a record up after
# publisher.MESSAGE_TIMEOUT_MS), so a slow publish is not published a second time beside it.
# (A letter refused for its size is sent again alone, then as an envelope: those refusals
# come back at once, so the last attempt still ends within this.)
DLQ_ABANDONED_MS = 40_000
DLQ_MARKER_TTL_MS = 2 * 3_600_000  # a replay after a crash or rebalance comes well within
# A replayed position's letter is looked up among the letters of this long (``in_dlq``): as
# far as a replay keeps the first decision of an accepted event (its raw row's 48 h, the
# decided marks' 50 h), and an hour for the clocks of the workers that published them.
DLQ_LOOKBACK_MS = DECIDED_TTL_MS + 3_600_000

# KEYS: a step's settled mark; ARGV: per input partition, the partition, the offset and the
# log-append time of the last letter settled there. Raises each partition's mark, never lowers it.
_SETTLED = """
for i = 1, #ARGV, 3 do
  local held = redis.call('HGET', KEYS[1], ARGV[i])
  if not held or tonumber(string.match(held, '^(%d+):')) < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1] .. ':' .. ARGV[i + 2])
  end
end
"""

# A marker holds "claimant|claimed_at_ms|dlq_partition|dlq_offset" until Kafka acknowledged
# the record, then "sent". Called by OncePublisher._verdicts.
# KEYS: dlq markers; ARGV: claimant, now_ms, abandoned_after_ms, ttl_ms, claim per key...
_CLAIM_DEAD_LETTERS = """
local verdicts = {}
local own = ARGV[1] .. '|'
for i = 1, #KEYS do
  local holder = redis.call('GET', KEYS[i])
  if holder == 'sent' then
    verdicts[i] = 'sent'
  elseif holder == false then
    redis.call('SET', KEYS[i], ARGV[4 + i], 'PX', ARGV[4])
    verdicts[i] = 'claimed'
  else
    local claimed_at = tonumber(string.match(holder, '^[^|]*|(%d+)|') or '0')
    if string.sub(holder, 1, #own) == own or tonumber(ARGV[2]) - claimed_at > tonumber(ARGV[3]) then
      verdicts[i] = holder
    else
      verdicts[i] = 'held'
    end
  end
end
return verdicts
"""

# KEYS: a dlq marker; ARGV: the claim expected, the new claim, ttl_ms
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""

# KEYS: dlq markers; ARGV: their expiry (epoch ms). Marks them all sent at once. (A script,
# never a MULTI: why in tests/unit/test_redis_layout.py, test_no_redis_transaction_pipelines.)
_SENT = """
for _, key in ipairs(KEYS) do redis.call('SET', key, 'sent', 'PXAT', ARGV[1]) end
"""


@dataclass(frozen=True, slots=True)
class Claim:
    """A DLQ claim: who claimed, when, and where the DLQ partition ended at that moment."""

    claimant: str
    claimed_at_ms: int
    dlq_partition: int
    dlq_offset: int

    def __str__(self) -> str:
        return f"{self.claimant}|{self.claimed_at_ms}|{self.dlq_partition}|{self.dlq_offset}"

    @classmethod
    def parse(cls, text: str) -> Claim:
        claimant, at, partition, offset = text.rsplit("|", 3)
        return cls(claimant, int(at), int(partition), int(offset))


class OncePublisher:
    """Publishes rejections to the DLQ so that each is published exactly once."""

    def __init__(
        self, redis: Redis, dead_letters: DeadLetters, clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = redis
        self._dead_letters = dead_letters
        self._clock = clock
        self._claimant = f"worker-{uuid.uuid4().hex}"
        self._claim = redis.register_script(_CLAIM_DEAD_LETTERS)
        self._take_over = redis.register_script(_TAKE_OVER)
        self._sent = redis.register_script(_SENT)
        self._settled = redis.register_script(_SETTLED)

    async def publish_once(
        self,
        letters: Sequence[DeadLetter],
        replicated: Callable[[], Awaitable[object]] | None = None,
        step: str = "count",
        replayed: Container[Source] = (),
    ) -> None:
        """Return once every letter is in the DLQ, published by this worker or another. A
        letter another worker is publishing is waited for until it is published or its claim
        is abandoned (``DLQ_ABANDONED_MS`` by this worker's clock, read on every round).
        ``replicated`` (``Replication.confirm``) returns once the claims are on the replicas,
        and raises if they are not: a letter is published only under a claim that survives a
        failover, so a retry after one verifies it in the DLQ instead of sending it again.
        ``step`` names the step whose letters these are (its settled marks). ``replayed``:
        sources of records without a log-append time at or below the partition's
        ``lettered_through``; one claimed afresh is looked up in the DLQ (``in_dlq``)
        before it is sent."""
        pending = {_marker(letter): letter for letter in letters}
        deadline = time.monotonic() + WAIT_FOR_OTHERS_S
        while pending:
            if time.monotonic() > deadline:  # an outage, not a claim: retried with backoff
                raise TimeoutError(f"{len(pending)} rejection(s) still claimed by other workers")
            now_ms = int(self._clock() * 1000)
            claims = await asyncio.to_thread(self._claims, pending, now_ms)
            verdicts = await self._verdicts(claims, now_ms)
            to_send = {k: pending[k] for k, v in verdicts.items() if v == "claimed"}
            held = {k: pending[k] for k, v in verdicts.items() if v == "held"}
            earlier = {k: v for k, v in verdicts.items() if isinstance(v, Claim)}
            published = await asyncio.to_thread(
                self._published, [(pending[k], claim) for k, claim in earlier.items()]
            )
            done = [k for k in earlier if pending[k].source in published]
            if to_send:  # claimed afresh: settled before, if its marker expired since?
                marks = await self._settled_marks(step, to_send.values())
                forgotten = [k for k, letter in to_send.items() if settled_before(letter, marks)]
                asked = {letter.source: letter.rejected.payload for k, letter in to_send.items()
                         if letter.source in replayed and k not in forgotten}  # fmt: skip
                found = await self.in_dlq(asked)
                forgotten += [k for k, letter in to_send.items() if letter.source in found]
                done += forgotten
                for key in forgotten:
                    del to_send[key]
            for key in set(earlier) - set(done):
                if await self._taken_over(key, earlier[key], claims[key]):
                    to_send[key] = pending[key]
                else:
                    held[key] = pending[key]
            if to_send and replicated is not None:
                await replicated()
            await self._dead_letters.send(list(to_send.values()))
            await self._mark_sent([*to_send, *done], now_ms + DLQ_MARKER_TTL_MS)
            pending = held
            if pending:
                await asyncio.sleep(FOLLOW_POLL_S)
        await self._raise_settled_marks(step, letters)

    def _claims(self, letters: Mapping[str, DeadLetter], now_ms: int) -> dict[str, Claim]:
        """This worker's claim of each letter, with the DLQ partition's end offset now."""
        ends: dict[int, int] = {}
        claims = {}
        for key, letter in letters.items():
            partition = self._dead_letters.partition_of(letter)
            if partition not in ends:
                ends[partition] = self._dead_letters.end_offset(partition)
            claims[key] = Claim(self._claimant, now_ms, partition, ends[partition])
        return claims

    def _published(self, claimed: Sequence[tuple[DeadLetter, Claim]]) -> set[Source]:
        """Sources found in the DLQ partitions after the offsets the earlier claims recorded."""
        since: dict[int, int] = {}
        for _, claim in claimed:
            since[claim.dlq_partition] = min(since.get(claim.dlq_partition, claim.dlq_offset),
                                             claim.dlq_offset)  # fmt: skip
        found: set[Source] = set()
        for partition, offset in since.items():
            found |= self._dead_letters.published_since(partition, offset)
        return found

    async def _settled_marks(
        self, step: str, letters: Iterable[DeadLetter]
    ) -> dict[int, tuple[int, int]]:
        """The step's settled mark, (offset, log-append time), of each letter's partition."""
        partitions = {letter.partition for letter in letters if letter.appended_ms is not None}
        return await self._marks(step, sorted(partitions), log_append=True)

    async def _marks(
        self, step: str, partitions: Sequence[int], log_append: bool
    ) -> dict[int, tuple[int, int]]:
        """The step's settled marks, (offset, log-append time), of these partitions' letters
        of log-append records or of the others (``_settled_field``), where there are some."""
        if not partitions:
            return {}
        fields = [_settled_field(partition, log_append) for partition in partitions]
        found = await self._redis.hmget(keys.dlq_settled(step), fields)
        marks = {}
        for partition, held in zip(partitions, found, strict=True):
            if held is not None:
                offset, appended = (held.decode() if isinstance(held, bytes) else held).split(":")
                marks[partition] = (int(offset), int(appended))
        return marks

    async def _raise_settled_marks(self, step: str, letters: Sequence[DeadLetter]) -> None:
        """Raise the step's mark of each partition to its last letter here (all settled): of
        the letters of log-append records, and (``lettered_through``) of the others."""
        last: dict[str, tuple[int, int]] = {}
        for letter in letters:
            field = _settled_field(letter.partition, letter.appended_ms is not None)
            held = last.get(field)
            if held is None or letter.offset > held[0]:
                appended = -1 if letter.appended_ms is None else letter.appended_ms
                last[field] = (letter.offset, appended)
        if last:
            args = [n for field, (offset, ms) in last.items() for n in (field, offset, ms)]
            await self._settled(keys=[keys.dlq_settled(step)], args=args)

    async def lettered_through(self, partitions: Sequence[int]) -> dict[int, int]:
        """Per input partition, the offset of the last letter of a record without a
        log-append time that the count step settled, where one was: a position at or below
        it may have a letter in the DLQ whose marker ended (``in_dlq``)."""
        marks = await self._marks("count", partitions, log_append=False)
        return {partition: offset for partition, (offset, _) in marks.items()}

    async def rejected_before(self, sources: Sequence[Source]) -> set[Source]:
        """Which of these sources (partition, offset, batch index) a worker has decided to
        reject: their DLQ markers are there, claimed or sent."""
        if not sources:
            return set()
        found = await self._redis.mget([keys.dead_lettered(*source) for source in sources])
        return {source for source, value in zip(sources, found, strict=True) if value}

    async def in_dlq(self, payloads: Mapping[Source, bytes | None]) -> set[Source]:
        """Which of these sources have a letter of these bytes in the DLQ, published within
        ``DLQ_LOOKBACK_MS``: a rejection of a record without a log-append time, replayed
        after its marker ended, keeps its first decision (CONTRACT §3.2). A letter refused
        for good is not there, nor one of a recreated topic with other bytes at that
        position."""
        if not payloads:
            return set()
        since_ms = int(self._clock() * 1000) - DLQ_LOOKBACK_MS
        digests = {source: payload_digest(payload) for source, payload in payloads.items()}
        return await asyncio.to_thread(self._dead_letters.holding, digests, since_ms)

    async def _verdicts(self, claims: Mapping[str, Claim], now_ms: int) -> dict[str, str | Claim]:
        """For each rejection marker: 'sent', 'claimed' (ours to send now), 'held' (another
        worker is publishing it: wait), or the earlier Claim to verify before taking over."""
        if not claims:
            return {}
        claimant = next(iter(claims.values())).claimant
        args: list[str | int] = [claimant, now_ms, DLQ_ABANDONED_MS, DLQ_MARKER_TTL_MS]
        args += [str(claim) for claim in claims.values()]
        verdicts = await self._claim(keys=list(claims), args=args)
        result: dict[str, str | Claim] = {}
        for key, raw in zip(claims, verdicts, strict=True):
            verdict = raw.decode() if isinstance(raw, bytes) else str(raw)
            result[key] = (
                verdict if verdict in ("sent", "claimed", "held") else Claim.parse(verdict)
            )
        return result

    async def _taken_over(self, key: str, earlier: Claim, claim: Claim) -> bool:
        args: list[str | int] = [str(earlier), str(claim), DLQ_MARKER_TTL_MS]
        return bool(await self._take_over(keys=[key], args=args))

    async def _mark_sent(self, dlq_keys: Sequence[str], expire_at_ms: int) -> None:
        if dlq_keys:
            await self._sent(keys=list(dlq_keys), args=[expire_at_ms])


def settled_before(letter: DeadLetter, marks: Mapping[int, tuple[int, int]]) -> bool:
    """Whether a step settled this letter before (pure): its partition's settled mark lies at
    or after its offset, and was appended no earlier than it (see the module docstring)."""
    mark = marks.get(letter.partition)
    if mark is None or letter.appended_ms is None:
        return False
    return letter.offset <= mark[0] and letter.appended_ms <= mark[1]


def _settled_field(partition: int, log_append: bool) -> str:
    """The field of a partition's settled mark: of letters of log-append records, or not."""
    return str(partition) if log_append else f"{partition}:created"


def _marker(letter: DeadLetter) -> str:
    return keys.dead_lettered(letter.partition, letter.offset, letter.rejected.batch_index)
