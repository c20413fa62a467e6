"""Throughput of 1 and 2 counting workers in one consumer group (issue "scale out").

    python -m tests.perf.scale_out [--events 400000] [--batch-size 500] [--json]

The same pre-published messages (4 partitions, batches as the producer helper sends them)
are consumed by 1, then 2, `counters` workers (dedup + rolling counters + DLQ; no store, so
several processes can share the input), each run with a fresh consumer group and Redis DB.
Timed from the first worker's start to all offsets committed; start-up is included, so the
figure is a lower bound. Checks that every event was counted exactly once.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from tests.integration.harness import Pipeline
from voicemon.devtools.loadgen import LoadMix
from voicemon.devtools.localstack import LocalStack
from voicemon.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
REDIS_DB = 13


def messages(events: int, batch_size: int, stages: tuple[str, ...]) -> tuple[list[Any], int]:
    mix = LoadMix(seed=3, organizations=100, stages=stages)
    clock = iter(lambda: int(time.time() * 1000), None)
    items = [item for _, item in zip(range(events), mix.stream(clock), strict=False)]
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    received = sum(1 for item in items if item["event_type"] == "artifact_received")
    return batches, received


def run(settings: Settings, workers: int, batches: list[Any], received: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="voicemon-scale-") as workdir:
        pipeline = Pipeline(settings, Path(workdir), redis_db=REDIS_DB)
        pipeline.publish(batches)
        events = sum(len(batch) for batch in batches)
        started = time.monotonic()
        for _ in range(workers):
            pipeline.start_worker(
                VOICEMON_WORKER_ROLE="counters",
                VOICEMON_BATCH_MAX_MESSAGES="40",
                VOICEMON_CLOSER_ENABLED="false",
            )
        pipeline.wait_consumed(timeout_s=1800)
        seconds = time.monotonic() - started
        counted = pipeline.realtime()["artifacts_received"]
        pipeline.stop_workers()
    assert counted == received, f"counted {counted} artifacts_received, expected {received}"
    return {"workers": workers, "events": events, "seconds": round(seconds, 1),
            "events_per_s": round(events / seconds)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = Settings()
    LocalStack(settings, ROOT / "var").up()
    batches, received = messages(args.events, args.batch_size, settings.stages)
    results = [run(settings, n, batches, received) for n in (1, 2)]
    results[1]["speed_up"] = round(results[1]["events_per_s"] / results[0]["events_per_s"], 2)
    if args.json:
        print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
        return
    print(f"{'workers':>7} {'events':>9} {'seconds':>8} {'events/s':>9}")
    for row in results:
        print(
            f"{row['workers']:>7} {row['events']:>9,} {row['seconds']:>8} {row['events_per_s']:>9,}"
        )
    print(f"speed-up with 2 workers: {results[1]['speed_up']}x")


if __name__ == "__main__":
    main()
