"""Kafka -> ingest -> Redis + ClickHouse, exactly once, against the real services.

Ingest behaviour (DLQ codes, bad batch elements, dedup, replay, the rolling window) runs
``Ingest`` in this process on messages read back from the real broker, with the clock fixed;
what needs the Faust wiring (SIGKILL mid-stream, the worker's endpoints) runs the worker."""

from __future__ import annotations

import random
import time
from typing import Any

import orjson
import pytest

from tests import reference
from tests.integration.harness import Pipeline
from voicemon.devtools.loadgen import LoadMix
from voicemon.store import Client

STAGE = "transcription"


def now_ms() -> int:
    return int(time.time() * 1000)


def event(event_id: str, event_type: str = "artifact_received", **fields: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": event_type,
        "occurred_at": now_ms() - 1000,
        "artifact_id": f"art-{event_id}",
        **fields,
    }


def realtime_counts(view: dict[str, Any]) -> dict[str, Any]:
    names = ("artifacts_received", "artifacts_completed", "artifacts_failed")
    return {name: view[name] for name in names} | {
        stage: {k: row[k] for k in ("started", "completed", "failed")}
        for stage, row in view["stages"].items()
    }


def reference_counts(events: list[dict[str, Any]], stages: tuple[str, ...]) -> dict[str, Any]:
    return realtime_counts(reference.metrics(reference.first_occurrences(events), stages))


RAW_COUNTS = "SELECT event_type, count() AS n FROM voicemon.pipeline_events GROUP BY event_type"


def raw_counts(pipeline: Pipeline) -> dict[str, int]:
    """Raw rows by event type in a worker's store (read once the worker stopped)."""
    return {row["event_type"]: row["n"] for row in pipeline.sql(RAW_COUNTS)}


def local_raw_counts(store: Client) -> dict[str, int]:
    """Raw rows by event type in this process's store."""
    return {event_type: n for event_type, n in store.query(RAW_COUNTS).result_rows}


def ingest_published(pipeline: Pipeline, store: Client, now: int) -> None:
    pipeline.ingest(store, pipeline.consume(), now)


def test_every_rejection_code_lands_in_the_dlq_untouched(
    pipeline: Pipeline, clean_store: Client
) -> None:
    now = now_ms()
    bad = {
        "invalid_utf8": b"\xff\xfe\xfa",
        "invalid_json": b'{"event_id": ',
        "not_an_object": b'"just a string"',
        "too_large": b"[" + b" " * (1024 * 1024) + b"]",
        "missing_field": orjson.dumps({"event_id": "m1", "event_type": "artifact_received"}),
        "invalid_field": orjson.dumps(event("i1", duration_ms=-5)),
        "unknown_event_type": orjson.dumps(event("u1", event_type="artifact_vanished")),
        "unknown_stage": orjson.dumps(event("s1", event_type="stage_started", stage="mixing")),
        "future_timestamp": orjson.dumps(event("f1") | {"occurred_at": now + 3_600_000}),
        "too_late": orjson.dumps(event("l1") | {"occurred_at": now - 49 * 3_600_000}),
    }
    good = [event(f"g{i}") for i in range(5)]
    pipeline.publish([good[0], *bad.values(), *good[1:]])
    ingest_published(pipeline, clean_store, now)
    assert pipeline.realtime(now_ms=now)["artifacts_received"] == 5

    letters = pipeline.dlq()
    assert sorted(h["voicemon-reason"] for _, h in letters) == sorted(bad)
    for value, headers in letters:
        reason = headers["voicemon-reason"]
        assert value == bad[reason], reason  # original bytes, untouched
        assert headers["voicemon-detail"]
        assert int(headers["voicemon-source-offset"]) >= 0
        assert "voicemon-source-partition" in headers and "voicemon-batch-index" not in headers
    assert local_raw_counts(clean_store) == {"artifact_received": 5}


def test_a_bad_batch_element_rejects_only_itself(pipeline: Pipeline, clean_store: Client) -> None:
    batch = [
        event("b0"),
        event("b1", event_type="nope"),
        17,
        event("b3", event_type="stage_completed", stage=STAGE, duration_ms=40.0),
    ]
    pipeline.publish([batch])
    now = now_ms()
    ingest_published(pipeline, clean_store, now)
    view = pipeline.realtime(now_ms=now)
    assert view["artifacts_received"] == 1
    assert view["stages"][STAGE]["completed"] == 1
    assert view["stages"][STAGE]["avg_duration_ms"] == 40.0

    letters = sorted(pipeline.dlq(), key=lambda letter: letter[1]["voicemon-batch-index"])
    assert [(h["voicemon-batch-index"], h["voicemon-reason"]) for _, h in letters] == [
        ("1", "unknown_event_type"),
        ("2", "not_an_object"),
    ]
    assert orjson.loads(letters[0][0]) == batch[1] and letters[1][0] == b"17"
    assert local_raw_counts(clean_store) == {"artifact_received": 1, "stage_completed": 1}


