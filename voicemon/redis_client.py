"""Redis clients from the settings: one primary (a URL), a primary behind Sentinel, or a Redis
Cluster, the same way for the worker, the API and the CLI; and ``Replication``, which makes a
batch's writes wait for replicas before its offsets commit.

Every Redis call is bounded in time: an outage raises and the caller retries with backoff.
With Sentinel, redis-py asks the Sentinels for the primary on every new connection and
drops its connections when the primary it reached has become a replica (``READONLY``), so
a failover looks to voicemon like a short outage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any, TypeVar, cast

import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster as AsyncCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

from voicemon import keys
from voicemon.settings import Settings, sentinel_address

T = TypeVar("T")

TIMEOUT_S = 10.0

AsyncRedis = redis.asyncio.Redis | AsyncCluster  # what voicemon's async code talks to
SyncRedis = redis.Redis | RedisCluster
Primaries = tuple[str, ...]  # replication ids (``Replication.primaries``)


class ReplicationError(redis.exceptions.ConnectionError):
    """A batch's writes reached fewer replicas than VOICEMON_REDIS_WAIT_REPLICAS in time: the
    batch is retried like one that met an outage (its offsets are not committed)."""


def _url_options(url: str) -> dict[str, Any]:
    """Database, credentials, TLS and their options of a redis URL, parsed as redis-py parses
    it for a single primary, for Sentinel-managed connections (the host is Sentinel's)."""
    options: dict[str, Any] = dict(parse_url(url))
    for name in ("host", "port", "path"):
        options.pop(name, None)
    connection_class = options.pop("connection_class", None)
    if isinstance(connection_class, type) and issubclass(connection_class, SSLConnection):
        options["ssl"] = True
    return options


def sentinel_addresses(settings: Settings) -> list[tuple[str, int]]:
    return [sentinel_address(item) for item in settings.redis_sentinels]


def _sentinel_options(settings: Settings, bounded: Mapping[str, Any]) -> dict[str, Any]:
    """How to reach the Sentinels themselves: bounded in time, with their own password."""
    password = settings.redis_sentinel_password
    return {**bounded, **({} if password is None else {"password": password.get_secret_value()})}


def open_async(settings: Settings, *, timeout_s: float = TIMEOUT_S) -> AsyncRedis:
    """The async client of the configured Redis (no I/O yet)."""
    url = settings.redis_url.get_secret_value()
    bounded: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    if settings.redis_sentinels:
        addresses = sentinel_addresses(settings)
        sentinel = AsyncSentinel(addresses, sentinel_kwargs=_sentinel_options(settings, bounded),
                                 **bounded)  # type: ignore[no-untyped-call]  # fmt: skip
        primary = sentinel.master_for(settings.redis_sentinel_master, **_url_options(url))
        return cast(redis.asyncio.Redis, primary)
    if settings.redis_cluster:
        return AsyncCluster.from_url(url, **bounded)
    return redis.asyncio.Redis.from_url(url, **bounded)


def open_sync(
    settings: Settings, *, timeout_s: float = TIMEOUT_S, connect_timeout_s: float = TIMEOUT_S
) -> SyncRedis:
    """The blocking client of the configured Redis (no I/O yet)."""
    url = settings.redis_url.get_secret_value()
    bounded: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": connect_timeout_s,
    }
    if settings.redis_sentinels:
        addresses = sentinel_addresses(settings)
        sentinel = Sentinel(addresses, sentinel_kwargs=_sentinel_options(settings, bounded),
                            **bounded)  # type: ignore[no-untyped-call]  # fmt: skip
        name, options = settings.redis_sentinel_master, _url_options(url)
        primary = sentinel.master_for(name, **options)  # type: ignore[no-untyped-call]
        return cast(redis.Redis, primary)
    if settings.redis_cluster:
        return RedisCluster.from_url(url, **bounded)
    return redis.Redis.from_url(url, **bounded)


