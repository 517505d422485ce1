-- Profile-first daily rollups of the event tables, for segment builds (issue 4).
-- Design reasoning:
-- * The event tables are sorted for advertisers (campaign, day, type, profile) and viewing
--   (day, title, type, profile): `profile_hash` comes last, so a segment build that works in
--   chunks of profiles (ranges of profile_hash) read every granule once per chunk and per event
--   family. These tables are sorted by profile_hash FIRST, then day, so a chunk's range is a
--   contiguous slice and a build reads each row once.
-- * One row per (profile, day, the keys the rule features need), nothing more. Keys are the raw
--   ids (campaign_id, content_id, device, daypart), never labels: a campaign's ad category and
--   a title's genres come from the catalog at build time, so a catalog change applies to the
--   next build without rewriting history.
-- * Filled by materialized views at insert time (one per source table; the activity rollup has
--   two, one per event table). A view only sees its insert block, so a (profile, day, key) can
--   have several rows until merges fold them: readers always GROUP BY / sum / max again.
--   AggregatingMergeTree with SimpleAggregateFunction columns folds them in the background
--   (sum of counts, max of watched_ms, any profile_id) without changing what readers compute.
-- * Exactness vs. the event tables (what the builder computed from raw events before):
--   ad family: impression/complete/skip/click counts per campaign per day; viewing: one row per
--   play (day, session, title) with the largest watched_ms (every viewing event type, ratings
--   included, as before); activity: every ad and viewing event counted per (day, session,
--   device, daypart), so sessions (distinct day x session), active days, recency and the
--   device/daypart shares are the same numbers. `day` is toDate(ts) in UTC, the daypart the
--   UTC hour bands of segments/rules.py. Session ids are kept as cityHash64 (as the builder
--   used them before).
-- * profile_id rides along (any(): one id per hash) so the universe of a chunk and erasure by
--   profile_id work on the rollups alone. Erasure deletes here too (catalog ERASE_TABLES).
-- * Same TTL and dedup window as the event tables. A retried insert that the event table drops
--   (same insert_deduplication_token) never reaches the views: with
--   deduplicate_blocks_in_dependent_materialized_views = 1, which the flusher sets on every
--   insert, ClickHouse skips dependent views for a deduplicated block
--   (tests/integration/test_segments_rollup.py checks it).
-- * Backfill: the INSERT ... SELECTs at the end fold the events stored before this migration.
--   Run it with ingest stopped (embedded start-up does: migrations run before the flushers):
--   events inserted between a view's creation and its backfill would be counted twice.

