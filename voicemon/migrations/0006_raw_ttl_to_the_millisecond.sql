-- A raw row lives until its occurred_at, to the millisecond, is 48 h old (CONTRACT §3.2,
-- §6): toDateTime() drops the milliseconds, so the TTL of 0002 could drop the row of an
-- event at S.999 from S + 48 h on, while the late rule still accepts it until S.999 + 48 h
-- (accepted, counted, and no row). One more second covers the milliseconds. Existing
-- parts keep the TTL they were written with (a second earlier): not rewritten.
ALTER TABLE voicemon.pipeline_events MODIFY TTL toDateTime(occurred_at) + INTERVAL 48 HOUR + INTERVAL 1 SECOND SETTINGS materialize_ttl_after_modify = 0
