-- The feed of stored event ids (consumers/stored_ids.py): every raw insert's ids, as
-- xxHash64, by the minute they were stored. Each worker that writes raw rows reads the
-- minutes it has not read into its filter of the ids the store may hold, so that a later
-- copy of an event, dated in any hour, finds its row after its seen-marker is gone
-- (CONTRACT §3.1). Kept while a row stored in that minute may be: 48 h after its
-- occurred_at, which is at most 5 min after it was stored, and its hour's part dropped whole.
CREATE TABLE IF NOT EXISTS voicemon.stored_event_ids
(
    stored_minute DateTime('UTC'),
    id_hash       UInt64
)
ENGINE = MergeTree
PARTITION BY toStartOfHour(stored_minute)
ORDER BY stored_minute
TTL stored_minute + INTERVAL 50 HOUR
SETTINGS ttl_only_drop_parts = 1;
CREATE MATERIALIZED VIEW IF NOT EXISTS voicemon.stored_event_ids_feed
TO voicemon.stored_event_ids
AS SELECT toStartOfMinute(ingested_at) AS stored_minute, xxHash64(event_id) AS id_hash
FROM voicemon.pipeline_events;