CREATE TABLE IF NOT EXISTS profile_ad_daily
(
    profile_hash    UInt64,
    day             Date,
    campaign_id     LowCardinality(String),
    profile_id      SimpleAggregateFunction(any, String) CODEC(ZSTD(1)),
    impressions     SimpleAggregateFunction(sum, UInt64),
    completes       SimpleAggregateFunction(sum, UInt64),
    skips           SimpleAggregateFunction(sum, UInt64),
    clicks          SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (profile_hash, day, campaign_id)
TTL day + INTERVAL 400 DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS profile_content_daily
(
    profile_hash    UInt64,
    day             Date,
    session_hash    UInt64,
    content_id      String CODEC(ZSTD(1)),
    profile_id      SimpleAggregateFunction(any, String) CODEC(ZSTD(1)),
    watched_ms      SimpleAggregateFunction(max, UInt32)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (profile_hash, day, session_hash, content_id)
TTL day + INTERVAL 400 DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS profile_activity_daily
(
    profile_hash    UInt64,
    day             Date,
    session_hash    UInt64,
    device          LowCardinality(String),
    daypart         LowCardinality(String),   -- morning | afternoon | evening | late_night (UTC)
    profile_id      SimpleAggregateFunction(any, String) CODEC(ZSTD(1)),
    events          SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (profile_hash, day, session_hash, device, daypart)
TTL day + INTERVAL 400 DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS profile_ad_daily_mv TO profile_ad_daily AS
SELECT cityHash64(pid) AS profile_hash, toDate(ts) AS day, campaign_id,
       any(pid) AS profile_id,
       countIf(type = 'impression') AS impressions, countIf(type = 'complete') AS completes,
       countIf(type = 'skip') AS skips, countIf(type = 'click') AS clicks
FROM (SELECT profile_id AS pid, ts, campaign_id, type FROM ad_events
      WHERE type IN ('impression', 'complete', 'skip', 'click'))
GROUP BY profile_hash, day, campaign_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS profile_content_daily_mv TO profile_content_daily AS
SELECT cityHash64(pid) AS profile_hash, toDate(ts) AS day,
       cityHash64(session_id) AS session_hash, content_id, any(pid) AS profile_id,
       max(ifNull(watched_ms, 0)) AS watched_ms
FROM (SELECT profile_id AS pid, ts, session_id, content_id, watched_ms FROM content_events)
GROUP BY profile_hash, day, session_hash, content_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS profile_activity_ad_mv TO profile_activity_daily AS
SELECT cityHash64(pid) AS profile_hash, toDate(ts) AS day,
       cityHash64(session_id) AS session_hash, device,
       multiIf(toHour(ts) < 6, 'late_night', toHour(ts) < 12, 'morning',
               toHour(ts) < 18, 'afternoon', 'evening') AS daypart,
       any(pid) AS profile_id, count() AS events
FROM (SELECT profile_id AS pid, ts, session_id, device FROM ad_events)
GROUP BY profile_hash, day, session_hash, device, daypart;

CREATE MATERIALIZED VIEW IF NOT EXISTS profile_activity_content_mv TO profile_activity_daily AS
SELECT cityHash64(pid) AS profile_hash, toDate(ts) AS day,
       cityHash64(session_id) AS session_hash, device,
       multiIf(toHour(ts) < 6, 'late_night', toHour(ts) < 12, 'morning',
               toHour(ts) < 18, 'afternoon', 'evening') AS daypart,
       any(pid) AS profile_id, count() AS events
FROM (SELECT profile_id AS pid, ts, session_id, device FROM content_events)
GROUP BY profile_hash, day, session_hash, device, daypart;

-- Backfill what was stored before the views existed (same SELECTs as the views). Emptied
-- first: the ledger records the migration only after its last statement, so one interrupted
-- after a backfill runs again whole, and sums must not double (ingest is stopped meanwhile).
TRUNCATE TABLE IF EXISTS profile_ad_daily;
TRUNCATE TABLE IF EXISTS profile_content_daily;
TRUNCATE TABLE IF EXISTS profile_activity_daily;
INSERT INTO profile_ad_daily
SELECT cityHash64(pid) AS profile_hash, toDate(ts) AS day, campaign_id,
       any(pid) AS profile_id,
       countIf(type = 'impression') AS impressions, countIf(type = 'complete') AS completes,
       countIf(type = 'skip') AS skips, countIf(type = 'click') AS clicks
FROM (SELECT profile_id AS pid, ts, campaign_id, type FROM ad_events
      WHERE type IN ('impression', 'complete', 'skip', 'click'))
GROUP BY profile_hash, day, campaign_id;

INSERT INTO profile_content_daily
SELECT cityHash64(pid) AS profile_hash, toDate(ts) AS day,
       cityHash64(session_id) AS session_hash, content_id, any(pid) AS profile_id,
       max(ifNull(watched_ms, 0)) AS watched_ms
FROM (SELECT profile_id AS pid, ts, session_id, content_id, watched_ms FROM content_events)
GROUP BY profile_hash, day, session_hash, content_id;

INSERT INTO profile_activity_daily
SELECT cityHash64(pid) AS profile_hash, toDate(ts) AS day,
       cityHash64(session_id) AS session_hash, device,
       multiIf(toHour(ts) < 6, 'late_night', toHour(ts) < 12, 'morning',
               toHour(ts) < 18, 'afternoon', 'evening') AS daypart,
       any(pid) AS profile_id, count() AS events
FROM (SELECT profile_id AS pid, ts, session_id, device FROM ad_events
      UNION ALL SELECT profile_id AS pid, ts, session_id, device FROM content_events)
GROUP BY profile_hash, day, session_hash, device, daypart;
