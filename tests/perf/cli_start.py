"""What a ``voicemon`` command costs before it does anything: CPU seconds per run of
``python -m runtime ...`` for commands that fail at once (no service is reached), beside the
floor of the same run: an interpreter that imports only typer and the settings.

    python -m tests.perf.cli_start [--runs 10]

Needs no service: the store is a fresh chDB path, which ``raw-count`` opens and finds without
the voicemon schema (a one-sentence failure) and ``sql SELECT 1`` opens and asks.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FLOOR = ("-c", "import typer, rich.console, voicemon.settings")
COMMANDS = {
    "frobnicate (a usage mistake)": ("frobnicate",),
    "metrics history --start yesterday": ("metrics", "history", "--start", "yesterday",
                                          "--end", "0"),
    "token create --ttl -5m": ("token", "create", "--staff", "--ttl", "-5m"),
    "raw-count (a store never migrated)": ("raw-count",),
    "sql SELECT 1 (the embedded engine)": ("sql", "SELECT 1"),
}  # fmt: skip


def cpu_per_run(arguments: tuple[str, ...], runs: int, env: dict[str, str]) -> float:
    """Mean user + system CPU seconds of ``python arguments`` over ``runs`` runs."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(runs):
        subprocess.run([sys.executable, *arguments], cwd=ROOT, env=env, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return spent / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vm-cli-start-") as home:
        env = {name: value for name, value in os.environ.items()
               if not name.startswith("VOICEMON_")}  # fmt: skip
        env |= {"VOICEMON_JWT_SECRET": "a-secret-for-timing-only",
                "VOICEMON_CLICKHOUSE_DSN": f"chdb://{home}/store"}  # fmt: skip
        floor = cpu_per_run(FLOOR, args.runs, env)
        print(f"{'floor: typer + settings imported':40} {floor:6.3f} CPU s")
        for name, command in COMMANDS.items():
            spent = cpu_per_run(("-m", "runtime", *command), args.runs, env)
            print(f"{name:40} {spent:6.3f} CPU s  ({spent / floor:.1f}x the floor)")


if __name__ == "__main__":
    main()
