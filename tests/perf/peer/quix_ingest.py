# The Quix Streams peer of issue 10, measured by tests/perf/ingest.py (path `peer`).
# Copied verbatim from ../shared/peers/quix_ingest.py (the team's shared peers folder; its
# README says how it was written and measured). It is the same ingest job written as a
# Quix Streams 3.28 user would write it, and it is measured AS IT IS: do not optimize,
# reformat or lint it (pyproject excludes this folder from ruff). It runs in its own virtual
# environment (Quix Streams pins confluent-kafka below 2.13), which the benchmark creates
# under var/bench/quix-venv; it is never imported by voicemon or its tests.
"""Peer for the ingest benchmark: the same job as voicemon's ingestion path, written the way a
Quix Streams user would write it. Consumes pipeline events, drops invalid ones, keeps rolling
one-minute counters per scope in Redis (one transactional pipeline per batch) and inserts raw
rows into ClickHouse (chDB via clickhouse-connect, column-oriented), committing after both
sinks flush. Stops after N events and prints its rate.

  python peers/quix_ingest.py --bootstrap 127.0.0.1:9092 --topic bench --n 200000 \
      --redis redis://127.0.0.1:6379/15 --chdb /tmp/peer-ch
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import time

import clickhouse_connect
import redis
from quixstreams import Application
from quixstreams.sinks import BatchingSink, SinkBatch

TYPES = {"artifact_received", "artifact_completed", "artifact_failed",
         "stage_started", "stage_completed", "stage_failed"}


def to_ms(v) -> int | None:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str):
        try:
            return int(dt.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            return None
    return None


def valid(e) -> bool:
    if not (isinstance(e, dict) and isinstance(e.get("event_id"), str) and e.get("event_type") in TYPES
            and isinstance(e.get("artifact_id"), str)):
        return False
    ms = to_ms(e.get("occurred_at"))  # epoch ms or RFC 3339, as the contract allows
    if ms is None:
        return False
    e["occurred_at"] = ms
    return True


class IngestSink(BatchingSink):
    def __init__(self, redis_url: str, chdb_path: str, target: int, dedup: bool = False) -> None:
        super().__init__()
        self.redis_url, self.chdb_path, self.target, self.dedup = redis_url, chdb_path, target, dedup
        self.done = 0
        self.t0: float | None = None

    def setup(self) -> None:
        self.r = redis.Redis.from_url(self.redis_url)
        self.ch = clickhouse_connect.get_client(dsn=f"chdb://{self.chdb_path}")
        self.ch.command(
            "CREATE TABLE IF NOT EXISTS peer_events (event_id String, event_type LowCardinality(String), "
            "occurred_at DateTime64(3, 'UTC'), artifact_id String, organization_id String, "
            "stage LowCardinality(String), duration_ms Float64, ai_cost_usd Float64) "
            "ENGINE = MergeTree PARTITION BY toStartOfHour(occurred_at) ORDER BY (occurred_at, event_id) "
            "TTL toDateTime(occurred_at) + INTERVAL 48 HOUR")

    def write(self, batch: SinkBatch) -> None:
        if self.t0 is None:
            self.t0 = time.time()
        cols: list[list] = [[] for _ in range(8)]
        items = [item.value for item in batch]
        if self.dedup:
            # Exact dedup by event_id for 48 h, the way a Quix user would add it: one SET NX
            # per event in a pipeline, then count only the events that were new.
            with self.r.pipeline(transaction=False) as pipe:
                for e in items:
                    pipe.set(f"peer:seen:{e['event_id']}", 1, nx=True, ex=172_800)
                fresh = pipe.execute()
            items = [e for e, new in zip(items, fresh) if new]
        with self.r.pipeline(transaction=True) as pipe:
            for e in items:
                minute = e["occurred_at"] // 60_000
                org = e.get("organization_id") or ""
                for scope in ("platform", f"org:{org}") if org else ("platform",):
                    key = f"peer:{{{scope}}}:{minute}"
                    pipe.hincrby(key, e["event_type"], 1)
                    pipe.expire(key, 7200)
                for i, v in enumerate((e["event_id"], e["event_type"],
                                       dt.datetime.fromtimestamp(e["occurred_at"] / 1000, tz=dt.timezone.utc),
                                       e["artifact_id"], org, e.get("stage") or "",
                                       float(e.get("duration_ms") or 0), float(e.get("ai_cost_usd") or 0))):
                    cols[i].append(v)
            pipe.execute()
        self.ch.insert("peer_events", cols, column_oriented=True,
                       column_names=["event_id", "event_type", "occurred_at", "artifact_id",
                                     "organization_id", "stage", "duration_ms", "ai_cost_usd"])
        self.done += batch.size  # events consumed (dups included)
        if self.done >= self.target:
            took = time.time() - self.t0
            print(f"quix peer: {self.done} events in {took:.2f}s = {self.done / took:,.0f} events/s", flush=True)
            os._exit(0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--topic", default="bench")
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    ap.add_argument("--chdb", default="/tmp/peer-ch")
    ap.add_argument("--expand", action="store_true", help="messages are JSON arrays of events")
    ap.add_argument("--dedup", action="store_true", help="exact event_id dedup in Redis, as voicemon does")
    a = ap.parse_args()
    app = Application(broker_address=a.bootstrap, consumer_group=f"peer-{time.time_ns()}",
                      auto_offset_reset="earliest", commit_interval=1.0, commit_every=20_000)
    sdf = app.dataframe(app.topic(a.topic, value_deserializer="json"))
    if a.expand:
        # Batched messages (a JSON array of events per message): one row per element.
        sdf = sdf.apply(lambda v: v if isinstance(v, list) else [v], expand=True)
    sdf = sdf.filter(valid)
    sdf.sink(IngestSink(a.redis, a.chdb, a.n, a.dedup))
    app.run()


if __name__ == "__main__":
    main()
