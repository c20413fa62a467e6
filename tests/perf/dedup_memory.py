"""Redis memory of the dedup state (CONTRACT §1, §3.1): bytes per seen-marker, extrapolated
to GB per 1,000 events/s sustained.

    python -m tests.perf.dedup_memory [--rates 1000,10000] [--sample-shards 512]

For each sustained rate R, one generation of markers (R x 20 minutes of events) is written
through ``RollingCounters.claim`` — the Lua script ingest runs to mark a batch seen
— after a previous generation of the same size, so the shard
count is the one ingest picks at R, and at the density of R (markers per shard hash), into a
sample of the shards so that high rates stay quick to measure.
``used_memory`` before and after gives bytes per marker; at steady state Redis holds at most
five generations (100 minutes) of them, so GB per 1,000 events/s = bytes per marker x 1,000
x 6,000 s / 1e9. The previous design (one key per event with its own TTL, kept until
``occurred_at`` + 48 h 10 min) is measured the same way for comparison. Needs the local
redis-server (``voicemon stack up``); uses Redis DB 13 and flushes it.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson
from redis.asyncio import Redis

from consumers.rolling_counters import RollingCounters
from voicemon import keys
from voicemon.event import EventType, PipelineEvent

DB_URL = "redis://127.0.0.1:6379/13"
BATCH = 1000
OLD_SCHEME_SECONDS = 48 * 3600 + 600  # one key per event until occurred_at + 48 h 10 min
STEADY_SECONDS = keys.SEEN_GENERATIONS * keys.SEEN_GENERATION_MS / 1000


def event_ids(count: int, sample: int, shards: int, prefix: str) -> list[str]:
    """``count`` event ids whose markers fall into the first ``sample`` of ``shards`` shards."""
    found: list[str] = []
    serial = 0
    while len(found) < count:
        serial += 1
        event_id = f"{prefix}-{serial:012d}"
        if keys.marker(event_id).slot % shards < sample:
            found.append(event_id)
    return found


async def used_memory(redis: Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


async def compact(redis: Redis, rate: int, sample: int) -> tuple[int, int, float]:
    """Markers of one generation at ``rate`` written into ``sample`` shards at the density
    the generation's shard count gives: (shards, markers, bytes per marker)."""
    per_generation = rate * keys.SEEN_GENERATION_MS // 1000
    shards = keys.shards_for(per_generation)  # as the previous generation at the same rate
    count = round(per_generation / shards * sample)
    ids = event_ids(count, sample, shards, f"r{rate}")
    counters = RollingCounters(redis)
    start = (int(time.time() * 1000) // keys.SEEN_GENERATION_MS) * keys.SEEN_GENERATION_MS
    await redis.flushdb()
    previous = keys.seen_generation(start) - 1
    for group in range(keys.SEEN_GROUPS):  # the previous generation's markers, spread evenly
        await redis.set(keys.seen_count(previous, group), per_generation // keys.SEEN_GROUPS)
    before = await used_memory(redis)
    for first in range(0, count, BATCH):
        chunk = ids[first : first + BATCH]
        now_ms = start + first * keys.SEEN_GENERATION_MS // count  # one generation, steadily
        events = [
            PipelineEvent(i, EventType.ARTIFACT_RECEIVED, now_ms, "a", "org-1") for i in chunk
        ]
        new = [(e.event_id, f"{first % 4}:{1_000_000 + first}:{n}") for n, e in enumerate(events)]
        taken = await counters.claim(new, now_ms)
        assert taken is None
    return shards, count, (await used_memory(redis) - before) / count


async def per_event_keys(redis: Redis, count: int) -> float:
    """Bytes per marker of the previous design: SET vm:seen:<id> <position> PXAT ..."""
    await redis.flushdb()
    before = await used_memory(redis)
    expire_at = int(time.time() * 1000) + OLD_SCHEME_SECONDS * 1000
    for first in range(0, count, BATCH):
        pipe = redis.pipeline(transaction=False)
        for n in range(first, min(first + BATCH, count)):
            pipe.set(f"vm:seen:old-{n:012d}", f"1:{1_000_000 + n}:0", pxat=expire_at)
        await pipe.execute()
    return (await used_memory(redis) - before) / count


def gb_per_thousand(bytes_per_marker: float, seconds: float) -> float:
    return bytes_per_marker * 1000 * seconds / 1e9


async def main(rates: list[int], sample_shards: int) -> None:
    redis = Redis.from_url(DB_URL)
    report: dict[str, object] = {}
    try:
        old = await per_event_keys(redis, 200_000)
        report["per-event keys (before)"] = {
            "bytes_per_marker": round(old, 1),
            "gb_per_1000_events_per_s": round(gb_per_thousand(old, OLD_SCHEME_SECONDS), 2),
        }
        for rate in rates:
            shards, count, per_marker = await compact(redis, rate, sample_shards)
            generation = keys.seen_generation(int(time.time() * 1000))
            first_hash = keys.seen_hash(generation, shards, keys.Marker(0, b""))
            encoding = await redis.object("encoding", first_hash)
            report[f"compact markers at {rate:,} events/s"] = {
                "shards_per_generation": shards,
                "markers_measured": count,
                "markers_per_hash": round(count / sample_shards, 1),
                "hash_encoding": encoding.decode() if isinstance(encoding, bytes) else encoding,
                "bytes_per_marker": round(per_marker, 1),
                "gb_per_1000_events_per_s": round(gb_per_thousand(per_marker, STEADY_SECONDS), 3),
            }
        await redis.flushdb()
    finally:
        await redis.aclose()
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rates", default="1000,10000")
    parser.add_argument("--sample-shards", type=int, default=512)
    args = parser.parse_args()
    asyncio.run(main([int(r) for r in args.rates.split(",")], args.sample_shards))
