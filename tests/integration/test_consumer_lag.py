"""Consumer lag from the broker's view, against the real broker: it rises while nothing
consumes and while an outage pauses ingest (exported by a worker started during the outage),
returns to 0 once the group has consumed everything, and is measured through broker restarts
without ending the process."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

import consumers.lag as lag_module
from consumers.lag import REOPEN_AFTER_S, BrokerLag, LagUnavailable, PartitionOffsets
from tests.integration.harness import Pipeline
from tests.ports import free_port
from voicemon.devtools.localstack import LocalStack
from voicemon.settings import Settings


def event(n: int) -> dict[str, Any]:
    return {
        "event_id": f"lag-{n}",
        "event_type": "artifact_received",
        "occurred_at": int(time.time() * 1000),
        "artifact_id": f"a-{n}",
    }


def broker_lag(pipeline: Pipeline) -> BrokerLag:
    settings = pipeline.settings
    config = {"bootstrap.servers": settings.kafka_bootstrap}
    return BrokerLag(config, settings.worker_group, settings.events_topic)


def scrape(worker: Any) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The worker's /metrics: metric name -> labels -> value."""
    url = f"http://127.0.0.1:{worker.web_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            found.setdefault(sample.name, {})[labels] = sample.value
    return found


def lag_of(metrics: dict[str, dict[tuple[tuple[str, str], ...], float]]) -> dict[str, float]:
    return {
        dict(labels)["partition"]: value
        for labels, value in metrics.get("voicemon_consumer_lag_messages", {}).items()
    }


def measured(pipeline: Pipeline, timeout_s: float = 60) -> list[PartitionOffsets]:
    """The worker group's offsets, once the broker answers: a group's coordinator still
    loading (NOT_COORDINATOR, after the broker restarted for an earlier test) is
    ``LagUnavailable``, which the worker's exporter also just tries again."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return broker_lag(pipeline).measure()
        except LagUnavailable:
            assert time.monotonic() < deadline, f"no lag measured within {timeout_s}s"
            time.sleep(0.5)


def wait_for(what: str, check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} not seen within {timeout_s}s"
        time.sleep(0.5)


def test_lag_is_what_the_group_has_not_committed_and_returns_to_zero(pipeline: Pipeline) -> None:
    pipeline.publish([event(n) for n in range(40)])
    offsets = measured(pipeline)
    assert len(offsets) == pipeline.settings.topic_partitions
    assert sum(o.lag for o in offsets) == 40  # nothing consumed yet: every message
    assert all(o.committed is None for o in offsets)
    assert {o.partition: o.end for o in offsets} == pipeline.end_offsets(
        pipeline.settings.events_topic
    )

    pipeline.start_worker()
    pipeline.wait_consumed(60)
    offsets = measured(pipeline)
    assert [o.lag for o in offsets] == [0] * len(offsets)
    assert all(o.committed == o.end for o in offsets if o.end > 0)


def test_a_worker_started_during_an_outage_exports_the_lag_and_it_clears_after(
    pipeline: Pipeline,
) -> None:
    group = pipeline.settings.worker_group
    pipeline.publish([event(n) for n in range(25)])
    # Redis is down (nothing listens on this port) from the worker's first second: ingest
    # pauses, no closer lease can be taken, and the lag must still be exported.
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    paused = pipeline.start_worker(VOICEMON_REDIS_URL=dead_redis)

    def paused_with_lag(total: int) -> Callable[[], bool]:
        def check() -> bool:
            metrics = scrape(paused)
            ingest_paused = metrics.get("voicemon_ingest_paused", {})
            return (
                sum(lag_of(metrics).values()) == total
                and ingest_paused.get((("dependency", "redis"),)) == 1
            )

        return check

    wait_for("lag of 25 from the paused worker", paused_with_lag(25), 60)
    pipeline.publish([event(n) for n in range(25, 60)])
    wait_for("the lag rising to 60 while paused", paused_with_lag(60), 30)
    metrics = scrape(paused)
    assert metrics["voicemon_closer_leader"] == {(): 0}  # no lease without Redis
    assert {dict(k)["consumer_group"] for k in metrics["voicemon_consumer_lag_messages"]} == {group}
    assert sum(metrics["voicemon_input_messages_total"].values()) == 60
    pipeline.kill_worker(paused)

    healthy = pipeline.start_worker()
    pipeline.wait_consumed(90)

    def caught_up() -> bool:
        metrics = scrape(healthy)
        lag = lag_of(metrics)
        committed = metrics.get("voicemon_consumer_committed_messages_total", {})
        return (
            len(lag) == pipeline.settings.topic_partitions
            and set(lag.values()) == {0}
            and sum(committed.values()) == 60
        )

    wait_for("lag back to 0 on every partition", caught_up, 30)


def test_measuring_through_broker_restarts_never_ends_the_process(
    stack: Settings, tmp_path: Path
) -> None:
    """Measured in a child process, on a broker of the test's own restarted three times: the
    admin client's offset fetch of librdkafka 2.16 died of SIGSEGV on the NOT_COORDINATOR a
    restarted broker answers while the group's coordinator loads (consumers/lag.py)."""
    own = LocalStack(stack.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"}),
                     tmp_path / "broker")  # fmt: skip
    own.up()
    bootstrap, group, topic = own.settings.kafka_bootstrap, "lag-restarts", stack.events_topic
    committer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    committer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)  # a group to load
    committer.close()
    child = subprocess.Popen([sys.executable, "-m", "tests.integration.lag_child", bootstrap,
                              group, topic], stdout=subprocess.PIPE, text=True)  # fmt: skip
    lines = _lines(child.stdout)
    try:
        for restart in range(3):
            _wait_for_line(lines, "measured", child, f"a measurement before restart {restart + 1}")
            own.stop("kafka")
            own.up()
        _wait_for_line(lines, "measured", child, "a measurement after the last restart")
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()
        own.stop("kafka")


