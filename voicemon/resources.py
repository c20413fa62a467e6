"""Opening voicemon's clients from the settings, the same way for the worker and the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from voicemon import store, store_migrations
from voicemon.kafka_client import confluent_logging, confluent_security
from voicemon.publisher import KafkaPublisher
from voicemon.settings import Settings

if TYPE_CHECKING:
    from voicemon.redis_client import AsyncRedis


@dataclass(frozen=True, slots=True)
class Resources:
    """Redis, the store (None for a worker that does not store) and a Kafka publisher."""

    redis: AsyncRedis
    store: store.Client | None
    publisher: KafkaPublisher


def connect_store(settings: Settings) -> store.Client:
    """A client of the configured store (blocking; raises store.StoreError)."""
    return store.connect(settings.clickhouse_dsn.get_secret_value())


def open_store(settings: Settings) -> store.Client:
    """A client of the configured store, migrated (blocking; raises store.StoreError)."""
    client = connect_store(settings)
    store_migrations.migrate(client, settings.clickhouse_cluster)
    return client


def open_resources(settings: Settings, *, with_store: bool = True) -> Resources:
    """Every client a process of voicemon needs (blocking: opens and migrates the store)."""
    from voicemon import redis_client  # here, so that a command using only the store does not

    return Resources(
        redis=redis_client.open_async(settings),
        store=open_store(settings) if with_store else None,
        publisher=KafkaPublisher(
            settings.kafka_bootstrap, **confluent_security(settings), **confluent_logging()
        ),
    )
