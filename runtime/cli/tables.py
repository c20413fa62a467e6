"""The CLI's tables, built from query results (pure: rendering is the caller's).

Every table fits an 80-column terminal: long names and headers wrap (``overflow="fold"``),
nothing is cut with an ellipsis, and a table is at least as wide as its title, so a title
wraps only when it is longer than the terminal.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.table import Table

from runtime.cli.common import fmt

# Floats shown to one decimal (milliseconds); the others keep four (rates, dollars).
_ONE_DECIMAL_SUFFIXES = ("_ms",)
REALTIME_ROWS = ("artifacts_received", "artifacts_completed", "artifacts_failed",
                 "failure_rate", "avg_latency_ms", "ai_cost_usd")  # fmt: skip
REALTIME_STAGE_COLUMNS = ("started", "completed", "failed", "failure_rate", "avg_duration_ms")
HISTORY_COLUMNS = ("period_start", "artifacts_received", "artifacts_completed",
                   "artifacts_failed", "failure_rate", "avg_latency_ms", "p95_latency_ms",
                   "ai_cost_usd")  # fmt: skip
STAGES_COLUMNS = ("started", "completed", "failed", "failure_rate", "avg_duration_ms",
                  "p95_duration_ms")  # fmt: skip
ORGANIZATIONS_COLUMNS = ("organization_id", "name", "artifacts_received", "artifacts_failed",
                         "failure_rate", "p95_latency_ms", "ai_cost_usd")  # fmt: skip


def table(
    title: str, columns: Sequence[str], left: int = 1, numbers: Collection[str] | None = None
) -> Table:
    """A table whose first ``left`` columns are names (left-aligned), the rest numbers (or
    the columns named in ``numbers``, right-aligned, the others left-aligned). A header shows
    one word of its field name per line, so the values set the columns' width."""
    result = Table(title=title, min_width=len(title) + 2, box=box.SIMPLE_HEAD, show_edge=False,
                   pad_edge=False, collapse_padding=True)  # fmt: skip
    for index, column in enumerate(columns):
        result.add_column(
            column.replace("_", "\n"),
            justify="right"
            if (column in numbers if numbers is not None else index >= left)
            else "left",
            overflow="fold",
        )
    return result


def cell(value: object, column: str = "") -> str:
    """One value as a table shows it: thousands separators, UTC times, '-' for nothing."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        decimals = 1 if column.endswith(_ONE_DECIMAL_SUFFIXES) else 4
        return f"{value:,.{decimals}f}"
    return fmt(value)


def realtime_tables(view: Mapping[str, Any], org: str | None) -> list[Table]:
    """The real-time view (CONTRACT §5): its totals, then one row per stage."""
    summary = table(f"last hour — {org or 'platform'}, as of {view['as_of']}", ("metric", "value"))
    for name in REALTIME_ROWS:
        summary.add_row(name, cell(view[name], name))
    stages = table("stages, last hour", ("stage", *REALTIME_STAGE_COLUMNS))
    for stage, row in view["stages"].items():
        stages.add_row(stage, *(cell(row[column], column) for column in REALTIME_STAGE_COLUMNS))
    return [summary, stages]


def history_table(result: Mapping[str, Any], period: str, org: str | None) -> Table:
    rows = table(f"{period} history — {org or 'platform'}", HISTORY_COLUMNS)
    for row in [*result["rows"], {"period_start": "summary", **result["summary"]}]:
        rows.add_row(*(cell(row[column], column) for column in HISTORY_COLUMNS))
    return rows


def stages_table(result: Mapping[str, Any], period: str, org: str | None) -> Table:
    rows = table(f"stages, {period} — {org or 'platform'}", ("stage", *STAGES_COLUMNS))
    for stage, row in result["summary"].items():
        rows.add_row(stage, *(cell(row[column], column) for column in STAGES_COLUMNS))
    return rows


def organizations_table(result: Mapping[str, Any], period: str) -> Table:
    rows = table(f"organizations, {period}", ORGANIZATIONS_COLUMNS, left=2)
    for row in result["organizations"]:
        rows.add_row(*(cell(row[column], column) for column in ORGANIZATIONS_COLUMNS))
    return rows
