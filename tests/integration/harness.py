"""A real pipeline for one test: its own topics, consumer group, Redis DB and chDB store.

Workers run as separate processes (``python -m runtime worker``) so they can be killed;
the embedded store is read through ``voicemon sql`` once the worker has let go of it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import (
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from aggregators.query.realtime import read_realtime
from consumers.batch import BatchOutcome, Message
from consumers.dead_letters import DeadLetters
from consumers.ingest import Ingest
from consumers.publish_once import OncePublisher
from consumers.raw_writer import RawWriter
from consumers.rolling_counters import RollingCounters
from consumers.store_leases import StoreLeases
from consumers.store_progress import StoreProgress
from consumers.stored_ids import StoredIds
from tests.ports import free_port
from voicemon.devtools.localstack import LocalStack
from voicemon.publisher import KafkaPublisher, delivered
from voicemon.redis_client import Replication, open_sync
from voicemon.settings import Settings
from voicemon.store import Client

REDIS_TEST_DB = 9
# The local stack's directory: var/ of the checkout, or a pytest-xdist worker's own one
# (tests/conftest.py sets TEST_STACK_HOME there).
STACK_HOME = Path(os.environ.get("TEST_STACK_HOME") or Path(__file__).resolve().parents[2] / "var")


_COORDINATOR_MOVING = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
}


class Pipeline:
    def __init__(
        self, base: Settings, workdir: Path, partitions: int = 4, redis_db: int = REDIS_TEST_DB
    ) -> None:
        suffix = uuid.uuid4().hex[:8]
        redis_url = base.redis_url.get_secret_value().rsplit("/", 1)[0] + f"/{redis_db}"
        self.env = {
            "VOICEMON_KAFKA_BOOTSTRAP": base.kafka_bootstrap,
            "VOICEMON_REDIS_URL": redis_url,
            "VOICEMON_CLICKHOUSE_DSN": f"chdb://{workdir / 'clickhouse'}",
            "VOICEMON_EVENTS_TOPIC": f"test-{suffix}.events",
            "VOICEMON_DLQ_TOPIC": f"test-{suffix}.events.dlq",
            "VOICEMON_SNAPSHOTS_TOPIC": f"test-{suffix}.snapshots",
            "VOICEMON_ORGANIZATIONS_TOPIC": f"test-{suffix}.organizations",
            "VOICEMON_CONSUMER_GROUP": f"voicemon-test-{suffix}",
            "VOICEMON_TOPIC_PARTITIONS": str(partitions),
            "VOICEMON_WORKER_DATA_DIR": str(workdir / "faust"),
            "VOICEMON_BATCH_MAX_SECONDS": "0.3",
            # A killed worker's partitions move after 6 s (the broker's floor), not 30 s.
            "VOICEMON_KAFKA_SESSION_TIMEOUT_SECONDS": "6",
            "VOICEMON_KAFKA_HEARTBEAT_INTERVAL_SECONDS": "1",
            "VOICEMON_KAFKA_COMMIT_INTERVAL_SECONDS": "0.5",
        }
        self.settings = Settings(
            **{k.removeprefix("VOICEMON_").lower(): v for k, v in self.env.items()}
        )
        self.workdir = workdir
        self.redis = Redis.from_url(redis_url)
        self.redis.flushdb()
        LocalStack(self.settings, workdir).ensure_topics()
        self.publisher = KafkaPublisher(base.kafka_bootstrap)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.published = 0
        self.started = 0

    def use_redis(self, **env: str) -> None:
        """Point the workers and the reads at another Redis (a Cluster, Sentinels): the
        ``VOICEMON_REDIS_*`` settings in ``env``."""
        self.env.update(env)
        self.settings = Settings(
            **{k.removeprefix("VOICEMON_").lower(): v for k, v in self.env.items()}
        )
        self.redis.close()
        self.redis = open_sync(self.settings)  # type: ignore[assignment]

    # -- producing -------------------------------------------------------------------------
    def publish(
        self, values: Iterable[bytes | dict[str, Any] | list[Any]], key: bytes | None = None
    ) -> None:
        """Send each value as one message, under ``key`` or else under keys that vary so that
        messages spread over the partitions."""
        topic = self.settings.events_topic
        sent = []
        for value in values:
            raw = value if isinstance(value, bytes) else orjson.dumps(value)
            self.published += 1
            message_key = key or f"k{self.published}".encode()
            sent.append(self.publisher.send(topic, raw, message_key))
        self.publisher.flush()  # also what the test sent with ``publisher.send`` before
        asyncio.run(delivered(sent, 30, topic))

    def consume(self) -> list[Message]:
        """Every message of the events topic so far, as ingest sees them."""
        ends = self.end_offsets(self.settings.events_topic)
        consumer = Consumer(
            {"bootstrap.servers": self.settings.kafka_bootstrap, "group.id": "probe",
             "enable.auto.commit": False}
        )  # fmt: skip
        consumer.assign([TopicPartition(self.settings.events_topic, p, 0) for p in ends])
        found: list[Message] = []
        deadline = time.monotonic() + 30
        while len(found) < sum(ends.values()) and time.monotonic() < deadline:
            for record in consumer.consume(500, timeout=1):
                if record.error() is None:
                    kind, at = record.timestamp()
                    found.append(
                        Message(
                            record.partition(),
                            record.offset(),
                            record.key(),
                            record.value(),
                            at,
                            kind == TIMESTAMP_LOG_APPEND_TIME,
                        )
                    )
        consumer.close()
        assert len(found) == sum(ends.values()), "not every published message was read back"
        return found

    def ingest(
        self,
        store: Client,
        messages: list[Message],
        now_ms: int,
        replication: Callable[[AsyncRedis], Replication] | None = None,
    ) -> BatchOutcome:
        """``messages`` made durable by ``Ingest`` in this process (role ``all``), against the
        real Redis, the real DLQ topic and ``store``, with the clock fixed at ``now_ms``
        (and the ``Replication`` that ``replication`` makes on the Redis client, if given)."""

        async def process() -> BatchOutcome:
            redis = AsyncRedis.from_url(self.env["VOICEMON_REDIS_URL"])
            try:
                dlq = DeadLetters(
                    KafkaPublisher(self.settings.kafka_bootstrap),
                    self.settings.kafka_bootstrap,
                    self.settings.dlq_topic,
                )
                ingest = Ingest(
                    RollingCounters(redis),
                    StoreProgress(redis),
                    self.settings.stages,
                    dead_letters=OncePublisher(redis, dlq),
                    raw_writer=RawWriter(store),
                    stored_ids=StoredIds(store),
                    leases=StoreLeases(redis),
                    replication=None if replication is None else replication(redis),
                    clock=lambda: now_ms / 1000,
                )
                return await ingest.process(messages)
            finally:
                await redis.aclose()

        return asyncio.run(process())

    # -- workers ---------------------------------------------------------------------------
    def start_worker(self, module: str = "runtime", **extra_env: str) -> subprocess.Popen[bytes]:
        port = free_port()
        # PYTHONFAULTHANDLER: a crash in native code logs the Python stacks (unless the
        # embedded store's engine has put its own handler in place)
        env = {**os.environ, **self.env, "VOICEMON_WORKER_WEB_PORT": str(port), **extra_env,
               "PYTHONFAULTHANDLER": "1"}  # fmt: skip
        self.started += 1
        log_path = self.workdir / f"worker-{self.started}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", module, "worker"], env=env, stdout=log, stderr=log
            )
        process.web_port = port  # type: ignore[attr-defined]
        process.log_path = log_path  # type: ignore[attr-defined]
        self.workers.append(process)
        return process

    def stop_workers(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.workers:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.workers.clear()

    def kill_worker(self, process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.workers.remove(process)

    # -- observing -------------------------------------------------------------------------
    def end_offsets(self, topic: str) -> dict[int, int]:
        consumer = Consumer(
            {"bootstrap.servers": self.settings.kafka_bootstrap, "group.id": "probe"}
        )
        try:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            return {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions
            }
        finally:
            consumer.close()

    def committed(self, group: str | None = None) -> dict[int, int]:
        group = group or self.settings.consumer_group
        consumer = Consumer({"bootstrap.servers": self.settings.kafka_bootstrap, "group.id": group})
        try:
            wanted = [
                TopicPartition(self.settings.events_topic, p)
                for p in range(self.settings.topic_partitions)
            ]
            return {tp.partition: tp.offset for tp in consumer.committed(wanted, timeout=10)}
        finally:
            consumer.close()

    def wait_consumed(self, timeout_s: float = 120, groups: Iterable[str] = ()) -> None:
        """Until the worker groups have committed every message published so far."""
        groups = list(groups) or [self.settings.consumer_group]
        ends = self.end_offsets(self.settings.events_topic)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                done = all(
                    self.committed(group).get(p, -1) >= end
                    for group in groups
                    for p, end in ends.items()
                    if end > 0
                )
            except KafkaException as error:  # a coordinator moving after a broker restart
                if error.args[0].code() not in _COORDINATOR_MOVING:
                    raise
                done = False
            if done:
                return
            for process in self.workers:
                assert process.poll() is None, f"worker exited with {process.returncode}"
            time.sleep(0.5)
        raise AssertionError(
            f"not consumed in {timeout_s}s: committed {self.committed()}, ends {ends}"
        )

    def realtime(
        self, organization_id: str | None = None, now_ms: int | None = None
    ) -> dict[str, Any]:
        return read_realtime(self.redis, organization_id, self.settings.stages, now_ms)

    def sql(self, query: str) -> list[dict[str, Any]]:
        """Rows of ``query`` on the test's embedded store (workers must be stopped)."""
        env = {**os.environ, **self.env}
        done = subprocess.run(
            [sys.executable, "-m", "runtime", "sql", query],
            env=env,
            capture_output=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
        rows: list[dict[str, Any]] = orjson.loads(done.stdout)
        return rows

    def dlq(self) -> list[tuple[bytes, dict[str, str]]]:
        """Every DLQ message: (value, headers)."""
        return [(value, headers) for _, value, headers in self.read_topic(self.settings.dlq_topic)]

    def snapshot_records(self) -> list[tuple[str, dict[str, Any]]]:
        """Every record on the snapshots topic: (key, decoded value), in publish order."""
        records = self.read_topic(self.settings.snapshots_topic)
        return [(key.decode(), orjson.loads(value)) for key, value, _ in records]

    def read_topic(self, topic: str) -> list[tuple[bytes, bytes, dict[str, str]]]:
        ends = self.end_offsets(topic)
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap,
                "group.id": f"dlq-{uuid.uuid4()}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        found: list[tuple[bytes, bytes, dict[str, str]]] = []
        deadline = time.monotonic() + 30
        while len(found) < sum(ends.values()) and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=1):
                if message.error() is None:
                    headers = {k: v.decode() for k, v in message.headers() or []}
                    found.append((message.key() or b"", message.value(), headers))
        consumer.close()
        return found
