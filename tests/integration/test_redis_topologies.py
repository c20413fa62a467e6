"""Ingest on a Redis Cluster and across a Sentinel failover, against the reference: the
topologies are started by the tests (``tests.integration.redis_topology``), the worker is the
real one, in its own process."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from redis.exceptions import RedisError

from aggregators.query.realtime import read_realtime
from consumers.rolling_counters import CLUSTER_CALLS_IN_FLIGHT, RollingCounters
from consumers.rows import Position, RawRow
from tests import reference
from tests.integration.harness import Pipeline
from tests.integration.redis_topology import redis_cluster, sentinel_group
from tests.integration.test_ingest import raw_counts, realtime_counts, reference_counts
from voicemon import keys, redis_client
from voicemon.devtools.loadgen import LoadMix
from voicemon.event import PipelineEvent, validate_event
from voicemon.settings import Settings


def now_ms() -> int:
    return int(time.time() * 1000)


def accepted(body: dict[str, Any], now: int) -> PipelineEvent:
    event = validate_event(body, now_ms=now, stages=frozenset())
    assert isinstance(event, PipelineEvent), event
    return event


def stream(pipeline: Pipeline, items_count: int, seed: int) -> tuple[list[dict[str, Any]], int]:
    """Publish a mix of batches and single events, with duplicates and malformed messages;
    returns the events and the number of malformed messages."""
    mix = LoadMix(seed=seed, organizations=7, stages=pipeline.settings.stages,
                  duplicate_share=0.03, malformed_share=0.002)  # fmt: skip
    clock = iter(lambda: now_ms(), None)
    items = [item for _, item in zip(range(items_count), mix.stream(clock), strict=False)]
    events = [item for item in items if isinstance(item, dict)]
    rng = random.Random(seed)
    messages: list[Any] = []
    i = 0
    while i < len(items):
        if isinstance(items[i], bytes) or rng.random() < 0.3:
            messages.append(items[i])
            i += 1
            continue
        size = rng.randint(2, 100)
        chunk = [x for x in items[i : i + size] if isinstance(x, dict)]
        messages.extend([chunk] if chunk else [])
        messages.extend(x for x in items[i : i + size] if isinstance(x, bytes))
        i += size
    pipeline.publish(messages)
    return events, len(items) - len(events)


def assert_exact(pipeline: Pipeline, events: list[dict[str, Any]], malformed: int) -> None:
    """Real-time numbers (platform and every organization), raw rows and the DLQ match the
    reference: nothing lost, nothing counted or stored twice."""
    stages = pipeline.settings.stages
    assert realtime_counts(pipeline.realtime()) == reference_counts(events, stages)
    for organization in {event.get("organization_id") for event in events} - {None}:
        mine = [event for event in events if event.get("organization_id") == organization]
        view = realtime_counts(pipeline.realtime(organization))
        assert view == reference_counts(mine, stages), organization
    pipeline.stop_workers()
    unique = reference.first_occurrences(events)
    assert sum(raw_counts(pipeline).values()) == len(unique)
    rows = pipeline.sql(
        "SELECT count() AS n, uniqExact(event_id) AS u FROM voicemon.pipeline_events"
    )
    assert rows == [{"n": len(unique), "u": len(unique)}]
    assert len(pipeline.dlq()) == malformed


def progress(pipeline: Pipeline, beyond: int, timeout_s: float = 90) -> float:
    """Wait until the platform counts more than ``beyond`` artifacts; returns when."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if pipeline.realtime()["artifacts_received"] > beyond:
                return time.monotonic()
        except Exception:  # Redis failing over: read again
            pass
        assert time.monotonic() < deadline, "the worker made no progress"
        time.sleep(0.05)


