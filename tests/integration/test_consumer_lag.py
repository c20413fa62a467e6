"""Consumer lag from the broker's view, against the real broker: it rises while nothing
consumes and while an outage pauses ingest (exported by a worker started during the outage),
and returns to 0 once the group has consumed everything."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from consumers.lag import BrokerLag
from tests.integration.harness import Pipeline, free_port


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


def wait_for(what: str, check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} not seen within {timeout_s}s"
        time.sleep(0.5)


def test_lag_is_what_the_group_has_not_committed_and_returns_to_zero(pipeline: Pipeline) -> None:
    pipeline.publish([event(n) for n in range(40)])
    offsets = broker_lag(pipeline).measure()
    assert len(offsets) == pipeline.settings.topic_partitions
    assert sum(o.lag for o in offsets) == 40  # nothing consumed yet: every message
    assert all(o.committed is None for o in offsets)
    assert {o.partition: o.end for o in offsets} == pipeline.end_offsets(
        pipeline.settings.events_topic
    )

    pipeline.start_worker()
    pipeline.wait_consumed(60)
    offsets = broker_lag(pipeline).measure()
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
