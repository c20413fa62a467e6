"""Windows close inside the running worker: snapshots appear by themselves, late events
re-emit their hour, and replay converges to the same numbers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from typing import Any

from tests import reference
from tests.integration.harness import Pipeline
from voicemon.settings import DEFAULT_STAGES
from voicemon.windows import HOUR_MS

FAST_CLOSER = {"VOICEMON_CLOSER_INTERVAL_SECONDS": "1", "VOICEMON_LATE_DEBOUNCE_SECONDS": "1"}


def hour_events(hour: int, count: int, prefix: str) -> list[dict[str, Any]]:
    return [
        {"event_id": f"{prefix}-{i}", "event_type": "artifact_completed",
         "occurred_at": hour + i * 1000, "artifact_id": f"a-{i}",
         "organization_id": f"org-{i % 3}", "duration_ms": float(100 + i)}
        for i in range(count)
    ]  # fmt: skip


def wait_for_snapshot(
    pipeline: Pipeline, key: str, received: int, timeout_s: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        records = [value for k, value in pipeline.snapshot_records() if k == key]
        if records and records[-1]["artifacts_completed"] == received:
            return records[-1]
        time.sleep(1)
    raise AssertionError(f"no snapshot {key} with {received} completions in {timeout_s}s")


def test_hours_close_in_the_worker_and_late_events_re_emit(pipeline: Pipeline) -> None:
    now = int(time.time() * 1000)
    hour = now - now % HOUR_MS - 3 * HOUR_MS
    events = hour_events(hour, 60, "on-time")
    pipeline.publish([events])
    worker = pipeline.start_worker(**FAST_CLOSER)
    pipeline.wait_consumed()
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(hour / 1000))
    first = wait_for_snapshot(pipeline, f"hourly:platform::{start}", 60)
    expected = reference.metrics(events, DEFAULT_STAGES)
    assert first["p95_latency_ms"] == expected["p95_latency_ms"]
    assert {s["stage"] for s in first["stages"]} == set(DEFAULT_STAGES)

    late = hour_events(hour, 61, "late")[60:]
    pipeline.publish([late])
    sent = time.monotonic()
    second = wait_for_snapshot(pipeline, f"hourly:platform::{start}", 61)
    assert time.monotonic() - sent < 60 and second["version"] > first["version"]
    org = wait_for_snapshot(pipeline, f"hourly:organization:org-0:{start}", 21)
    assert org["organization_id"] == "org-0"
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/metrics").read()
    late_total = re.search(rb"^voicemon_events_late_total (\S+)$", metrics, re.MULTILINE)
    assert late_total and float(late_total.group(1)) >= 1
    assert b'voicemon_snapshots_emitted_total{period_type="hourly"}' in metrics
    assert pipeline.redis.exists("vm:{closer}:lease")
    pipeline.stop_workers()
    assert not pipeline.redis.exists("vm:{closer}:lease")  # handed on at once, not expired

    rows = pipeline.sql(
        "SELECT organization_id, artifacts_completed, version FROM voicemon.snapshots_latest "
        f"WHERE period_type = 'hourly' AND toUnixTimestamp(period_start) = {hour // 1000} "
        "ORDER BY organization_id"
    )
    assert [(r["organization_id"], r["artifacts_completed"]) for r in rows] == [
        ("", 61),
        ("org-0", 21),
        ("org-1", 20),
        ("org-2", 20),
    ]
    assert rows[0]["version"] == second["version"]

    env = {**os.environ, **pipeline.env}
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "replay", "--from", start, "--to", start],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # The hour's 4 rows, and its day's 4 when the day has closed already (after 01:30 UTC).
    recomputed = re.search(r"recomputed (\d+) window\(s\): (\d+) row\(s\) changed, "
                           r"(\d+) unchanged, (\d+) new", done.stdout)  # fmt: skip
    assert recomputed is not None, done.stdout
    windows, changed, unchanged, new = map(int, recomputed.groups())
    assert (changed, new) == (0, 0) and unchanged == 4 * windows and windows in (1, 2)
