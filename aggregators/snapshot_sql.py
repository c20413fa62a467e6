"""The SQL of snapshots: an hour from its raw events, and snapshot rows merged over a range.

``HOUR_SQL`` reads an hour's raw events, deduplicated by ``event_id`` across every retained
hour (an event counts only where its first stored copy lies: a conflicting copy of an event
dated in another hour never counts twice in a day or range, CONTRACT §3.1), in one query with
GROUPING SETS (platform, each organization, each stage, each organization x stage);
percentiles are exact nearest-rank (CONTRACT §4). ``MERGED_*_SQL`` merge the newest rows of
a range per scope: counts and costs summed, averages as sums, sketches summed.
"""

from __future__ import annotations

from voicemon import sketch


def _nearest_rank_sql(values: str, p: float) -> str:
    n = f"length({values})"
    index = f"least(intDiv({n} * {round(p * 100)}, 100), {n} - 1) + 1"
    return f"if({n} = 0, 0, {values}[{index}])"


HOUR_SQL = f"""
SELECT
    by_organization, by_stage, organization, stage,
    artifacts_received, artifacts_completed, artifacts_failed, ai_cost_usd,
    length(latencies) AS latency_samples, arraySum(latencies) AS latency_sum,
    {_nearest_rank_sql("latencies", 0.50)} AS p50_latency_ms,
    {_nearest_rank_sql("latencies", 0.95)} AS p95_latency_ms,
    {_nearest_rank_sql("latencies", 0.99)} AS p99_latency_ms,
    latency_sketch,
    started, completed, failed,
    length(durations) AS duration_samples, arraySum(durations) AS duration_sum,
    {_nearest_rank_sql("durations", 0.95)} AS p95_duration_ms,
    duration_sketch
FROM (
    SELECT
        grouping(organization) = 0 AS by_organization,
        grouping(stage) = 0 AS by_stage,
        organization, stage,
        countIf(event_type = 'artifact_received') AS artifacts_received,
        countIf(event_type = 'artifact_completed') AS artifacts_completed,
        countIf(event_type = 'artifact_failed') AS artifacts_failed,
        sum(ifNull(ai_cost_usd, 0)) AS ai_cost_usd,
        arraySort(groupArrayIf(duration, is_latency)) AS latencies,
        sumMapIf(map({sketch.bucket_sql("duration")}, toUInt64(1)), is_latency) AS latency_sketch,
        countIf(event_type = 'stage_started') AS started,
        countIf(event_type = 'stage_completed') AS completed,
        countIf(event_type = 'stage_failed') AS failed,
        arraySort(groupArrayIf(duration, is_stage_duration)) AS durations,
        sumMapIf(map({sketch.bucket_sql("duration")}, toUInt64(1)), is_stage_duration)
            AS duration_sketch
    FROM (
        SELECT
            event_type,
            ifNull(organization_id, '') AS organization,
            ifNull(stage, '') AS stage,
            ifNull(duration_ms, 0) AS duration,
            event_type = 'artifact_completed' AND duration_ms IS NOT NULL AS is_latency,
            event_type = 'stage_completed' AND duration_ms IS NOT NULL AS is_stage_duration,
            ai_cost_usd
        FROM voicemon.pipeline_events
        WHERE occurred_at >= fromUnixTimestamp64Milli({{start:Int64}})
          AND occurred_at < fromUnixTimestamp64Milli({{end:Int64}})
          AND (event_id, (ingested_at, kafka_partition, kafka_offset, batch_index)) IN (
              SELECT event_id, min((ingested_at, kafka_partition, kafka_offset, batch_index))
              FROM voicemon.pipeline_events
              WHERE event_id IN (
                  SELECT event_id FROM voicemon.pipeline_events
                  WHERE occurred_at >= fromUnixTimestamp64Milli({{start:Int64}})
                    AND occurred_at < fromUnixTimestamp64Milli({{end:Int64}}))
              GROUP BY event_id)
        LIMIT 1 BY event_id
    )
    GROUP BY GROUPING SETS ((), (organization), (stage), (organization, stage))
)
"""

MERGED_SNAPSHOT_SQL = """
SELECT scope, organization_id,
    sum(s.artifacts_received) AS artifacts_received,
    sum(s.artifacts_completed) AS artifacts_completed,
    sum(s.artifacts_failed) AS artifacts_failed,
    sum(s.ai_cost_usd) AS ai_cost_usd,
    sum(s.latency_samples) AS latency_samples,
    sum(s.avg_latency_ms * s.latency_samples) AS latency_sum,
    sumMap(s.latency_sketch) AS latency_sketch
FROM voicemon.snapshots_latest AS s
WHERE period_type = {period_type:String}
  AND period_start >= fromUnixTimestamp64Milli({start:Int64})
  AND period_start <= fromUnixTimestamp64Milli({end:Int64})
  {where}
GROUP BY scope, organization_id
"""

MERGED_STAGE_SQL = """
SELECT scope, organization_id, stage,
    sum(s.started) AS started,
    sum(s.completed) AS completed,
    sum(s.failed) AS failed,
    sum(s.duration_samples) AS duration_samples,
    sum(s.avg_duration_ms * s.duration_samples) AS duration_sum,
    sumMap(s.duration_sketch) AS duration_sketch
FROM voicemon.stage_snapshots_latest AS s
WHERE period_type = {period_type:String}
  AND period_start >= fromUnixTimestamp64Milli({start:Int64})
  AND period_start <= fromUnixTimestamp64Milli({end:Int64})
  {where}
GROUP BY scope, organization_id, stage
"""
