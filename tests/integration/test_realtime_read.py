"""The real-time read (aggregators/query/realtime.py) sums a scope's buckets on the Redis server, in
one ``ZUNION``: its view must be the one the client-side sum of the same buckets gives
(``client_side``), counts exactly, float sums to the last bits of their
order, for values written as ingest writes them (``ZINCRBY``)."""

from __future__ import annotations

import asyncio
import math
import random
import struct
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import RedisCluster as AsyncCluster
from redis.cluster import RedisCluster

from aggregators.query.realtime import bucket_keys, read_realtime, read_realtime_async
from consumers.rolling_counters import _TAKE_BACK, RollingCounters, packed_buckets
from tests.integration.redis_topology import redis_cluster
from voicemon import keys
from voicemon.event import EventType
from voicemon.rolling import (
    BUCKET_TTL_MS,
    WINDOW_MINUTES,
    BucketIncrement,
    counter_fields,
    first_minute,
    view,
)
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


def written(redis: SyncRedis | RedisCluster, scope: str | None, seed: int) -> None:
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


def client_side(redis: SyncRedis | RedisCluster, scope: str | None) -> dict[str, Any]:
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


@pytest.mark.parametrize("value", [0.1, 1 / 3, 5e-324, 2.2250738585072014e-308, 1e300,
                                   1.7976931348623157e308, 2.0**53 + 2, 2.0**63, 123456.789,
                                   86_400_000.0 * 10**6 + 0.1, -0.0])  # fmt: skip
def test_a_value_sent_through_the_counting_scripts_arrives_bit_for_bit(
    url: str, value: float
) -> None:
    """The ingest path: MessagePack, ``cmsgpack`` into a Lua number, then ``ZINCRBY`` with
    the text Redis makes of it (``_APPLY_BUCKETS``, here through the take-back script). A
    minus zero arrives as zero."""
    redis = SyncRedis.from_url(url)
    key = keys.rolling_counter("acme", NOW_MS // 60_000)
    expire_at_ms = int(time.time() * 1000) + BUCKET_TTL_MS
    packed = packed_buckets({key: BucketIncrement(expire_at_ms, {"cost_sum": value})}, 2)
    args = [60_000, msgspec.msgpack.encode(packed)]
    assert redis.register_script(_TAKE_BACK)(keys=["vm:taken_back:{o:acme}:1", key], args=args)
    stored = redis.zscore(key, "cost_sum")
    read = read_realtime(redis, "acme", (), NOW_MS)["ai_cost_usd"]
    exact = struct.pack(">d", value + 0.0)  # -0.0 + 0.0 is 0.0
    assert (struct.pack(">d", stored), struct.pack(">d", read)) == (exact, exact)


def test_a_scope_with_no_buckets_reads_zeros(url: str) -> None:
    redis = SyncRedis.from_url(url)
    assert read_realtime(redis, "quiet", STAGES, NOW_MS) == client_side(redis, "quiet")


def command_calls(node: SyncRedis) -> dict[str, int]:
    """Commands a node ran since its last ``CONFIG RESETSTAT`` (redirected ones too; those a
    script ran included), but the reset's and this connection's own."""
    stats = node.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(each["calls"]) + int(each["rejected_calls"])
             for name, each in stats.items()}  # fmt: skip
    return {name: n for name, n in calls.items() if name not in ("config|resetstat", "hello")}


