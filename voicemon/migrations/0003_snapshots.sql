-- Hourly and daily snapshots (CONTRACT §6). One row per (period_type, scope,
-- organization_id, period_start) and version; ReplacingMergeTree keeps the newest version.
-- Partitioned by period type and day so that a part never mixes retention classes and TTL
-- drops whole parts: hourly rows 7 days, daily rows 90 days after period_start.
CREATE TABLE IF NOT EXISTS voicemon.snapshots
(
    period_type         LowCardinality(String),
    scope               LowCardinality(String),
    organization_id     String,
    period_start        DateTime('UTC'),
    period_end          DateTime('UTC'),
    artifacts_received  UInt64,
    artifacts_completed UInt64,
    artifacts_failed    UInt64,
    failure_rate        Float64,
    latency_samples     UInt64,
    avg_latency_ms      Float64,
    p50_latency_ms      Float64,
    p95_latency_ms      Float64,
    p99_latency_ms      Float64,
    ai_cost_usd         Float64,
    latency_sketch      Map(Int32, UInt64),
    version             UInt64,
    computed_at         DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY (period_type, toYYYYMMDD(period_start))
ORDER BY (period_type, scope, organization_id, period_start)
TTL period_start + toIntervalDay(if(period_type = 'hourly', 7, 90))
SETTINGS ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS voicemon.stage_snapshots
(
    period_type      LowCardinality(String),
    scope            LowCardinality(String),
    organization_id  String,
    period_start     DateTime('UTC'),
    stage            LowCardinality(String),
    period_end       DateTime('UTC'),
    started          UInt64,
    completed        UInt64,
    failed           UInt64,
    failure_rate     Float64,
    duration_samples UInt64,
    avg_duration_ms  Float64,
    p95_duration_ms  Float64,
    duration_sketch  Map(Int32, UInt64),
    version          UInt64,
    computed_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY (period_type, toYYYYMMDD(period_start))
ORDER BY (period_type, scope, organization_id, period_start, stage)
TTL period_start + toIntervalDay(if(period_type = 'hourly', 7, 90))
SETTINGS ttl_only_drop_parts = 1;

-- Exactly one row, the newest version, per key: what staff SQL and the query API read.
CREATE VIEW IF NOT EXISTS voicemon.snapshots_latest AS
SELECT * FROM voicemon.snapshots FINAL;

CREATE VIEW IF NOT EXISTS voicemon.stage_snapshots_latest AS
SELECT * FROM voicemon.stage_snapshots FINAL;

-- The organization directory, fed by the compacted voice.organizations topic.
CREATE TABLE IF NOT EXISTS voicemon.organizations
(
    organization_id String,
    name            String,
    updated_at      DateTime64(3, 'UTC'),
    deleted         UInt8 DEFAULT 0
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY organization_id