class Replication:
    """``WAIT replicas timeout`` after a batch's writes, on every primary voicemon writes to.

    WAIT counts the replicas that acknowledged the writes made *on its own connection*, so it
    is sent in one pipeline after a write of its own (``keys.replicated``): Redis replicates
    in order, so once that write is acknowledged, so is every write acknowledged to any
    client before it. On a Redis Cluster this is done on every primary."""

    def __init__(self, client: AsyncRedis, replicas: int, timeout_ms: int) -> None:
        self._client = client
        self._replicas = replicas
        self._timeout_ms = timeout_ms
        self._nodes: dict[str, tuple[redis.asyncio.Redis, str]] = {}
        self._primaries: frozenset[str] = frozenset()  # the names ``_nodes`` was built for

    @property
    def enabled(self) -> bool:
        return self._replicas > 0

    async def primaries(self) -> Primaries:
        """The replication ids of the primaries now, taken before a batch's first write: a
        failover in the middle of the batch changes them (a promoted replica starts a new
        one), and ``confirm`` then refuses the batch, whose writes may be on the old primary
        alone."""
        if not self.enabled:
            return ()
        targets = await self._targets()
        return tuple(await self._on_primaries(_replication_id(c) for c, _ in targets))

    async def confirm(self, primaries: Primaries) -> None:
        """Return once every write acknowledged so far is on ``replicas`` replicas, on the
        ``primaries`` that took the batch's writes; raise ReplicationError if not within the
        timeout, or if a primary changed since."""
        if not self.enabled:
            return
        targets = await self._targets()
        found = await self._on_primaries(self._wait(c, key) for c, key in targets)
        if tuple(replid for replid, _ in found) != primaries:
            raise ReplicationError("the Redis primary changed during the batch (a failover)")
        acknowledged = min(count for _, count in found)
        if acknowledged < self._replicas:
            raise ReplicationError(
                f"Redis writes reached {acknowledged} replica(s) within "
                f"{self._timeout_ms} ms, fewer than VOICEMON_REDIS_WAIT_REPLICAS={self._replicas}"
            )

    async def _on_primaries(self, calls: Iterable[Awaitable[T]]) -> list[T]:
        """``calls``, one per primary, at once. On a Redis Cluster, a slot that moved (a
        reshard) or a primary gone (a failover, its replica promoted) drops the per-primary
        clients and rereads the slot map, so that the batch's retry finds the primaries of
        now; the per-primary clients see nothing of the cluster client's own redirections."""
        found = await asyncio.gather(*calls, return_exceptions=True)  # all done, none left
        failed = [error for error in found if isinstance(error, BaseException)]
        if not failed:
            return cast(list[T], found)
        changed = (redis.exceptions.AskError, redis.exceptions.ConnectionError,
                   redis.exceptions.TimeoutError)  # fmt: skip
        error = next((e for e in failed if isinstance(e, changed)), failed[0])
        if not isinstance(self._client, AsyncCluster) or not isinstance(error, changed):
            raise error
        await self._close_nodes()
        await self._client.nodes_manager.initialize()
        raise ReplicationError(f"a Redis Cluster primary moved or went away: {error}") from error

    async def _targets(self) -> list[tuple[redis.asyncio.Redis | AsyncCluster, str]]:
        if isinstance(self._client, AsyncCluster):
            return list(await self._cluster_targets(self._client))
        return [(self._client, keys.replicated("{p}"))]

    async def _close_nodes(self) -> None:
        """Drop the per-primary clients and their keys: the next call finds a key of a slot
        each primary serves then. Dropped before they are closed, and closed all at once
        whatever each close meets (a dead primary's may fail)."""
        dropped, self._nodes, self._primaries = self._nodes, {}, frozenset()
        await asyncio.gather(*(client.aclose() for client, _ in dropped.values()),
                             return_exceptions=True)  # fmt: skip

    async def _wait(self, client: redis.asyncio.Redis | AsyncCluster, key: str) -> tuple[str, int]:
        """On one connection: a write, WAIT, and the replication id of the server."""
        pipe = client.pipeline(transaction=False)
        pipe.set(key, 1, px=60_000)
        pipe.execute_command("WAIT", self._replicas, self._timeout_ms)
        pipe.info("replication")
        _, acknowledged, info = await pipe.execute()
        return str(info["master_replid"]), int(acknowledged)

    async def _cluster_targets(
        self, cluster: AsyncCluster
    ) -> list[tuple[redis.asyncio.Redis, str]]:
        """Per primary, a client of its own and a key of a slot it serves."""
        if not cluster.nodes_manager.slots_cache:
            await cluster.initialize()
        primaries = {node.name: node for node in cluster.get_primaries()}
        if set(primaries) != self._primaries:  # a primary without slots has no key
            await self._close_nodes()
            self._primaries = frozenset(primaries)
            found = _keys_per_node(cluster, set(primaries))
            for name, key in found.items():
                node = primaries[name]
                client = redis.asyncio.Redis(
                    host=node.host, port=int(node.port), **_connection_options(cluster)
                )
                self._nodes[name] = (client, key)
        return list(self._nodes.values())


async def _replication_id(client: redis.asyncio.Redis | AsyncCluster) -> str:
    info = await client.info("replication")
    return str(info["master_replid"])


def _keys_per_node(cluster: AsyncCluster, names: set[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    tag = 0
    while len(found) < len(names) and tag < 100_000:
        key = keys.replicated("{w" + str(tag) + "}")
        node = cluster.nodes_manager.get_node_from_slot(cluster.keyslot(key))
        if node.name in names:
            found.setdefault(node.name, key)
        tag += 1
    return found


def _connection_options(cluster: AsyncCluster) -> Mapping[str, Any]:
    """What a client of one primary needs to reach it as the cluster client does: the
    credentials, the timeouts and, with ``rediss://``, TLS and its options."""
    kwargs = cluster.get_connection_kwargs()
    wanted = ("password", "username", "credential_provider", "socket_timeout",
              "socket_connect_timeout")  # fmt: skip
    options = {name: kwargs[name] for name in wanted if kwargs.get(name) is not None}
    connection_class = kwargs.get("connection_class")
    if isinstance(connection_class, type) and issubclass(connection_class, SSLConnection):
        options["ssl"] = True
        options.update((name, value) for name, value in kwargs.items()
                       if name.startswith("ssl_") and value is not None)  # fmt: skip
    return options