def test_a_read_on_a_redis_cluster_is_one_call_on_the_node_of_its_buckets(tmp_path: Path) -> None:
    """No node is asked ``COMMAND GETKEYS`` (redis-py's way to route a bare ``ZUNION``: two
    round trips more per read, to a node that need not hold the scope): a read by the CLI's
    client or the API's is one call, on the node of the scope's slot."""
    with redis_cluster(tmp_path / "cluster", appendfsync=None) as cluster:
        sync = RedisCluster.from_url(cluster.url)
        written(sync, "acme", seed=3)
        expected = client_side(sync, "acme")
        owner = sync.get_node_from_key(keys.rolling_counter("acme", 0)).port

        async def reads() -> list[Any]:
            async with AsyncCluster.from_url(cluster.url) as client:
                read_realtime(sync, "acme", STAGES, NOW_MS)  # warm-up: slots, scripts loaded
                await read_realtime_async(client, "acme", STAGES, NOW_MS)
                for node in cluster.nodes:
                    with node.client() as each:
                        each.config_resetstat()
                views = [read_realtime(sync, "acme", STAGES, NOW_MS) for _ in range(3)]
                return views + [await read_realtime_async(client, "acme", STAGES, NOW_MS)
                                for _ in range(3)]  # fmt: skip

        views = asyncio.run(reads())
        calls = {}
        for node in cluster.nodes:
            with node.client() as each:
                calls[node.port] = command_calls(each)
        sync.close()
    assert all(close_to(view, expected) for view in views), (views, expected)
    assert calls.pop(owner) == {"evalsha": 6, "zunion": 6}
    assert list(calls.values()) == [{}, {}]


def every_field(stages: Sequence[str]) -> dict[str, float]:
    """A bucket holding every counter field events of ``stages`` can add."""
    fields: dict[str, float] = {}
    for event_type in EventType:
        for stage in stages if event_type.value.startswith("stage_") else [None]:
            fields.update(counter_fields(event_type, stage, 7, 7, 1234.5, 0.25))
    return fields


@pytest.mark.parametrize(
    ("count", "length", "compact"), [(24, 45, True), (25, 45, False), (24, 46, False)]
)
def test_a_bucket_is_compact_up_to_24_stages_of_45_characters(
    url: str, count: int, length: int, compact: bool
) -> None:
    """With Redis's default ``zset-max-listpack-entries`` (128) and ``-value`` (64 bytes),
    the limits docs/design.md states: past them a bucket is a skiplist, 2 to 4 times larger."""
    redis = SyncRedis.from_url(url)
    limits = redis.config_get("zset-max-listpack-*")
    assert limits == {"zset-max-listpack-entries": "128", "zset-max-listpack-value": "64"}
    fields = every_field([str(n).rjust(length, "s") for n in range(count)])
    assert len(fields) == 6 + 5 * count
    key = keys.rolling_counter("acme", NOW_MS // 60_000)
    redis.zadd(key, fields)
    assert (redis.object("encoding", key) == b"listpack") is compact


def test_an_install_counting_into_hashes_is_rebuilt_into_sorted_sets(url: str) -> None:
    """An install upgraded from the hashes of ``vm:rt:`` (CHANGELOG): its counters' epoch
    says they existed, the new sentinel is missing, so the window is rebuilt; the hashes
    left behind are never read, and their sentinel goes (a rollback rebuilds them too)."""
    redis = SyncRedis.from_url(url)
    minute = NOW_MS // 60_000
    redis.set(keys.COUNTERS_EPOCH, "1")
    redis.set(keys.LEGACY_COUNTERS_SENTINEL, "1")
    redis.hset(f"vm:rt:{{p}}:{minute}", mapping={"received": 5, "cost_sum": "0.5"})
    rebuilt = {keys.rolling_counter(None, minute): BucketIncrement(
        int(time.time() * 1000) + BUCKET_TTL_MS, {"received": 3.0, "cost_sum": 0.25})}  # fmt: skip

    async def upgrade() -> list[bool]:
        async with AsyncRedis.from_url(url) as client:
            counters = RollingCounters(client)
            lost = await counters.lost()
            await counters.replace(rebuilt)
            return [lost, await counters.lost()]

    assert asyncio.run(upgrade()) == [True, False]
    assert redis.exists(keys.LEGACY_COUNTERS_SENTINEL) == 0
    read = read_realtime(redis, None, STAGES, NOW_MS)
    assert (read["artifacts_received"], read["ai_cost_usd"]) == (3, 0.25)
