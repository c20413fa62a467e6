"""Every Prometheus metric of CONTRACT §8, in one place. No per-organization labels."""

from __future__ import annotations

import bisect
import collections
import time
from collections.abc import Iterator, Sequence

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

EVENTS = Counter(
    "voicemon_events", "Accepted events counted once, by type and stage", ["event_type", "stage"]
)
EVENTS_REJECTED = Counter(
    "voicemon_events_rejected", "Messages or batch elements sent to the DLQ", ["reason"]
)
DLQ_ENVELOPES = Counter(
    "voicemon_dlq_envelopes",
    "DLQ letters sent as an envelope (the original's first 64 KiB, its sha256 and length) "
    "because Kafka refused the whole letter for its size",
    ["reason"],
)
DLQ_REFUSED = Counter(
    "voicemon_dlq_refused",
    "DLQ letters Kafka refused for good, even as an envelope (size, invalid record, "
    "authorization, unknown topic): logged, not retried, ingest went on",
    ["reason"],
)
EVENTS_DUPLICATE = Counter(
    "voicemon_events_duplicate", "Events whose event_id was already counted in the last 48 h"
)
EVENTS_LATE = Counter("voicemon_events_late", "Accepted events whose hour had already closed")


def observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """``histogram.observe(value)`` for every value, with one update per bucket touched: a
    batch's histogram work is per batch.

    Why private fields: prometheus-client has no public way to observe many values (its
    public ``Histogram`` API is ``observe`` and ``time``), and ``observe`` per value costs
    5.7 times as much: 1,327 ns a value against 231 ns here (500 values, 14 buckets,
    prometheus-client 0.26, this machine; ``timeit`` of both, 2,000 batches). At the
    worker's ~100k events/s that is about 0.1 s of CPU per second, a tenth of a core. So it
    reads the bucket bounds and updates the bucket and sum values as prometheus-client keeps
    them (``_upper_bounds``, ``_buckets``, ``_sum``); tests/unit/test_health.py holds the
    result equal to ``observe`` for every value, so a client that moves them fails there."""
    if not values:
        return
    buckets = histogram._buckets
    for index, count in collections.Counter(
        bisect.bisect_left(histogram._upper_bounds, value) for value in values
    ).items():
        buckets[index].inc(count)
    histogram._sum.inc(sum(values))


END_TO_END_LATENCY = Histogram(
    "voicemon_end_to_end_latency_seconds",
    "duration_ms of artifact_completed events",
    buckets=_LATENCY_BUCKETS,
)
STAGE_DURATION = Histogram(
    "voicemon_stage_duration_seconds",
    "duration_ms of stage_completed events",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)
AI_COST = Counter("voicemon_ai_cost_usd", "AI spend of accepted events, US dollars")
CLICKHOUSE_ROWS = Counter("voicemon_clickhouse_rows_written", "Raw event rows inserted")
CLICKHOUSE_INSERT = Histogram(
    "voicemon_clickhouse_insert_seconds",
    "Time of one columnar insert of raw events",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SNAPSHOTS_EMITTED = Counter(
    "voicemon_snapshots_emitted", "Snapshot rows written and published", ["period_type"]
)
SNAPSHOTS_UNPUBLISHED = Counter(
    "voicemon_snapshots_unpublished",
    "Windows whose snapshot records could not be published this time (reason: too_large, "
    "refused); each is kept and published again on the closer's next tick",
    ["reason"],
)
INGEST_PAUSED = Gauge(
    "voicemon_ingest_paused", "1 while an outage of this dependency pauses consumption",
    ["dependency"],
)  # fmt: skip
WORKER_INFO = Gauge(
    "voicemon_worker_info",
    "1 on every worker process, by role and consumer group: the series dashboards and alert "
    "rules find workers by, whatever the scrape job is called",
    ["role", "consumer_group"],
)
BATCH_SECONDS = Histogram(
    "voicemon_batch_seconds",
    "Time to make one consumed batch durable (decode, Redis, DLQ, ClickHouse)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
API_REQUESTS = Counter(
    "voicemon_api_requests", "Query API requests by route template and status", ["route", "status"]
)
API_SECONDS = Histogram(
    "voicemon_api_request_seconds",
    "Query API request latency by route template",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
ORGANIZATIONS_UPDATED = Counter(
    "voicemon_organizations_updated", "Directory records applied from voice.organizations"
)


class CloserGauges(Collector):
    """The window closer's gauges, exported by the process holding the closer lease alone
    (CONTRACT §8): a worker that loses the lease stops exporting them instead of exporting
    its last values forever. ``voicemon_closer_leader`` is exported by every process."""

    def __init__(self) -> None:
        self.leader = False
        self.watermark_lag_s: float | None = None
        self.close_delay_s: float | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "voicemon_closer_leader", "1 on the one process closing windows",
            value=1.0 if self.leader else 0.0,
        )  # fmt: skip
        if not self.leader:
            return
        if self.watermark_lag_s is not None:
            yield GaugeMetricFamily(
                "voicemon_watermark_lag_seconds",
                "Wall clock minus the global event-time watermark (closer leader only)",
                value=self.watermark_lag_s,
            )
        if self.close_delay_s is not None:
            yield GaugeMetricFamily(
                "voicemon_window_close_delay_seconds",
                "Wall time from the end of the last hour closed to its first snapshot "
                "(closer leader only)",
                value=self.close_delay_s,
            )

    def lost_lease(self) -> None:
        self.leader = False
        self.watermark_lag_s = self.close_delay_s = None


CLOSER = CloserGauges()
REGISTRY.register(CLOSER)


class BrokerOffsets(Collector):
    """The events topic and the consumer group as the broker sees them, from the last
    measurement (consumers/lag.py): exported by every worker, also while ingest is paused.
    Nothing is exported when the last measurement failed or is older than ``max_age_s``, so a
    worker that cannot reach the broker never exports stale numbers."""

    def __init__(self, max_age_s: float = 60.0) -> None:
        self.max_age_s = max_age_s
        self._group = ""
        self._rows: list[tuple[int, int, int | None, int]] = []
        self._measured_at = float("-inf")

    def update(self, group: str, rows: list[tuple[int, int, int | None, int]]) -> None:
        """``rows``: (partition, end offset, committed offset or None, lag) per partition."""
        self._group, self._rows, self._measured_at = group, rows, time.monotonic()

    def clear(self) -> None:
        self._rows = []

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        fresh = time.monotonic() - self._measured_at <= self.max_age_s
        rows = self._rows if fresh else []
        lag = GaugeMetricFamily(
            "voicemon_consumer_lag_messages",
            "Messages of the partition the consumer group has not committed yet (broker view)",
            labels=["consumer_group", "partition"],
        )
        end = CounterMetricFamily(
            "voicemon_input_messages",
            "Messages ever appended to the events topic's partition: its end offset",
            labels=["partition"],
        )
        committed = CounterMetricFamily(
            "voicemon_consumer_committed_messages",
            "The consumer group's committed offset in the partition (broker view)",
            labels=["consumer_group", "partition"],
        )
        for partition, end_offset, committed_offset, messages in rows:
            lag.add_metric([self._group, str(partition)], messages)
            end.add_metric([str(partition)], end_offset)
            if committed_offset is not None:
                committed.add_metric([self._group, str(partition)], committed_offset)
        yield from (lag, end, committed)


BROKER_OFFSETS = BrokerOffsets()
REGISTRY.register(BROKER_OFFSETS)
