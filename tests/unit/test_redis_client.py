"""The clients ``voicemon.redis_client`` builds from the settings (no I/O: clients connect
lazily)."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio
from pydantic import SecretStr, ValidationError
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


def _passwords(client: object) -> tuple[list[object], object]:
    """The password of each Sentinel connection of a Sentinel-managed client, and the
    primary's."""
    pool: Any = getattr(client, "connection_pool")  # noqa: B009 (the union has no such field)
    sentinels = [s.connection_pool.connection_kwargs.get("password")
                 for s in pool.sentinel_manager.sentinels]  # fmt: skip
    return sentinels, pool.connection_kwargs.get("password")


def test_the_sentinels_own_password_reaches_the_sentinels_only() -> None:
    """``VOICEMON_REDIS_SENTINEL_PASSWORD`` authenticates to the Sentinels; the primary's
    password stays the URL's."""
    settings = Settings(redis_url=SecretStr("redis://:primary-pw@ignored:1/0"),
                        redis_sentinels=("10.0.0.1:26379", "10.0.0.2:26379"),
                        redis_sentinel_password=SecretStr("sentinel-pw"))  # fmt: skip
    for client in (redis_client.open_async(settings), redis_client.open_sync(settings)):
        assert _passwords(client) == (["sentinel-pw", "sentinel-pw"], "primary-pw")
    plain = Settings(redis_sentinels=("10.0.0.1:26379",))
    assert _passwords(redis_client.open_sync(plain)) == ([None], None)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [("redis://h:7000", True), ("redis://h:7000/0", True), ("redis://h:7000/?db=0", True),
     ("redis://h:7000/3", False), ("redis://h:7000/?db=2", False)],
)  # fmt: skip
def test_a_cluster_url_names_database_0_or_none(url: str, allowed: bool) -> None:
    if allowed:
        Settings(redis_url=SecretStr(url), redis_cluster=True)
        return
    with pytest.raises(ValidationError, match="database 0 only"):
        Settings(redis_url=SecretStr(url), redis_cluster=True)
    Settings(redis_url=SecretStr(url))  # one primary has them all
