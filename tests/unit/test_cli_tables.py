"""Every table the CLI prints fits an 80-column terminal: names wrap, nothing is cut."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from rich.console import Console
from rich.table import Table

from runtime.cli import tables
from runtime.cli.demo import reconciliation_table
from runtime.cli.dlq import inspect_table
from runtime.cli.dlq_records import count_by_reason, dead_letter
from runtime.cli.topics import topics_table
from voicemon.devtools.loadgen import Published
from voicemon.devtools.reconcile import Reconciliation, WorkerCounts
from voicemon.settings import DEFAULT_STAGES
from voicemon.topics import TopicReport

WIDTH = 80
LONG_ORG = "org-with-a-rather-long-identifier-0000123"
LONG_NAME = "Acme Voice Processing International Holdings, Northern Europe Division"
BIG = 123_456_789
STAGES = (*DEFAULT_STAGES, "a_stage_name_longer_than_any_column_could_ever_hold_on_one_line")


def artifact_metrics(scale: int = 1) -> dict[str, Any]:
    return {
        "artifacts_received": BIG * scale, "artifacts_completed": BIG * scale,
        "artifacts_failed": 9_876_543, "failure_rate": 0.123456789, "avg_latency_ms": 1234567.891,
        "p50_latency_ms": 99_999.9, "p95_latency_ms": 86_400_000.0, "p99_latency_ms": 86_400_000.0,
        "ai_cost_usd": 9_999_999.123456,
    }  # fmt: skip


def stage_metrics() -> dict[str, Any]:
    return {"started": BIG, "completed": BIG, "failed": 9_876_543, "failure_rate": 0.5,
            "avg_duration_ms": 86_399_999.5, "p95_duration_ms": 86_400_000.0}  # fmt: skip


def realtime_view() -> dict[str, Any]:
    stages = {stage: stage_metrics() for stage in STAGES}
    return {"organization_id": LONG_ORG, "as_of": "2026-11-28T16:00:00.123000Z",
            **artifact_metrics(), "stages": stages}  # fmt: skip


def every_table() -> dict[str, Table]:
    hour = datetime(2026, 11, 28, 16, tzinfo=UTC)
    history = {"rows": [{"period_start": hour, **artifact_metrics()}] * 3,
               "summary": artifact_metrics(3)}  # fmt: skip
    stages = {"summary": {stage: stage_metrics() for stage in STAGES}}
    orgs = {"organizations": [{"organization_id": LONG_ORG, "name": LONG_NAME,
                               **artifact_metrics()}] * 2}  # fmt: skip
    letters = [
        dead_letter(0, i, 1_795_900_000_000 + i, None, b"x",
                    [("voicemon-reason", reason.encode()),
                     ("voicemon-detail", f"{reason}: {'a detail in plain words ' * 4}".encode())])
        for i, reason in enumerate(["unknown_event_type", "missing_field", "unknown_stage"] * 3)
    ]  # fmt: skip
    books = Reconciliation(Published(12_000_001, 9_876, 120_001), 11_880_000, 9_876,
                           WorkerCounts(11_880_000, 120_001, 9_876), True, 120.0)  # fmt: skip
    off = Reconciliation(Published(1000, 10, 20), 900, 7, None, False, 120.0)
    drift = ("1 partition(s), wants 4; replication factor 1, wants 3; "
             "cleanup.policy=delete, wants compact")  # fmt: skip
    realtime = tables.realtime_tables(realtime_view(), LONG_ORG)
    return {
        **{f"realtime {i}": table for i, table in enumerate(realtime)},
        "history": tables.history_table(history, "hourly", LONG_ORG),
        "stages": tables.stages_table(stages, "daily", LONG_ORG),
        "organizations": tables.organizations_table(orgs, "daily"),
        "dlq inspect": inspect_table(count_by_reason(letters)),
        "demo reconciled": reconciliation_table(books),
        "demo off": reconciliation_table(off),
        "topics": topics_table([TopicReport("voice.pipeline.events.dlq.with.a.long.name.suffix",
                                            "drift", drift)]),
    }  # fmt: skip


@pytest.mark.parametrize("name", list(every_table()))
def test_each_table_fits_80_columns_without_an_ellipsis(name: str) -> None:
    console = Console(width=WIDTH, record=True, color_system=None)
    console.print(every_table()[name])
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= WIDTH, text
    assert "…" not in text and "..." not in text, text


def test_names_that_fit_are_whole_and_titles_do_not_wrap() -> None:
    console = Console(width=WIDTH, record=True, color_system=None)
    for table in tables.realtime_tables(realtime_view(), "acme"):
        console.print(table)
    text = console.export_text()
    lines = text.splitlines()
    assert "last hour — acme, as of 2026-11-28T16:00:00.123000Z" in lines[0]
    for stage in DEFAULT_STAGES:  # each fits its column: on one line, never split
        assert any(line.startswith(stage + " ") for line in lines), (stage, text)
    long_stage = STAGES[-1]
    assert long_stage not in text  # folded over lines, all of it kept:
    assert long_stage in "".join(line.split(" ")[0] for line in lines)


def test_cells_are_grouped_numbers_utc_times_and_dashes() -> None:
    assert tables.cell(1234567) == "1,234,567"
    assert tables.cell(0.123456, "failure_rate") == "0.1235"
    assert tables.cell(1234.56, "avg_latency_ms") == "1,234.6"
    assert tables.cell(None) == "-"
    assert tables.cell(True) == "true"
    naive = datetime(2026, 11, 28, 16)
    assert tables.cell(naive) == tables.cell(naive.replace(tzinfo=UTC)) == "2026-11-28 16:00:00Z"
