-- One row per accepted event (CONTRACT §6), kept 48 hours by event time.
-- Partitioned by hour so that TTL drops whole parts; (kafka_partition, kafka_offset,
-- batch_index) is the event's position in the input topic, used to make replays idempotent.
CREATE TABLE IF NOT EXISTS voicemon.pipeline_events
(
    event_id        String,
    event_type      LowCardinality(String),
    occurred_at     DateTime64(3, 'UTC'),
    artifact_id     String,
    organization_id Nullable(String),
    stage           LowCardinality(Nullable(String)),
    duration_ms     Nullable(Float64),
    ai_cost_usd     Nullable(Float64),
    error_code      Nullable(String),
    schema_version  UInt16,
    kafka_partition UInt32,
    kafka_offset    UInt64,
    batch_index     UInt16,
    ingested_at     DateTime64(3, 'UTC'),
    INDEX position_idx (kafka_partition, kafka_offset) TYPE minmax GRANULARITY 1
)
ENGINE = MergeTree
PARTITION BY toStartOfHour(occurred_at)
ORDER BY (toStartOfHour(occurred_at), event_type, event_id)
TTL toDateTime(occurred_at) + INTERVAL 48 HOUR
SETTINGS ttl_only_drop_parts = 1
