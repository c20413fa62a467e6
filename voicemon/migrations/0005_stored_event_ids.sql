-- The stored event ids (CONTRACT §3.1): every raw insert's ids and positions, by the time
-- they were stored, copied by the materialized view below. A later copy of an event, dated
-- in any hour, is a duplicate if a copy was stored within the dedup horizon (49 h 5 min, see
-- consumers/stored_ids.py), whether or not that copy's raw row is still retained. The key
-- serves both reads: each worker that writes raw rows reads the ids, minute by minute, into
-- its filter of the ids worth a lookup (a range of the first part), and a lookup by id
-- searches each 10 minutes' ids (the second). Kept past the horizon: hours dropped whole.
CREATE TABLE IF NOT EXISTS voicemon.stored_event_ids
(
    stored_at       DateTime64(3, 'UTC'),
    event_id        String,
    kafka_partition UInt32,
    kafka_offset    UInt64,
    batch_index     UInt16
)
ENGINE = MergeTree
PARTITION BY toStartOfHour(stored_at)
ORDER BY (toStartOfTenMinutes(stored_at), event_id)
TTL toDateTime(stored_at) + INTERVAL 51 HOUR
SETTINGS ttl_only_drop_parts = 1;
CREATE MATERIALIZED VIEW IF NOT EXISTS voicemon.stored_event_ids_feed
TO voicemon.stored_event_ids
AS SELECT ingested_at AS stored_at, event_id, kafka_partition, kafka_offset, batch_index
FROM voicemon.pipeline_events;