def _lines(stream: IO[str] | None) -> list[str]:
    """The child's lines as they come, gathered by a thread (the list grows)."""
    assert stream is not None
    found: list[str] = []

    def gather() -> None:
        for line in stream:
            found.append(line)

    threading.Thread(target=gather, daemon=True).start()
    return found


def _wait_for_line(lines: list[str], wanted: str, child: subprocess.Popen[str], what: str) -> None:
    """Wait for a new line ``wanted`` after the ones seen so far; fail if the child ends. A
    restarted broker's group coordinator can take a while to load on a loaded machine: the
    child says "unavailable" meanwhile, and the wait allows two minutes."""
    seen = len(lines)
    deadline = time.monotonic() + 120
    while not any(line.strip() == wanted for line in lines[seen:]):
        assert child.poll() is None, f"the measuring process ended ({child.returncode}): {what}"
        assert time.monotonic() < deadline, (
            f"{what} not seen within 120 s; it said {Counter(x.strip() for x in lines[seen:])}"
        )
        time.sleep(0.05)


def test_a_client_that_has_not_answered_for_a_while_is_opened_anew(
    stack: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a broker of the test's own, stopped, by an injected clock: failures within
    ``REOPEN_AFTER_S`` of the first keep the client; the one at it closes it, and the next
    measurement opens a new one, which measures once the broker is back."""
    opened: list[Consumer] = []

    class Recorded(Consumer):
        def __init__(self, config: dict[str, Any]) -> None:
            super().__init__(config)
            opened.append(self)

    monkeypatch.setattr(lag_module, "Consumer", Recorded)
    own = LocalStack(stack.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"}),
                     tmp_path / "broker")  # fmt: skip
    own.up()
    try:
        bootstrap = own.settings.kafka_bootstrap
        clock = [1000.0]
        lag = BrokerLag({"bootstrap.servers": bootstrap}, "reopen", stack.events_topic,
                        timeout_s=1, clock=lambda: clock[0])  # fmt: skip
        committer = Consumer({"bootstrap.servers": bootstrap, "group.id": "reopen"})
        committer.commit(offsets=[TopicPartition(stack.events_topic, 0, 0)], asynchronous=False)
        committer.close()
        lag.measure()
        own.stop("kafka")
        # the first failure, one just inside the limit, and one after it: the same client
        for at in (0.0, REOPEN_AFTER_S - 0.001, REOPEN_AFTER_S - 0.0005):
            clock[0] = 1000.0 + at
            with pytest.raises(LagUnavailable):
                lag.measure()
        assert len(opened) == 1
        clock[0] = 1000.0 + REOPEN_AFTER_S  # at the limit: closed
        with pytest.raises(LagUnavailable):
            lag.measure()
        assert len(opened) == 1
        own.up()
        deadline = time.monotonic() + 120
        while True:
            try:
                lag.measure()
                break
            except LagUnavailable:
                assert time.monotonic() < deadline, "no measurement after the broker came back"
        assert len(opened) == 2  # a client of its own after the reopen
    finally:
        own.down()
