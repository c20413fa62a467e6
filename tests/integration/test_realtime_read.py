"""The real-time read (aggregators/realtime.py) sums a scope's buckets on the Redis server: its
view must be the very one the client-side sum of the same hashes gives
(``voicemon.rolling.summarize``), bit for bit, for values written as ingest writes them."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis as AsyncRedis

from aggregators.realtime import bucket_keys, read_realtime, read_realtime_async
from voicemon import keys
from voicemon.rolling import WINDOW_MINUTES, first_minute, stored_value, summarize
from voicemon.settings import Settings

pytestmark = pytest.mark.integration

NOW_MS = 1_764_288_030_000
STAGES = ("transcription", "draft_generation")
HOSTILE = [0.1, 0.2, 1e-300, 5e-324, 1e300, -0.0, 0.0, 2.0**53 + 1, 1 / 3, 123456.789]


@pytest.fixture
def url(stack: Settings) -> Iterator[str]:
    url = stack.redis_url.get_secret_value().rsplit("/", 1)[0] + "/8"
    SyncRedis.from_url(url).flushdb()
    yield url
    SyncRedis.from_url(url).flushdb()


def written(redis: SyncRedis, scope: str | None, seed: int) -> None:
    """Random increments into the scope's window (and a minute on each side of it), by the
    commands ingest uses: HINCRBY for counts, HINCRBYFLOAT for ``_sum`` fields."""
    rng = random.Random(seed)
    fields = ["received", "completed", "failed", "latency_sum", "latency_n", "cost_sum",
              "stage:transcription:started", "stage:transcription:duration_sum",
              "stage:transcription:duration_n", "stage:draft_generation:failed"]  # fmt: skip
    first = first_minute(NOW_MS)
    for minute in range(first - 1, first + WINDOW_MINUTES + 1):
        name = keys.rolling_counter(scope, minute)
        for _ in range(rng.randint(0, 12)):
            field = rng.choice(fields)
            if field.endswith("_sum"):
                value = rng.choice([*HOSTILE, rng.uniform(0, 5_000), rng.expovariate(1e3)])
                redis.hincrbyfloat(name, field, float(stored_value(field, value)))
            else:
                redis.hincrby(name, field, rng.randint(-3, 1_000))


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("scope", [None, "acme"])
def test_the_server_side_sum_is_the_client_side_sum(url: str, scope: str | None, seed: int) -> None:
    redis = SyncRedis.from_url(url)
    written(redis, scope, seed)
    with redis.pipeline(transaction=False) as pipe:
        for key in bucket_keys(scope, NOW_MS):
            pipe.hgetall(key)
        expected = summarize(pipe.execute(), organization_id=scope, now_ms=NOW_MS, stages=STAGES)

    assert read_realtime(redis, scope, STAGES, NOW_MS) == expected
    assert repr(read_realtime(redis, scope, STAGES, NOW_MS)) == repr(expected)  # -0.0, too

    async def read() -> object:
        async with AsyncRedis.from_url(url) as client:
            return await read_realtime_async(client, scope, STAGES, NOW_MS)

    assert repr(asyncio.run(read())) == repr(expected)


def test_a_scope_with_no_buckets_reads_zeros_and_the_script_is_loaded_again(url: str) -> None:
    redis = SyncRedis.from_url(url)
    redis.script_flush()
    view = read_realtime(redis, "quiet", STAGES, NOW_MS)
    assert view == summarize([], organization_id="quiet", now_ms=NOW_MS, stages=STAGES)
