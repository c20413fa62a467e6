"""Scale-out on one machine: several counting workers in one consumer group on a 4-partition
topic, joined and killed mid-stream, beside one store worker (the embedded store belongs to
one process). The numbers must equal those of a single worker: 0 lost, 0 counted twice."""

from __future__ import annotations

import random
import time
from typing import Any

from tests import reference
from tests.integration.harness import Pipeline
from tests.integration.test_ingest import raw_counts, realtime_counts, reference_counts
from voicemon.devtools.loadgen import LoadMix

COUNTERS = {"VOICEMON_WORKER_ROLE": "counters", "VOICEMON_BATCH_MAX_MESSAGES": "50"}
STORE = {"VOICEMON_WORKER_ROLE": "store", "VOICEMON_CLOSER_INTERVAL_SECONDS": "1"}


def stream(
    pipeline: Pipeline, events: int, seed: int
) -> tuple[list[Any], list[dict[str, Any]], int]:
    mix = LoadMix(seed=seed, organizations=8, stages=pipeline.settings.stages,
                  duplicate_share=0.03, malformed_share=0.003)  # fmt: skip
    clock = iter(lambda: int(time.time() * 1000), None)
    items = [item for _, item in zip(range(events), mix.stream(clock), strict=False)]
    rng = random.Random(seed)
    messages: list[Any] = []
    batch: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, bytes) or rng.random() < 0.3:
            messages.append(item)
        else:
            batch.append(item)
            if len(batch) >= rng.randint(5, 60):
                messages.append(batch)
                batch = []
    messages.extend([batch] if batch else [])
    events_only = [item for item in items if isinstance(item, dict)]
    return messages, events_only, len(items) - len(events_only)


def test_counting_workers_scale_out_with_rebalances_and_kills(pipeline: Pipeline) -> None:
    messages, events, malformed = stream(pipeline, 40_000, seed=21)
    groups = [pipeline.settings.consumer_group, pipeline.settings.consumer_group + "-store"]
    pipeline.start_worker(**STORE)
    first = pipeline.start_worker(**COUNTERS)
    pipeline.publish(messages[: len(messages) // 3])
    second = pipeline.start_worker(**COUNTERS)  # joins: a rebalance mid-stream
    pipeline.publish(messages[len(messages) // 3 : 2 * len(messages) // 3])
    time.sleep(2)
    pipeline.kill_worker(first)  # dies without committing: its partitions move over
    third = pipeline.start_worker(**COUNTERS)
    pipeline.publish(messages[2 * len(messages) // 3 :])
    time.sleep(2)
    pipeline.kill_worker(second)
    pipeline.wait_consumed(timeout_s=240, groups=groups)

    assert realtime_counts(pipeline.realtime()) == reference_counts(
        events, pipeline.settings.stages
    )
    for org in ("org-00000", "org-00003"):
        expected = [
            e for e in reference.first_occurrences(events) if e.get("organization_id") == org
        ]
        assert realtime_counts(pipeline.realtime(org)) == reference_counts(
            expected, pipeline.settings.stages
        )
    assert third.poll() is None
    pipeline.stop_workers()

    unique = reference.first_occurrences(events)
    assert sum(raw_counts(pipeline).values()) == len(unique)
    [row] = pipeline.sql(
        "SELECT count() AS n, uniqExact(event_id) AS u FROM voicemon.pipeline_events"
    )
    assert row == {"n": len(unique), "u": len(unique)}
    letters = pipeline.dlq()
    positions = {(h["voicemon-source-partition"], h["voicemon-source-offset"]) for _, h in letters}
    assert len(letters) == len(positions) == malformed
