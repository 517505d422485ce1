-- Measurement rollup: one row per (campaign, day, breakdown cell, profile) with its event counts
-- by VAST event type, for campaign reports and frequency (issue 5). Design reasoning:
-- * Why per profile and not per cell with a sketch or bitmap: reach must stay EXACT over any
--   date range and breakdown, and an erased profile must drop out of every number at once.
--   A per-cell uniqExact/groupBitmap state cannot forget one profile (and groupBitmap over
--   random 64-bit hashes degenerates: one roaring container per profile). Keeping
--   profile_hash as a key column lets an erasure delete the profile's rows, and readers filter
--   erased profiles exactly at query time (`profile_hash NOT IN (SELECT profile_hash FROM
--   erasures)`) for the events of an erased profile that arrive late.
-- * What it saves: the event table holds ~6 rows per ad play (impression, start, quartiles,
--   complete, viewable ...); here a profile's plays of a campaign in one cell on one day are one
--   row with ten counters, so a report reads several times fewer rows and no `type` column,
--   and `data_through` is a max over this table instead of a scan of the campaign's events.
-- * Sort key: tenant (campaign), day, the low-cardinality breakdown columns, then the profile
--   (PostHog/Plausible layout): a report reads one contiguous range of its campaign and days.
--   break_position is stored as 'unknown' when absent (the report's label for it).
-- * AggregatingMergeTree with SimpleAggregateFunction columns: a view only sees its insert
--   block, so one key can have several rows until merges fold them (sum of counts, max of ts);
--   readers always aggregate again, so unmerged parts never change an answer.
-- * Dedup: a retried flush (same insert_deduplication_token) that ad_events drops never reaches
--   the view: ClickHouse skips dependent views for a deduplicated block when
--   deduplicate_blocks_in_dependent_materialized_views = 1, which the flusher sets on every
--   insert (tests/integration/test_measure_rollup.py checks it). Same dedup window and TTL as
--   ad_events.
-- * Backfill: the INSERT ... SELECT at the end folds the events stored before this migration.
--   Run it with ingest stopped (embedded start-up does: migrations run before the flushers;
--   on a fleet pause the flushers, the Redis buffer keeps accepting): events inserted between
--   the view's creation and the backfill would be counted twice.
CREATE TABLE IF NOT EXISTS ad_campaign_daily
(
    campaign_id             LowCardinality(String),
    day                     Date,
    device                  LowCardinality(String),
    country                 LowCardinality(String),
    creative_id             LowCardinality(String),
    break_position          LowCardinality(String),
    profile_hash            UInt64,
    impressions             SimpleAggregateFunction(sum, UInt64),
    starts                  SimpleAggregateFunction(sum, UInt64),
    first_quartile          SimpleAggregateFunction(sum, UInt64),
    midpoint                SimpleAggregateFunction(sum, UInt64),
    third_quartile          SimpleAggregateFunction(sum, UInt64),
    completes               SimpleAggregateFunction(sum, UInt64),
    skips                   SimpleAggregateFunction(sum, UInt64),
    clicks                  SimpleAggregateFunction(sum, UInt64),
    viewable_impressions    SimpleAggregateFunction(sum, UInt64),
    errors                  SimpleAggregateFunction(sum, UInt64),
    max_ts                  SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (campaign_id, day, device, country, creative_id, break_position, profile_hash)
TTL day + INTERVAL 400 DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS ad_campaign_daily_mv TO ad_campaign_daily AS
SELECT campaign_id, toDate(ts) AS day, device, country, creative_id, bp AS break_position,
       cityHash64(pid) AS profile_hash,
       countIf(type = 'impression') AS impressions, countIf(type = 'start') AS starts,
       countIf(type = 'first_quartile') AS first_quartile,
       countIf(type = 'midpoint') AS midpoint, countIf(type = 'third_quartile') AS third_quartile,
       countIf(type = 'complete') AS completes, countIf(type = 'skip') AS skips,
       countIf(type = 'click') AS clicks,
       countIf(type = 'viewable_impression') AS viewable_impressions,
       countIf(type = 'error') AS errors, max(ts) AS max_ts
FROM (SELECT campaign_id, ts, device, country, creative_id, type, profile_id AS pid,
             ifNull(toString(break_position), 'unknown') AS bp FROM ad_events)
GROUP BY campaign_id, day, device, country, creative_id, break_position, profile_hash;

-- Backfill what was stored before the view existed (the view's SELECT). profile_hash is
-- recomputed from profile_id (the same cityHash64 as ad_events' materialized column) because a
-- view's source block is what the insert sent.
-- Emptied first: the ledger records the migration only after its last statement, so one
-- interrupted after the backfill runs again whole, and sums must not double.
TRUNCATE TABLE IF EXISTS ad_campaign_daily;
INSERT INTO ad_campaign_daily
SELECT campaign_id, toDate(ts) AS day, device, country, creative_id, bp AS break_position,
       cityHash64(pid) AS profile_hash,
       countIf(type = 'impression') AS impressions, countIf(type = 'start') AS starts,
       countIf(type = 'first_quartile') AS first_quartile,
       countIf(type = 'midpoint') AS midpoint, countIf(type = 'third_quartile') AS third_quartile,
       countIf(type = 'complete') AS completes, countIf(type = 'skip') AS skips,
       countIf(type = 'click') AS clicks,
       countIf(type = 'viewable_impression') AS viewable_impressions,
       countIf(type = 'error') AS errors, max(ts) AS max_ts
FROM (SELECT campaign_id, ts, device, country, creative_id, type, profile_id AS pid,
             ifNull(toString(break_position), 'unknown') AS bp FROM ad_events)
GROUP BY campaign_id, day, device, country, creative_id, break_position, profile_hash;
