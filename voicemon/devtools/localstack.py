"""The local stack without Docker: a real Kafka broker from its Maven Central jars and a
Debian ``redis-server``, as background processes with data and logs under one folder.

``up`` is idempotent (a running part is left alone) and returns once both answer and the
topics of CONTRACT §2 exist; ``down`` stops what ``up`` started.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import urlsplit

from confluent_kafka.admin import AdminClient

from voicemon import topics
from voicemon.kafka_client import confluent_config, confluent_security
from voicemon.settings import Settings

KAFKA_DIR = Path(__file__).resolve().parents[2] / "deploy" / "local" / "kafka"


class StackError(Exception):
    """A part of the local stack could not start. The message says what to do."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int


def kafka_endpoint(settings: Settings) -> Endpoint:
    host, _, port = settings.kafka_bootstrap.split(",")[0].rpartition(":")
    return Endpoint(host or "127.0.0.1", int(port))


def redis_endpoint(settings: Settings) -> Endpoint:
    url = urlsplit(settings.redis_url.get_secret_value())
    return Endpoint(url.hostname or "127.0.0.1", url.port or 6379)


def _listening(endpoint: Endpoint) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((endpoint.host, endpoint.port)) == 0


def _wait_listening(endpoint: Endpoint, name: str, log: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _listening(endpoint):
            return
        time.sleep(0.3)
    raise StackError(f"{name} did not answer on {endpoint.host}:{endpoint.port}; see {log}")


# The brokers this process started, by pid: ``_stop`` waits for them through their Popen.
_STARTED: dict[int, subprocess.Popen[bytes]] = {}


class LocalStack:
    def __init__(self, settings: Settings, home: Path) -> None:
        self.settings = settings
        self.home = home.resolve()
        self.logs = self.home / "log"

    def up(self) -> list[str]:
        self.logs.mkdir(parents=True, exist_ok=True)
        started = [self._start_redis(), self._start_kafka()]
        self.ensure_topics()
        return [part for part in started if part]

    def down(self) -> list[str]:
        return [name for name in ("kafka", "redis") if self.stop(name)]

    def stop(self, name: str) -> bool:
        """Stop one part ("kafka" or "redis") gracefully; ``up`` starts it again."""
        return _stop(self.home / name / f"{name}.pid")

    def status(self) -> dict[str, bool]:
        return {
            "kafka": _listening(kafka_endpoint(self.settings)),
            "redis": _listening(redis_endpoint(self.settings)),
        }

    def _start_redis(self) -> str | None:
        endpoint = redis_endpoint(self.settings)
        if _listening(endpoint):
            return None
        server = shutil.which("redis-server")
        if server is None:
            raise StackError("redis-server is not installed: apt-get install -y redis-server")
        data = self.home / "redis"
        data.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                server,
                "--bind",
                endpoint.host,
                "--port",
                str(endpoint.port),
                "--dir",
                str(data),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--daemonize",
                "yes",
                "--pidfile",
                str(data / "redis.pid"),
                "--logfile",
                str(self.logs / "redis.log"),
            ],
            check=True,
        )
        _wait_listening(endpoint, "redis-server", self.logs / "redis.log")
        return "redis"

    def _start_kafka(self) -> str | None:
        endpoint = kafka_endpoint(self.settings)
        if _listening(endpoint):
            return None
        self._fetch_jars()
        data = self.home / "kafka"
        data.mkdir(parents=True, exist_ok=True)
        config = data / "server.properties"
        template = Template((KAFKA_DIR / "server.properties.template").read_text())
        config.write_text(
            template.substitute(
                port=endpoint.port,
                controller_port=endpoint.port + 1,
                data_dir=data / "data",
                partitions=self.settings.topic_partitions,
            )
        )
        java = broker_java("-Xmx768m", self.logs)
        if not (data / "data" / "meta.properties").exists():
            subprocess.run(
                [
                    *java,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id(),
                    "-c",
                    str(config),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        log = self.logs / "kafka.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [*java, "kafka.Kafka", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _STARTED[process.pid] = process
        (data / "kafka.pid").write_text(str(process.pid))
        _wait_listening(endpoint, "Kafka", log)
        return "kafka"

    def _fetch_jars(self) -> None:
        if not any((KAFKA_DIR / "lib").glob("kafka_2.13-*.jar")):
            if shutil.which("mvn") is None:
                raise StackError("Maven is needed once to fetch the Kafka jars: install maven")
            subprocess.run(
                ["mvn", "-q", "-B", "-f", str(KAFKA_DIR / "pom.xml"), "package"], check=True
            )

    def ensure_topics(self, timeout_s: float = 60) -> None:
        """Create the topics of CONTRACT §2 that do not exist yet (``voicemon topics
        ensure``), and return once the broker leads all their partitions."""
        deadline = time.monotonic() + timeout_s
        specs = topics.topic_specs(self.settings)
        while True:
            try:
                topics.ensure(self.settings.kafka_bootstrap, specs,
                              confluent_security(self.settings))  # fmt: skip
                break
            except topics.TopicsError as error:
                if time.monotonic() > deadline:
                    raise StackError(str(error)) from None
                time.sleep(0.5)
        admin = AdminClient(confluent_config(self.settings))
        _wait_led(admin, {spec.name: spec.partitions for spec in specs}, deadline)


def all_led(topics: Mapping[str, Any], partitions: Mapping[str, int]) -> bool:
    """Whether every topic of ``partitions`` has at least its count of partitions, every one
    led (more partitions than configured are fine, as ``voicemon topics ensure`` accepts)."""
    return all(
        name in topics
        and len(topics[name].partitions) >= count
        and all(p.leader >= 0 for p in topics[name].partitions.values())
        for name, count in partitions.items()
    )


def _wait_led(admin: AdminClient, partitions: dict[str, int], deadline: float) -> None:
    """Until the broker's metadata shows every topic with all its partitions led: a consumer
    that joins its group before then is assigned nothing until its next metadata refresh."""
    while True:
        if all_led(admin.list_topics(timeout=10).topics, partitions):
            return
        if time.monotonic() > deadline:
            raise StackError(f"topics not ready on the broker: {sorted(partitions)}")
        time.sleep(0.2)


def broker_java(heap: str, logs: Path) -> list[str]:
    """The JVM command of a broker from the jars in deploy/local/kafka, with the options of
    the variables Kafka's own kafka-run-class.sh reads (the tests take a JVM that starts fast
    and idles cheaply: tests/conftest.py); a Kafka main class and its arguments follow."""
    return [
        "java",
        *shlex.split(os.environ.get("KAFKA_HEAP_OPTS", heap)),
        *shlex.split(os.environ.get("KAFKA_JVM_PERFORMANCE_OPTS", "")),
        "-cp",
        f"{KAFKA_DIR / 'lib'}/*",
        f"-Dkafka.logs.dir={logs}",
        "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
    ]


def cluster_id() -> str:
    """A random cluster id as Kafka's own Uuid.randomUuid makes it: never starting with "-",
    which StorageTool's `-t` would read as an option (1 format in 64 failed before)."""
    import base64
    import uuid

    while True:
        found = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not found.startswith("-"):
            return found


def _stop(pid_file: Path, timeout_s: float = 30) -> bool:
    if not pid_file.exists():
        return False
    text = pid_file.read_text().strip()
    pid_file.unlink()
    pid = int(text) if text.isdigit() else 0
    if pid <= 1:  # an empty or broken pid file: nothing to stop (0 would be our own group)
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    if not _wait_ended(pid, timeout_s):
        os.kill(pid, signal.SIGKILL)
        _wait_ended(pid, 2)
    return True


def _wait_ended(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not _ended(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def _ended(pid: int) -> bool:
    """Whether the process has ended. A broker ``up`` started in this process is asked
    through its ``Popen`` (which reaps it: an unreaped child stays a zombie, which signal 0
    still finds); any other process through the kernel."""
    started = _STARTED.get(pid)
    if started is not None:
        if started.poll() is None:
            return False
        del _STARTED[pid]
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False
