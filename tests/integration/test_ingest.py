"""Kafka -> Faust worker -> Redis + ClickHouse, exactly once, against the real services."""

from __future__ import annotations

import random
import time
from typing import Any

import orjson
import pytest

from tests import reference
from tests.integration.harness import Pipeline
from voicemon.devtools.loadgen import LoadMix

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


def raw_counts(pipeline: Pipeline) -> dict[str, int]:
    rows = pipeline.sql(
        "SELECT event_type, count() AS n FROM voicemon.pipeline_events GROUP BY event_type"
    )
    return {row["event_type"]: row["n"] for row in rows}


def test_every_rejection_code_lands_in_the_dlq_untouched(pipeline: Pipeline) -> None:
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
    pipeline.start_worker()
    pipeline.wait_consumed()
    assert pipeline.realtime()["artifacts_received"] == 5
    pipeline.stop_workers()

    letters = pipeline.dlq()
    assert sorted(h["voicemon-reason"] for _, h in letters) == sorted(bad)
    for value, headers in letters:
        reason = headers["voicemon-reason"]
        assert value == bad[reason], reason  # original bytes, untouched
        assert headers["voicemon-detail"]
        assert int(headers["voicemon-source-offset"]) >= 0
        assert "voicemon-source-partition" in headers and "voicemon-batch-index" not in headers
    assert raw_counts(pipeline) == {"artifact_received": 5}


def test_a_bad_batch_element_rejects_only_itself(pipeline: Pipeline) -> None:
    batch = [
        event("b0"),
        event("b1", event_type="nope"),
        17,
        event("b3", event_type="stage_completed", stage=STAGE, duration_ms=40.0),
    ]
    pipeline.publish([batch])
    pipeline.start_worker()
    pipeline.wait_consumed()
    view = pipeline.realtime()
    assert view["artifacts_received"] == 1
    assert view["stages"][STAGE]["completed"] == 1
    assert view["stages"][STAGE]["avg_duration_ms"] == 40.0
    pipeline.stop_workers()

    letters = sorted(pipeline.dlq(), key=lambda letter: letter[1]["voicemon-batch-index"])
    assert [(h["voicemon-batch-index"], h["voicemon-reason"]) for _, h in letters] == [
        ("1", "unknown_event_type"),
        ("2", "not_an_object"),
    ]
    assert orjson.loads(letters[0][0]) == batch[1] and letters[1][0] == b"17"
    assert raw_counts(pipeline) == {"artifact_received": 1, "stage_completed": 1}


def test_duplicates_and_a_replayed_partition_change_no_number(pipeline: Pipeline) -> None:
    events = [event(f"d{i}", organization_id="org-a", ai_cost_usd=0.5) for i in range(20)]
    pipeline.publish([events[:10], events[5:15], *events[10:], events[0]])  # 11 duplicates
    pipeline.start_worker()
    pipeline.wait_consumed()
    first = pipeline.realtime("org-a")
    assert first["artifacts_received"] == 20 and first["ai_cost_usd"] == 10.0
    pipeline.stop_workers()
    assert raw_counts(pipeline) == {"artifact_received": 20}

    # Replay: a new consumer group reads the whole topic again.
    pipeline.env["VOICEMON_CONSUMER_GROUP"] += "-replay"
    pipeline.settings = pipeline.settings.model_copy(
        update={"consumer_group": pipeline.env["VOICEMON_CONSUMER_GROUP"]}
    )
    pipeline.start_worker()
    pipeline.wait_consumed()
    clock_fields = {"as_of": None, "window_start": None, "window_end": None}
    assert pipeline.realtime("org-a") | clock_fields == first | clock_fields
    pipeline.stop_workers()
    assert raw_counts(pipeline) == {"artifact_received": 20}
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


def test_rolling_counters_roll(pipeline: Pipeline) -> None:
    now = now_ms()
    pipeline.publish(
        [
            event("r-old") | {"occurred_at": now - 61 * 60_000},
            event("r-edge") | {"occurred_at": now - 58 * 60_000},
            event("r-new", organization_id="org-r"),
        ]
    )
    pipeline.start_worker()
    pipeline.wait_consumed()
    assert pipeline.realtime()["artifacts_received"] == 2
    assert pipeline.realtime("org-r")["artifacts_received"] == 1
    assert pipeline.realtime("org-none")["artifacts_received"] == 0
    # Three minutes on, the 58-minute-old event has left the window too.
    assert pipeline.realtime(now_ms=now + 3 * 60_000)["artifacts_received"] == 1
    ttls = [pipeline.redis.pttl(key) for key in pipeline.redis.scan_iter("vm:rt:*")]
    assert ttls and all(0 < ttl <= 65 * 60_000 for ttl in ttls)
    pipeline.stop_workers()
    assert raw_counts(pipeline) == {"artifact_received": 3}  # raw keeps what the window drops


def test_raw_table_has_the_48_hour_ttl(pipeline: Pipeline) -> None:
    pipeline.start_worker()
    time.sleep(8)  # the worker migrates on start
    pipeline.stop_workers()
    [row] = pipeline.sql(
        "SELECT create_table_query AS ddl FROM system.tables "
        "WHERE database = 'voicemon' AND name = 'pipeline_events'"
    )
    assert "TTL toDateTime(occurred_at) + toIntervalHour(48)" in row["ddl"]
    assert "ttl_only_drop_parts = 1" in row["ddl"]


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
    assert ready == {"ready": True, "checks": {"redis": True, "clickhouse": True, "ingest": True}}
