"""Retention (CONTRACT §6): hourly snapshots 7 days, daily 90 days, raw events 48 hours,
each by period start (or event time), deleting only rows strictly older than the cutoff.

TTLs do the routine work in the background; ``run`` forces it now with lightweight deletes
and says what it deleted. The seed's weekly cleanups are a scheduled call of ``run``.
"""

from __future__ import annotations

from dataclasses import dataclass

from voicemon.store import Client
from voicemon.windows import DAY_MS, HOUR_MS


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    table: str
    period_type: str | None  # None: raw events, kept by event time
    keep_ms: int

    def where(self) -> str:
        """Rows strictly older than the cutoff ({cutoff:Int64}, epoch ms)."""
        older = "< fromUnixTimestamp64Milli({cutoff:Int64}, 'UTC')"
        if self.period_type is None:
            return f"occurred_at {older}"
        return f"period_type = '{self.period_type}' AND toDateTime64(period_start, 3) {older}"


RULES = (
    Rule("hourly snapshots", "voicemon.snapshots", "hourly", 7 * DAY_MS),
    Rule("hourly stage snapshots", "voicemon.stage_snapshots", "hourly", 7 * DAY_MS),
    Rule("daily snapshots", "voicemon.snapshots", "daily", 90 * DAY_MS),
    Rule("daily stage snapshots", "voicemon.stage_snapshots", "daily", 90 * DAY_MS),
    Rule("raw events", "voicemon.pipeline_events", None, 48 * HOUR_MS),
)


def run(client: Client, now_ms: int, cluster: str | None = None) -> dict[str, int]:
    """Delete what each rule no longer keeps; return rows deleted per rule. On a cluster the
    delete goes to every shard's local table (a Distributed table takes no DELETE)."""
    deleted = {}
    for rule in RULES:
        parameters = {"cutoff": now_ms - rule.keep_ms}
        where = rule.where()
        count = client.query(
            f"SELECT count() FROM {rule.table} WHERE {where}", parameters=parameters
        ).result_rows[0][0]
        if count:
            target = rule.table if cluster is None else f"{rule.table}_local ON CLUSTER `{cluster}`"
            client.command(
                f"DELETE FROM {target} WHERE {where}",
                parameters=parameters,
                settings={"lightweight_deletes_sync": 2},
            )
        deleted[rule.name] = int(count)
    return deleted
