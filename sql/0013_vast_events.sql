-- VAST 4.2 conformance: every tracking event of the schema is stored (ingest/vast_events.py),
-- SSAI beacons keep who fired them, and the campaign rollups count MRC viewability.
-- Design reasoning:
-- * The new event types need no column: `type` is LowCardinality(String) (see 0001).
-- * `server_side` is VAST [SERVERSIDE] (0 client, 1 server on the client's behalf, 2 server on
--   its own). It is not part of the event id, so a player's and a stitcher's beacon of one ad
--   play and event are one row; the column says which of them arrived first.
-- * `progress_offset` is the Tracking element's offset of a progress event (HH:MM:SS.mmm or n%,
--   '' for other events); `content_playhead_ms` is [MEDIAPLAYHEAD]/[CONTENTPLAYHEAD];
--   `universal_ad_id` is [UNIVERSALADID] ("registry value"); `reason_code` is [REASON] of
--   verificationNotExecuted.
-- * Rollups: MRC viewability needs the measured impressions (viewable + not viewable) and the
--   undetermined ones, so both rollups get `not_viewable_impressions` and `undetermined`
--   counters, and their views are re-created with the two new countIf. Before this migration
--   these events were rejected at ingest, so no stored event needs a backfill: existing rows
--   get 0, which is their count. Run with ingest stopped, as 0007 and 0011 (embedded start-up
--   does): an event inserted between a view's DROP and CREATE would miss the rollup.
ALTER TABLE ad_events ADD COLUMN IF NOT EXISTS server_side UInt8 DEFAULT 0;
ALTER TABLE ad_events ADD COLUMN IF NOT EXISTS progress_offset LowCardinality(String) DEFAULT '';
ALTER TABLE ad_events ADD COLUMN IF NOT EXISTS content_playhead_ms Nullable(UInt32);
ALTER TABLE ad_events ADD COLUMN IF NOT EXISTS universal_ad_id String DEFAULT '' CODEC(ZSTD(1));
ALTER TABLE ad_events ADD COLUMN IF NOT EXISTS reason_code Nullable(UInt16);

ALTER TABLE ad_campaign_daily ADD COLUMN IF NOT EXISTS not_viewable_impressions SimpleAggregateFunction(sum, UInt64) AFTER viewable_impressions;
ALTER TABLE ad_campaign_daily ADD COLUMN IF NOT EXISTS undetermined SimpleAggregateFunction(sum, UInt64) AFTER not_viewable_impressions;
ALTER TABLE ad_campaign_cells ADD COLUMN IF NOT EXISTS not_viewable_impressions SimpleAggregateFunction(sum, UInt64) AFTER viewable_impressions;
ALTER TABLE ad_campaign_cells ADD COLUMN IF NOT EXISTS undetermined SimpleAggregateFunction(sum, UInt64) AFTER not_viewable_impressions;

-- The views of 0007 and 0011 with the two viewability counters added (same SELECT otherwise).
DROP VIEW IF EXISTS ad_campaign_daily_mv;
CREATE MATERIALIZED VIEW IF NOT EXISTS ad_campaign_daily_mv TO ad_campaign_daily AS
SELECT campaign_id, toDate(ts) AS day, device, country, creative_id, bp AS break_position,
       cityHash64(pid) AS profile_hash,
       countIf(type = 'impression') AS impressions, countIf(type = 'start') AS starts,
       countIf(type = 'first_quartile') AS first_quartile,
       countIf(type = 'midpoint') AS midpoint, countIf(type = 'third_quartile') AS third_quartile,
       countIf(type = 'complete') AS completes, countIf(type = 'skip') AS skips,
       countIf(type = 'click') AS clicks,
       countIf(type = 'viewable_impression') AS viewable_impressions,
       countIf(type = 'not_viewable') AS not_viewable_impressions,
       countIf(type = 'view_undetermined') AS undetermined,
       countIf(type = 'error') AS errors, max(ts) AS max_ts
FROM (SELECT campaign_id, ts, device, country, creative_id, type, profile_id AS pid,
             ifNull(toString(break_position), 'unknown') AS bp FROM ad_events)
GROUP BY campaign_id, day, device, country, creative_id, break_position, profile_hash;

DROP VIEW IF EXISTS ad_campaign_cells_mv;
CREATE MATERIALIZED VIEW IF NOT EXISTS ad_campaign_cells_mv TO ad_campaign_cells AS
SELECT campaign_id, cell.1 AS dim, toDate(ts) AS day, cell.2 AS value,
       groupBitmapStateIf(profile_ord, profile_ord > 0) AS profiles,
       groupBitmapStateIf(profile_ord, profile_ord > 0 AND type = 'impression') AS reach,
       countIf(type = 'impression') AS impressions, countIf(type = 'start') AS starts,
       countIf(type = 'first_quartile') AS first_quartile,
       countIf(type = 'midpoint') AS midpoint, countIf(type = 'third_quartile') AS third_quartile,
       countIf(type = 'complete') AS completes, countIf(type = 'skip') AS skips,
       countIf(type = 'click') AS clicks,
       countIf(type = 'viewable_impression') AS viewable_impressions,
       countIf(type = 'not_viewable') AS not_viewable_impressions,
       countIf(type = 'view_undetermined') AS undetermined,
       countIf(type = 'error') AS errors, countIf(profile_ord = 0) AS unassigned,
       max(ts) AS max_ts
FROM ad_events
ARRAY JOIN [('day', ''), ('device', toString(device)), ('country', toString(country)),
            ('creative', toString(creative_id)),
            ('break_position', ifNull(toString(break_position), 'unknown'))] AS cell
GROUP BY campaign_id, dim, day, value;