def counted_so_far(pipeline: Pipeline, timeout_s: float = 60) -> int:
    """The platform's artifacts received, read again while no primary answers."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return int(pipeline.realtime()["artifacts_received"])
        except RedisError:
            assert time.monotonic() < deadline, "no Redis primary answered"
            time.sleep(0.1)


def test_ingest_on_a_redis_cluster_matches_the_reference(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    with redis_cluster(tmp_path / "cluster") as cluster:
        pipeline.use_redis(VOICEMON_REDIS_URL=cluster.url, VOICEMON_REDIS_CLUSTER="true")
        events, malformed = stream(pipeline, 8_000, seed=11)
        pipeline.start_worker(VOICEMON_BATCH_MAX_MESSAGES="200")
        pipeline.wait_consumed(timeout_s=180)
        # The markers' shard groups are spread over the three primaries.
        per_node = [node.client().dbsize() for node in cluster.nodes]
        assert all(size > keys.SEEN_GROUPS // 3 for size in per_node), per_node
        assert_exact(pipeline, events, malformed)


@pytest.mark.parametrize("organizations", [CLUSTER_CALLS_IN_FLIGHT, 600])
def test_a_chunk_of_many_organizations_is_counted_on_a_cluster(
    tmp_path: Path, organizations: int
) -> None:
    """One increments call per organization in a chunk: sent all at once, 600 of them were
    refused by the cluster client (MaxConnectionsError: 100 connections per node), on every
    retry, and ingest stalled. In flight at most ``CLUSTER_CALLS_IN_FLIGHT`` now. (A burst of
    calls as a new cluster client's very first commands may fail in redis-py 8.1 while it
    sets up: AttributeError on a connection's writer; the batch is then retried.)"""
    now = now_ms()
    rows = [RawRow(accepted({"event_id": f"e{i}", "event_type": "artifact_received",
                             "occurred_at": now - 1000, "artifact_id": f"a{i}",
                             "organization_id": f"org-{i}"}, now), Position(0, i, 0))
            for i in range(organizations)]  # fmt: skip
    with redis_cluster(tmp_path / "cluster", appendfsync=None) as cluster:
        settings = Settings(redis_url=SecretStr(cluster.url), redis_cluster=True)

        async def count() -> None:
            client = redis_client.open_async(settings)
            try:
                await client.ping()  # as the worker's first calls do (see the note below)
                await RollingCounters(client).add(rows, now)
            finally:
                await client.aclose()

        asyncio.run(count())
        with redis_client.open_sync(settings) as client:
            assert read_realtime(client, None, (), now)["artifacts_received"] == organizations
            for i in (0, organizations - 1):
                assert read_realtime(client, f"org-{i}", (), now)["artifacts_received"] == 1


def test_a_cluster_node_killed_and_restarted_mid_stream_ends_exact(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    with redis_cluster(tmp_path / "cluster") as cluster:
        pipeline.use_redis(VOICEMON_REDIS_URL=cluster.url, VOICEMON_REDIS_CLUSTER="true")
        events, malformed = stream(pipeline, 12_000, seed=12)
        pipeline.start_worker(VOICEMON_BATCH_MAX_MESSAGES="40")
        progress(pipeline, 300)
        victim = cluster.nodes[1]
        victim.kill()
        time.sleep(3)  # past the node timeout: the cluster is down until the node is back
        victim.start()
        cluster.wait_healthy()
        pipeline.wait_consumed(timeout_s=240)
        assert_exact(pipeline, events, malformed)


@pytest.mark.timeout(600)
def test_sigkill_of_the_sentinel_primary_mid_stream_ends_exact(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    with sentinel_group(tmp_path / "sentinel") as group:
        pipeline.use_redis(VOICEMON_REDIS_SENTINELS=group.addresses,
                           VOICEMON_REDIS_WAIT_REPLICAS="1",
                           VOICEMON_REDIS_WAIT_TIMEOUT_MS="500")  # fmt: skip
        events, malformed = stream(pipeline, 12_000, seed=13)
        pipeline.start_worker(VOICEMON_BATCH_MAX_MESSAGES="40")
        progress(pipeline, 300)
        old = group.node_on(group.primary_port())
        old.kill()
        killed_at = time.monotonic()
        deadline = killed_at + 60
        while group.primary_port() == old.port:
            assert time.monotonic() < deadline, "the Sentinels did not fail over"
            time.sleep(0.1)
        failed_over = time.monotonic() - killed_at
        old.start()  # empty: the Sentinels make it a replica of the new primary
        group.wait_settled(old)  # before that, a client may be sent to it and read it alone
        before = counted_so_far(pipeline)
        recovered = progress(pipeline, before) - killed_at
        print(
            f"Sentinel failover after {failed_over:.1f} s, counting again after {recovered:.1f} s"
        )
        pipeline.wait_consumed(timeout_s=240)
        assert_exact(pipeline, events, malformed)


def test_the_primary_is_found_through_sentinels_that_require_a_password(tmp_path: Path) -> None:
    """Sentinels with ``requirepass``: found with ``VOICEMON_REDIS_SENTINEL_PASSWORD``,
    refused without it (a clear error, not a hang); the real-time read goes through."""
    with sentinel_group(tmp_path / "sentinel", sentinel_password="s3nt!nel") as group:
        found = Settings(redis_sentinels=tuple(group.addresses.split(",")),
                         redis_sentinel_password=SecretStr("s3nt!nel"))  # fmt: skip
        client = redis_client.open_sync(found, timeout_s=2)
        client.zadd(keys.rolling_counter("acme", now_ms() // 60_000), {"received": 2})
        assert read_realtime(client, "acme", ())["artifacts_received"] == 2
        with group.primary.client() as primary:
            assert primary.exists(keys.rolling_counter("acme", now_ms() // 60_000))
        anonymous = Settings(redis_sentinels=tuple(group.addresses.split(",")))
        refused = redis_client.open_sync(anonymous, timeout_s=2)
        with pytest.raises(RedisError, match=r"No master found|NOAUTH|Authentication"):
            refused.ping()
