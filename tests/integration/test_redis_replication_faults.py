"""Faults at the seams of ``voicemon.redis_client.Replication`` on a real Redis Cluster."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import SecretStr
from redis.asyncio.cluster import RedisCluster

from tests.integration.redis_topology import Cluster, Node, redis_cluster
from voicemon import redis_client
from voicemon.redis_client import Replication, ReplicationError
from voicemon.settings import Settings


def _move_slot(cluster: Cluster, slot: int, source: Any, target: Any, port: int) -> None:
    """Reshard one slot, keys included, as ``redis-cli --cluster reshard`` does (the clients
    are typed Any: redis-py's ``execute_command`` is untyped)."""
    source_id = source.execute_command("CLUSTER", "MYID")
    target_id = target.execute_command("CLUSTER", "MYID")
    target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    for key in source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000):
        source.execute_command("MIGRATE", "127.0.0.1", port, key, 0, 5000)
    for node in cluster.nodes:
        with node.client() as client:
            cast(Any, client).execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)


def test_a_slot_moved_under_the_wait_key_is_followed_not_a_stall(tmp_path: Path) -> None:
    """After a reshard moves the slot of the key ``Replication`` writes before WAIT, the
    next batch must still be judged on replicas (here: none, so ReplicationError, which the
    worker retries and reports) — not fail with MOVED on every retry forever."""
    with redis_cluster(tmp_path, appendfsync=None) as cluster:
        settings = Settings(redis_url=SecretStr(cluster.url), redis_cluster=True)

        async def main() -> list[BaseException]:
            client = redis_client.open_async(settings)
            assert isinstance(client, RedisCluster)
            replication = Replication(client, replicas=1, timeout_ms=10)
            seen: list[BaseException] = []
            with pytest.raises(ReplicationError):  # no replicas at all: refused, as it must
                await replication.confirm(await replication.primaries())
            moved = {}
            for name, (_, key) in replication._nodes.items():
                moved[name] = (key, client.keyslot(key))
            name, (key, slot) = next(iter(moved.items()))
            source = next(n for n in cluster.nodes if name.endswith(f":{n.port}"))
            target = next(n for n in cluster.nodes if n is not source)
            with source.client() as s, target.client() as t:
                _move_slot(cluster, slot, s, t, target.port)
            for _ in range(3):  # the worker's retries
                try:
                    await replication.confirm(await replication.primaries())
                except Exception as error:  # what the worker's retry sees
                    seen.append(error)
            await client.aclose()
            return seen

        seen = asyncio.run(main())
    assert [type(error) for error in seen][-1] is ReplicationError, seen
    assert "reached 0 replica(s)" in str(seen[-1]), seen  # WAIT ran again, on every primary


def test_a_cluster_primary_failover_is_followed_not_a_stall(tmp_path: Path) -> None:
    """A primary of a Cluster with two replicas each is SIGKILLed; a replica is promoted and
    the other follows it, so WAIT 1 can be met again. ``Replication``'s per-primary clients
    see nothing of the cluster client's redirections: they kept asking the dead node on every
    retry (20 of 20 over 10 s, ConnectionError) until the worker was restarted. Now the first
    retry refuses the batch and rereads the slot map, and the next confirms it."""
    with redis_cluster(tmp_path, appendfsync=None, replicas=2) as cluster:
        settings = Settings(redis_url=SecretStr(cluster.url), redis_cluster=True)

        async def confirmed(replication: Replication, tries: int) -> list[BaseException]:
            seen: list[BaseException] = []
            for _ in range(tries):  # the worker's retries of one batch
                try:
                    await replication.confirm(await replication.primaries())
                    return seen
                except Exception as error:
                    seen.append(error)
                    await asyncio.sleep(0.5)
            raise AssertionError(f"never confirmed: {seen[-3:]}")

        async def main() -> list[BaseException]:
            client = redis_client.open_async(settings)
            try:
                replication = Replication(client, replicas=1, timeout_ms=500)
                await confirmed(replication, 60)  # once the replicas have synced
                victim = next(node for node in cluster.nodes if _role(node) == "master")
                victim.kill()
                await asyncio.to_thread(cluster.wait_healthy)
                return await confirmed(replication, 10)
            finally:
                await client.aclose()

        seen = asyncio.run(main())
    assert all(isinstance(error, ReplicationError) for error in seen), seen
    assert len(seen) <= 2, seen


def _role(node: Node) -> str:
    with node.client() as client:
        return str(client.info("replication")["role"])
