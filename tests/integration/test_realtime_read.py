"""The real-time read (aggregators/realtime.py) sums a scope's buckets on the Redis server, in
one ``ZUNION``: its view must be the one the client-side sum of the same buckets gives
(``client_side``), counts exactly, float sums to the last bits of their
order, for values written as ingest writes them (``ZINCRBY``)."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis as AsyncRedis

from aggregators.realtime import bucket_keys, read_realtime, read_realtime_async
from voicemon import keys
from voicemon.rolling import WINDOW_MINUTES, first_minute, view
from voicemon.settings import Settings

pytestmark = pytest.mark.integration

NOW_MS = 1_764_288_030_000
STAGES = ("transcription", "draft_generation")
HOSTILE = [0.1, 0.2, 1e-300, 5e-324, 1e300, -0.0, 2.0**53, 1 / 3, 123456.789]


@pytest.fixture
def url(stack: Settings) -> Iterator[str]:
    url = stack.redis_url.get_secret_value().rsplit("/", 1)[0] + "/8"
    SyncRedis.from_url(url).flushdb()
    yield url
    SyncRedis.from_url(url).flushdb()


def written(redis: SyncRedis, scope: str | None, seed: int) -> None:
    """Random increments into the scope's window and a minute on each side of it."""
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
            else:
                value = rng.randint(-3, 10**12)
            redis.zincrby(name, value, field)


def client_side(redis: SyncRedis, scope: str | None) -> dict[str, Any]:
    """The view of the window's buckets read one by one and added up here, in bucket order."""
    totals: dict[str, float] = {}
    for key in bucket_keys(scope, NOW_MS):
        members: list[tuple[bytes, float]] = redis.zrange(key, 0, -1, withscores=True)  # type: ignore[assignment]
        for name, score in members:
            totals[name.decode()] = totals.get(name.decode(), 0.0) + score
    return view(totals, organization_id=scope, now_ms=NOW_MS, stages=STAGES)


def close_to(read: Any, expected: Any) -> bool:
    """Equal, floats within 1e-12 of each other (a sum's last bits follow its order)."""
    if isinstance(expected, dict):
        return read.keys() == expected.keys() and all(close_to(read[k], v)
                                                      for k, v in expected.items())  # fmt: skip
    if isinstance(expected, float):
        return isinstance(read, float) and math.isclose(read, expected, rel_tol=1e-12)
    return type(read) is type(expected) and read == expected


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("scope", [None, "acme"])
def test_the_server_side_sum_is_the_client_side_sum(url: str, scope: str | None, seed: int) -> None:
    redis = SyncRedis.from_url(url)
    written(redis, scope, seed)
    expected = client_side(redis, scope)
    assert expected["artifacts_received"] > 10**12  # counts past 32 bits stay exact

    read = read_realtime(redis, scope, STAGES, NOW_MS)
    assert close_to(read, expected), (read, expected)

    async def read_async() -> Any:
        async with AsyncRedis.from_url(url) as client:
            return await read_realtime_async(client, scope, STAGES, NOW_MS)

    assert asyncio.run(read_async()) == read


def test_a_value_reaches_its_bucket_as_the_double_that_was_added(url: str) -> None:
    """ZINCRBY keeps a score as a double: what one bucket holds reads back bit for bit."""
    redis = SyncRedis.from_url(url)
    minute = NOW_MS // 60_000
    for value in (0.1, 5e-324, 1e300, 1 / 3, 2.0**53):
        redis.delete(keys.rolling_counter("acme", minute))
        redis.zincrby(keys.rolling_counter("acme", minute), value, "cost_sum")
        assert read_realtime(redis, "acme", (), NOW_MS)["ai_cost_usd"] == value


def test_a_scope_with_no_buckets_reads_zeros(url: str) -> None:
    redis = SyncRedis.from_url(url)
    assert read_realtime(redis, "quiet", STAGES, NOW_MS) == client_side(redis, "quiet")
