"""The Redis a benchmark measures voicemon on: the local stack's single primary (``single``), or
a Redis Cluster of three primaries the benchmark starts itself (``cluster``,
``tests.integration.redis_topology``) with the single primary's persistence settings, so that
the two are compared on the same terms.

Each topology gives the worker's environment (``VOICEMON_REDIS_URL``, and
``VOICEMON_REDIS_CLUSTER=true`` for the cluster), a client as voicemon opens it
(``voicemon.redis_client.open_sync``), the pids of its redis-server processes (one per shard)
and the server-side command time summed over its nodes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from redis import Redis

from tests.integration.redis_topology import APPENDFSYNC, redis_cluster
from voicemon.redis_client import SyncRedis, open_sync
from voicemon.settings import Settings

TOPOLOGIES = ("single", "cluster")


class TopologyError(Exception):
    """A topology cannot be compared with the others; the message says why."""


def aof_policy(config: dict[str, str]) -> str | None:
    """The ``appendfsync`` policy of a redis-server from its ``CONFIG GET appendonly
    appendfsync save`` (None: no AOF). The cluster's nodes never take RDB snapshots, so a
    server that does cannot be compared with them."""
    if config.get("save"):
        raise TopologyError(
            f"the single primary takes RDB snapshots (save {config['save']!r}); the cluster's "
            'nodes run with save "" as the local stack does: compare on a stack without them'
        )
    if config.get("appendonly") != "yes":
        return None
    policy = config.get("appendfsync", "everysec")
    if policy not in APPENDFSYNC:
        raise TopologyError(f"unknown appendfsync policy {policy!r} on the single primary")
    return policy


def describe(policy: str | None) -> str:
    return "no AOF" if policy is None else f"AOF, appendfsync {policy}"


@dataclass
class RedisTopology:
    """One Redis the worker can run against; ``nodes`` are clients of each of its servers."""

    name: str
    url: str
    cluster: bool
    nodes: list[Redis]
    pids: list[int]
    persistence: str

    @property
    def shards(self) -> int:
        return len(self.nodes)

    def env(self) -> dict[str, str]:
        return {
            "VOICEMON_REDIS_URL": self.url,
            "VOICEMON_REDIS_CLUSTER": "true" if self.cluster else "false",
        }

    def client(self) -> SyncRedis:
        """A client as the worker and the API open it (a RedisCluster on the cluster)."""
        return open_sync(Settings(redis_url=self.url, redis_cluster=self.cluster))

    def usec(self) -> dict[str, int]:
        """Server-side microseconds per command so far, summed over the nodes."""
        total: dict[str, int] = {}
        for node in self.nodes:
            for name, row in node.info("commandstats").items():
                command = name.removeprefix("cmdstat_")
                total[command] = total.get(command, 0) + int(row["usec"])
        return total


def single(url: str, pids: Sequence[int]) -> RedisTopology:
    """The local stack's primary, one DB of it (the benchmark claims and flushes it)."""
    client = Redis.from_url(url)
    policy = aof_policy(_persistence_config(client))
    return RedisTopology("single", url, False, [client], list(pids), describe(policy))


@contextmanager
def cluster(workdir: Path, like: Redis) -> Iterator[RedisTopology]:
    """Three primaries on free ports with the persistence settings of ``like`` (the single
    primary), stopped (SIGKILL) on exit; their data lives under ``workdir``."""
    policy = aof_policy(_persistence_config(like))
    with redis_cluster(workdir, appendfsync=policy) as started:
        nodes = [node.client() for node in started.nodes]
        pids = [node.process.pid for node in started.nodes if node.process is not None]
        try:
            yield RedisTopology("cluster", started.url, True, nodes, pids, describe(policy))
        finally:
            for node in nodes:
                node.close()


def flush_cluster(topology: RedisTopology) -> None:
    """Empty every node of a cluster the benchmark started (it owns all of it)."""
    if not topology.cluster:
        raise TopologyError("only a cluster the benchmark started is flushed whole")
    for node in topology.nodes:
        node.flushall()


def _persistence_config(client: Redis) -> dict[str, str]:
    found = client.config_get("appendonly", "appendfsync", "save")
    return {_text(k): _text(v) for k, v in found.items()}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