def test_duplicates_and_a_replayed_partition_change_no_number(
    pipeline: Pipeline, clean_store: Client
) -> None:
    events = [event(f"d{i}", organization_id="org-a", ai_cost_usd=0.5) for i in range(20)]
    pipeline.publish([events[:10], events[5:15], *events[10:], events[0]])  # 11 duplicates
    now = now_ms()
    messages = pipeline.consume()
    first_outcome = pipeline.ingest(clean_store, messages, now)
    first = pipeline.realtime("org-a", now_ms=now)
    assert first["artifacts_received"] == 20 and first["ai_cost_usd"] == 10.0
    assert (first_outcome.counted, first_outcome.duplicates) == (20, 11)
    assert local_raw_counts(clean_store) == {"artifact_received": 20}

    # Replay: the same messages again, by a new ingest (another worker, a minute later).
    again = pipeline.ingest(clean_store, messages, now + 60_000)
    assert (again.counted, again.recovered, again.rejected) == (0, 0, 0)
    assert pipeline.realtime("org-a", now_ms=now) == first
    assert local_raw_counts(clean_store) == {"artifact_received": 20}
    assert pipeline.dlq() == []


def test_sigkill_mid_stream_and_restart_ends_exact(pipeline: Pipeline) -> None:
    mix = LoadMix(
        seed=7,
        organizations=5,
        stages=pipeline.settings.stages,
        duplicate_share=0.02,
        malformed_share=0.002,
    )
    clock = iter(lambda: now_ms(), None)
    items = [item for _, item in zip(range(30_000), mix.stream(clock), strict=False)]
    events = [item for item in items if isinstance(item, dict)]
    malformed = len(items) - len(events)
    rng = random.Random(3)
    messages: list[Any] = []
    i = 0
    while i < len(items):  # a mix of batches and single events, malformed ones alone
        if isinstance(items[i], bytes) or rng.random() < 0.2:
            messages.append(items[i])
            i += 1
            continue
        size = rng.randint(2, 200)
        chunk = [x for x in items[i : i + size] if isinstance(x, dict)]
        messages.extend([chunk] if chunk else [])
        messages.extend(x for x in items[i : i + size] if isinstance(x, bytes))
        i += size
    pipeline.publish(messages)
    expected = reference_counts(events, pipeline.settings.stages)

    for _ in range(3):
        worker = pipeline.start_worker(
            VOICEMON_BATCH_MAX_MESSAGES="40", VOICEMON_CLOSER_ENABLED="false"
        )
        deadline = time.monotonic() + 90
        before = pipeline.realtime()["artifacts_received"]
        while pipeline.realtime()["artifacts_received"] <= before + 200:
            assert time.monotonic() < deadline, "worker made no progress"
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.5))
        pipeline.kill_worker(worker)
    pipeline.start_worker()
    pipeline.wait_consumed(timeout_s=180)
    assert realtime_counts(pipeline.realtime()) == expected
    pipeline.stop_workers()

    unique = reference.first_occurrences(events)
    assert sum(raw_counts(pipeline).values()) == len(unique)
    rows = pipeline.sql(
        "SELECT count() AS n, uniqExact(event_id) AS u FROM voicemon.pipeline_events"
    )
    assert rows == [{"n": len(unique), "u": len(unique)}]
    assert len(pipeline.dlq()) == malformed


def test_rolling_counters_roll(pipeline: Pipeline, clean_store: Client) -> None:
    now = now_ms()
    pipeline.publish(
        [
            event("r-old") | {"occurred_at": now - 61 * 60_000},
            event("r-edge") | {"occurred_at": now - 58 * 60_000},
            event("r-new", organization_id="org-r"),
        ]
    )
    ingest_published(pipeline, clean_store, now)
    assert pipeline.realtime(now_ms=now)["artifacts_received"] == 2
    assert pipeline.realtime("org-r", now_ms=now)["artifacts_received"] == 1
    assert pipeline.realtime("org-none", now_ms=now)["artifacts_received"] == 0
    # Three minutes on, the 58-minute-old event has left the window too.
    assert pipeline.realtime(now_ms=now + 3 * 60_000)["artifacts_received"] == 1
    buckets = [key for key in pipeline.redis.scan_iter("vm:rz:*") if not key.endswith(b"sentinel")]
    ttls = [pipeline.redis.pttl(key) for key in buckets]  # the sentinel is one key, kept
    assert ttls and all(0 < ttl <= 65 * 60_000 for ttl in ttls)
    assert local_raw_counts(clean_store) == {"artifact_received": 3}  # raw keeps what it drops


def test_raw_table_has_the_48_hour_ttl(clean_store: Client) -> None:
    [(ddl,)] = clean_store.query(
        "SELECT create_table_query FROM system.tables "
        "WHERE database = 'voicemon' AND name = 'pipeline_events'"
    ).result_rows
    # 48 h and a second: toDateTime() drops occurred_at's milliseconds (migration 0006)
    assert "TTL (toDateTime(occurred_at) + toIntervalHour(48)) + toIntervalSecond(1)" in ddl
    assert "ttl_only_drop_parts = 1" in ddl


@pytest.mark.parametrize("partitions", [4])
def test_worker_exposes_metrics_and_health(pipeline: Pipeline, partitions: int) -> None:
    import urllib.request

    pipeline.publish([event("h1"), b"junk"])
    worker = pipeline.start_worker()
    pipeline.wait_consumed()
    base = f"http://127.0.0.1:{worker.web_port}"  # type: ignore[attr-defined]
    body = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    assert 'voicemon_events_total{event_type="artifact_received",stage=""} 1.0' in body
    assert 'voicemon_events_rejected_total{reason="invalid_json"} 1.0' in body
    assert "voicemon_clickhouse_rows_written_total 1.0" in body
    assert urllib.request.urlopen(f"{base}/healthz", timeout=5).status == 200
    ready = orjson.loads(urllib.request.urlopen(f"{base}/readyz", timeout=5).read())
    checks = {"redis": True, "clickhouse": True, "ingest": True, "directory": True}
    assert ready == {"ready": True, "checks": checks}
