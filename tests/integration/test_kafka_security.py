"""voicemon against a real Kafka broker that only speaks SASL_SSL: SCRAM-SHA-512 over TLS with
client certificates required, its certificates made for this test (voicemon/devtools/
secure_broker.py). Every client goes through the ``VOICEMON_KAFKA_*`` settings: the CLI's
admin client and readers, the worker (Faust's aiokafka consumer and producer, the DLQ and
snapshot publishers, the DLQ reader) and the producer helper. A refused login fails in
seconds, with one sentence."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis import Redis

from aggregators.query.realtime import read_realtime
from tests.ports import free_port
from voicemon.devtools.localstack import LocalStack, kafka_endpoint
from voicemon.devtools.secure_broker import SecureBroker, make_tls_files
from voicemon.kafka_client import confluent_security
from voicemon.producer import EventProducer
from voicemon.settings import Settings
from voicemon.topics import message_count

USER, PASSWORD = "voicemon", secrets.token_urlsafe(16)
REDIS_DB = 11
ARTIFACTS = 40


@pytest.fixture(scope="module")
def secure_broker(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecureBroker]:
    home = tmp_path_factory.mktemp("secure-kafka")
    port = kafka_endpoint(stack).port + 100  # beside this checkout's own broker
    broker = SecureBroker(home, port, {USER: PASSWORD}, make_tls_files(home / "tls"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def secure_env(stack: Settings, secure_broker: SecureBroker, tmp_path: Path) -> dict[str, str]:
    """The environment of a voicemon process that reaches Kafka only over SASL_SSL."""
    redis_url = stack.redis_url.get_secret_value().rsplit("/", 1)[0] + f"/{REDIS_DB}"
    Redis.from_url(redis_url).flushdb()
    return {
        **os.environ,
        **secure_broker.client_env(USER, PASSWORD),
        "VOICEMON_REDIS_URL": redis_url,
        "VOICEMON_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'clickhouse'}",
        "VOICEMON_WORKER_DATA_DIR": str(tmp_path / "faust"),
        "VOICEMON_WORKER_WEB_PORT": str(free_port()),
        "VOICEMON_BATCH_MAX_SECONDS": "0.3",
    }


def settings_of(env: dict[str, str]) -> Settings:
    return Settings(**{key.removeprefix("VOICEMON_").lower(): value
                       for key, value in env.items() if key.startswith("VOICEMON_")})  # fmt: skip


def voicemon(
    env: dict[str, str], *args: str, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runtime", *args], env=env, capture_output=True,
                          text=True, timeout=timeout_s)  # fmt: skip


def events(now_ms: int) -> list[dict[str, Any]]:
    received = {"event_type": "artifact_received", "occurred_at": now_ms - 1000,
                "organization_id": "acme"}  # fmt: skip
    return [{"event_id": f"e{n}", "artifact_id": f"a{n}", **received} for n in range(ARTIFACTS)]


def test_worker_producer_helper_and_cli_work_over_sasl_ssl(
    secure_env: dict[str, str], tmp_path: Path
) -> None:
    settings = settings_of(secure_env)
    ensured = voicemon(secure_env, "topics", "ensure", "--json")
    assert ensured.returncode == 0, ensured.stdout + ensured.stderr
    assert {r["state"] for r in orjson.loads(ensured.stdout)} == {"created"}
    LocalStack(settings, tmp_path).ensure_topics()  # verified, and led, over SASL_SSL too

    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen([sys.executable, "-m", "runtime", "worker"], env=secure_env,
                              stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        with EventProducer(settings.kafka_bootstrap, settings.events_topic,
                           **confluent_security(settings)) as producer:  # fmt: skip
            for event in events(int(time.time() * 1000)):
                producer.publish(event)
            producer.publish_raw(b'{"event_id": ', b"broken")  # to the DLQ, over SASL_SSL
            producer.flush()

        redis = Redis.from_url(settings.redis_url.get_secret_value())
        deadline = time.monotonic() + 60
        while read_realtime(redis, "acme", settings.stages)["artifacts_received"] < ARTIFACTS:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(0.5)
        assert read_realtime(redis, "acme", settings.stages)["artifacts_received"] == ARTIFACTS

        security = confluent_security(settings)
        while message_count(settings.kafka_bootstrap, settings.snapshots_topic, security) == 0:
            assert time.monotonic() < deadline, "the closer published no snapshot over SASL_SSL"
            time.sleep(0.5)
        counted = voicemon(secure_env, "dlq-count", "--json")
        assert counted.returncode == 0, counted.stdout + counted.stderr
        assert orjson.loads(counted.stdout) == {"dlq_messages": 1}
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    assert PASSWORD not in (tmp_path / "worker.log").read_text()


def one_sentence(done: subprocess.CompletedProcess[str]) -> str:
    output = " ".join((done.stdout + done.stderr).split())
    assert "Traceback" not in output and PASSWORD not in output, output
    assert output.startswith("error: ") and output.count(": check ") == 1, output
    return output


def test_a_wrong_password_fails_fast_with_one_sentence(secure_env: dict[str, str]) -> None:
    wrong = {**secure_env, "VOICEMON_KAFKA_SASL_PASSWORD": "not-" + PASSWORD}
    for command in (["topics", "ensure"], ["worker"]):
        started = time.monotonic()
        done = voicemon(wrong, *command, timeout_s=30)
        assert done.returncode == 1 and time.monotonic() - started < 15, done.stdout + done.stderr
        assert f"refused authentication (SCRAM-SHA-512 as user '{USER}')" in one_sentence(done)


def test_a_client_without_its_certificate_is_refused_in_one_sentence(
    secure_env: dict[str, str],
) -> None:
    client_certificate = ("VOICEMON_KAFKA_SSL_CERT", "VOICEMON_KAFKA_SSL_KEY")
    no_certificate = {key: value for key, value in secure_env.items()
                      if not key.startswith(client_certificate)}  # fmt: skip
    done = voicemon(no_certificate, "dlq-count", timeout_s=30)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "TLS handshake with Kafka at" in one_sentence(done)
