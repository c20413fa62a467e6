-- Raw inserts are idempotent: each carries an insert_deduplication_token derived from its
-- rows (consumers/raw_writer.py), and the table remembers the tokens of its last 1,000
-- inserts, so a retried insert, or the same chunk written by a second store worker, leaves
-- one copy. Plain MergeTree keeps no tokens unless this window is set (the replicated
-- tables of a cluster keep them by replicated_deduplication_window, on by default).
ALTER TABLE voicemon.pipeline_events MODIFY SETTING non_replicated_deduplication_window = 1000;
