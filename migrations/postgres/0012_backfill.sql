-- 1: history fetched from other servers (backfill): events older than the room's timeline here,
-- at negative positions (from the outliers counter, newest first), which /messages pages
-- through after the timeline. Outliers and soft-failed events keep negative positions too
-- but are not marked, so no reader shows them.
ALTER TABLE events ADD COLUMN backfilled BIGINT NOT NULL DEFAULT 0;
