"""Who stores an input partition's rows: one worker at a time (CONTRACT §3.1).

A worker that writes raw rows counts and stores each chunk under a lease on every input
partition of the chunk: a Redis key holding the worker's name, taken before the chunk is
counted and given back once its rows are stored — or, if the chunk was abandoned (a
rebalance, a shutdown), once the insert still running in its thread has finished. The
worker renews its leases four times a ``LEASE_MS`` while it holds any.

A worker that takes over a partition whose previous owner is still storing rows of it (a
store hang that outlasts the rebalance timeout) waits until that store is done or its owner
is gone (the lease lapses ``LEASE_MS`` after the last renewal). Then the rows are in the
store and the replay finds them, or they are not and the new owner writes them alone: a
handover never stores a row twice. While a worker holds the lease of a partition, the rows
it counted as new there cannot have been written by anyone else, so it writes them without
a lookup.

Known limit: a lease lapses if its holder cannot renew it for ``LEASE_MS`` (Redis down, or
the worker frozen) while an insert of its is still running; a new owner may then write the
same rows. A worker checks its leases before it writes (``still_held``), which leaves only an
insert that began before the lapse and ends after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Collection, Iterable

from voicemon import keys
from voicemon.redis_client import AsyncRedis as Redis

log = logging.getLogger("voicemon.worker")

LEASE_MS = 10_000  # renewed four times a lease
WAIT_POLL_S = 0.1

# KEYS: the leases; ARGV: holder, lease ms. Takes every lease if none is held by another
# holder and returns ''; otherwise takes none and returns the other holder.
_TAKE = """
for i = 1, #KEYS do
  local holder = redis.call('GET', KEYS[i])
  if holder and holder ~= ARGV[1] then return holder end
end
for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2]) end
return ''
"""

# KEYS: the leases; ARGV: holder, lease ms (0: give them back). Renews (or deletes) the
# leases the holder still holds; returns how many it held.
_KEEP = """
local held = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    held = held + 1
    if ARGV[2] == '0' then redis.call('DEL', KEYS[i])
    else redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
  end
end
return held
"""


class StoreLeases:
    """This worker's leases on input partitions, held once per chunk in flight."""

    def __init__(self, redis: Redis, holder: str | None = None, lease_ms: int = LEASE_MS) -> None:
        self._redis = redis
        self.holder = holder or f"worker-{uuid.uuid4().hex}"
        self._lease_ms = lease_ms
        self._take = redis.register_script(_TAKE)
        self._keep = redis.register_script(_KEEP)
        self._holds: Counter[int] = Counter()  # partition -> chunks in flight holding it
        self._renewer: asyncio.Task[None] | None = None

    async def take(self, partitions: Iterable[int]) -> tuple[int, ...]:
        """Hold the leases of ``partitions`` (once more each, if held already), waiting while
        another worker holds any. Returns the hold, for ``give_back``."""
        wanted = tuple(sorted(set(partitions)))
        new = [p for p in wanted if not self._holds[p]]
        waited = False
        while new:
            other = await self._take(keys=[keys.store_lease(p) for p in new],
                                     args=[self.holder, self._lease_ms])  # fmt: skip
            if not other:
                break
            if not waited:
                log.info("waiting for %s to finish storing partitions %s", other.decode(), new)
                waited = True
            await asyncio.sleep(WAIT_POLL_S)
        self._holds.update(wanted)
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew())
        return wanted

    async def still_held(self, hold: Collection[int]) -> bool:
        """Whether every lease of ``hold`` is still this worker's (renewing them)."""
        held = await self._keep(keys=[keys.store_lease(p) for p in hold],
                                args=[self.holder, self._lease_ms])  # fmt: skip
        return int(held) == len(hold)

    async def give_back(self, hold: Collection[int]) -> None:
        """Release one hold; a lease no chunk in flight holds any more is given back (if
        Redis cannot be reached, it lapses on its own)."""
        free = []
        for partition in hold:
            self._holds[partition] -= 1
            if self._holds[partition] <= 0:
                del self._holds[partition]
                free.append(partition)
        if free:
            with contextlib.suppress(Exception):
                await self._keep(keys=[keys.store_lease(p) for p in free], args=[self.holder, 0])

    def give_back_after(self, work: Awaitable[object], hold: Collection[int]) -> None:
        """Release ``hold`` once ``work`` (an insert running in its thread) has finished."""

        async def later() -> None:
            with contextlib.suppress(BaseException):
                await work
            await self.give_back(hold)

        task = asyncio.get_running_loop().create_task(later())
        _pending.add(task)
        task.add_done_callback(_pending.discard)

    async def _renew(self) -> None:
        while self._holds:
            await asyncio.sleep(self._lease_ms / 4000)
            held = list(self._holds)
            if held:
                with contextlib.suppress(Exception):  # an outage: renewed on the next round
                    await self._keep(keys=[keys.store_lease(p) for p in held],
                                     args=[self.holder, self._lease_ms])  # fmt: skip


_pending: set[asyncio.Task[None]] = set()  # give-backs waiting for their insert
