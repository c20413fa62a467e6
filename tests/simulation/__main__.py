"""The long mode: ``python -m tests.simulation --arrivals 1000000 --seed N``.

Runs one generated schedule against a private redis-server and an embedded store in a
temporary directory, prints a JSON summary (arrivals, distinct events, duplicates, per view
lost / counted twice) and exits 1 on any discrepancy. ``--shrink`` also prints a minimal
schedule for the first discrepancy.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
import time
from collections import defaultdict

from tests.simulation import driver, oracle, schedule
from tests.simulation.services import redis_server
from tests.simulation.shrink import describe, shrink
from voicemon.store import connect
from voicemon.store_migrations import migrate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.simulation", description=__doc__)
    parser.add_argument("--arrivals", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hours", type=int, default=52)
    parser.add_argument("--topology", choices=["all", "split"], default=None)
    parser.add_argument("--shrink", action="store_true")
    parser.add_argument("--view", help="shrink for a discrepancy of this view (raw, hourly, ...)")
    parser.add_argument("--progress", action="store_true", help="a line per virtual hour")
    parser.add_argument("--show", type=int, default=20, help="discrepancies to print")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the redis-server too
    logging.disable(logging.WARNING)  # the closer's warnings about kept hours are expected
    plan = schedule.generate(
        args.seed, args.arrivals, int(time.time() * 1000), args.hours, args.topology
    )
    expected = oracle.expect(plan)
    with tempfile.TemporaryDirectory(prefix="vm-sim-store-") as path, redis_server() as url:
        store = connect(f"chdb://{path}")
        migrate(store)
        started = time.monotonic()

        def progress(tick: int, outcome: driver.Outcome) -> None:
            hours = (tick - plan.start_ms) / 3_600_000
            if args.progress and tick % 3_600_000 == 0:
                print(
                    f"virtual hour {hours:.0f}: {outcome.steps} steps, "
                    f"{len(outcome.discrepancies)} discrepancies, "
                    f"{time.monotonic() - started:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )

        outcome = driver.run_sync(plan, store, url, progress)
        seconds = time.monotonic() - started
        views: dict[str, dict[str, int]] = defaultdict(
            lambda: {"lost": 0, "counted_twice": 0, "other": 0}
        )
        for found in outcome.discrepancies:
            view = views[found.view]
            view["lost"] += found.lost
            view["counted_twice"] += found.twice
            view["other"] += int(not found.lost and not found.twice)
        summary = {
            "seed": args.seed,
            "topology": plan.topology,
            "virtual_hours": args.hours,
            "arrivals": plan.arrivals(),
            "distinct_events": len(expected.winners),
            "duplicates": expected.duplicates,
            "dlq_letters": len(expected.letters),
            "chunks": len(plan.chunks),
            "steps": outcome.steps,
            "seconds": round(seconds, 1),
            "redis_keys_max": outcome.redis_keys_max,
            "discrepancies": len(outcome.discrepancies),
            "views": dict(views),
        }
        print(json.dumps(summary, indent=2))
        for found in outcome.discrepancies[: args.show]:
            print(str(found)[:400], file=sys.stderr)
        if args.shrink and outcome.discrepancies:
            found = [d for d in outcome.discrepancies if args.view in (None, d.view)]
            target = min(found or outcome.discrepancies, key=lambda d: len(d.event_ids) or 10**9)

            def run(candidate: schedule.Schedule) -> driver.Outcome:
                return driver.run_sync(candidate, store, url)

            small = shrink(plan, target, run)
            print(f"shrunk for: {target}", file=sys.stderr)
            for line in describe(small):
                print(line, file=sys.stderr)
            for found in run(small).discrepancies[:5]:
                print("  ->", str(found)[:300], file=sys.stderr)
        store.close()
    return 1 if outcome.discrepancies else 0


if __name__ == "__main__":
    sys.exit(main())
