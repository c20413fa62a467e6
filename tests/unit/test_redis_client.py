"""The clients ``voicemon.redis_client`` builds from the settings (no I/O: clients connect
lazily)."""

from __future__ import annotations

import redis.asyncio
from pydantic import SecretStr
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection

from voicemon import redis_client
from voicemon.settings import Settings


def test_replication_reaches_a_tls_cluster_primary_over_tls() -> None:
    """``Replication`` opens a client of its own per cluster primary: with ``rediss://`` it
    must speak TLS, with the cluster's password, as the cluster client does."""
    url = SecretStr("rediss://:p%40ss%23w@10.0.0.1:7000/0?ssl_cert_reqs=none")
    cluster = redis_client.open_async(Settings(redis_url=url, redis_cluster=True))
    assert isinstance(cluster, RedisCluster)
    node = redis.asyncio.Redis(
        host="10.0.0.2", port=7001, **redis_client._connection_options(cluster)
    )
    kwargs = node.connection_pool.connection_kwargs
    assert node.connection_pool.connection_class is SSLConnection
    assert kwargs["password"] == "p@ss#w"
    assert kwargs["ssl_cert_reqs"] == "none"


def test_replication_reaches_a_plain_cluster_primary_in_the_clear() -> None:
    url = SecretStr("redis://10.0.0.1:7000/0")
    cluster = redis_client.open_async(Settings(redis_url=url, redis_cluster=True))
    assert isinstance(cluster, RedisCluster)
    node = redis.asyncio.Redis(
        host="10.0.0.2", port=7001, **redis_client._connection_options(cluster)
    )
    assert node.connection_pool.connection_class is not SSLConnection
    assert node.connection_pool.connection_kwargs.get("password") is None


def _pool_options(client: object) -> dict[str, object]:
    assert isinstance(client, redis.asyncio.Redis)
    kwargs = client.connection_pool.connection_kwargs
    names = ("db", "username", "password", "ssl_cert_reqs", "ssl_ca_certs")
    return {name: kwargs.get(name) for name in names}


def test_a_sentinel_primary_is_reached_with_every_option_of_the_url() -> None:
    """Behind Sentinel, the URL gives the database, credentials and TLS options: each must
    be honoured as redis-py honours it for a single primary (``?db=`` included), not the
    database 0 silently, nor TLS without the URL's CA."""
    url = "rediss://user:p%40ss%23w@ignored:1/?db=3&ssl_cert_reqs=none&ssl_ca_certs=/etc/ca.pem"
    single = redis_client.open_async(Settings(redis_url=SecretStr(url)))
    sentinel = redis_client.open_async(
        Settings(redis_url=SecretStr(url), redis_sentinels=("10.0.0.1:26379",))
    )
    assert _pool_options(sentinel) == _pool_options(single)
    assert _pool_options(sentinel)["db"] == 3
