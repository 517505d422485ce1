-- Campaign reports from bitmaps of dense profile ordinals (issue 5: report p50 <= 250 ms at 50M
-- impressions). Design reasoning:
-- * Why: an exact distinct count over per-profile rows costs at least ~1 s for a campaign with
--   10M rollup rows (measured: README, Measurement). A roaring bitmap of profiles per (campaign,
--   cell, day) makes a flight's reach the cardinality of an OR of <= 31 bitmaps. Bitmaps need
--   small dense integers: over random 64-bit hashes every profile is its own container.
-- * Ordinals: every profile that sends an ad event gets the next integer from one Valkey
--   counter (`ingest/ordinals.py`, a Lua script: atomic across flushers). The flusher records
--   the pairs here BEFORE it inserts the events that carry them (`ad_events.profile_ord`), so a
--   Valkey that lost its map reloads it from this table, and its counter restarts a wide gap
--   above the largest ordinal stored (pairs in flight when Valkey was lost are below it). A
--   profile in flight then can get a second ordinal: both rows are kept (the key includes the
--   ordinal), so an erasure removes both.
--   `profile_key` is the first 16 bytes of SHA-256(profile_id): the erasures table keeps the
--   hex SHA-256, so an erased profile's ordinal is found without its id, and the table holds no
--   raw id. Erasure keeps the row (like the erasure record itself): a late event of an erased
--   profile gets the same ordinal, which readers remove with bitmapAndnot.
-- * Cells: one row per (campaign, dimension, day, value) with bitmaps of the profiles seen
--   (privacy coverage) and reached (impressions), the ten VAST counters, the newest event time,
--   and `unassigned` = events that came without an ordinal (a loader that bypassed the
--   allocator). Readers fall back to the per-profile rollup (sql/0007) for a range with any:
--   the bitmaps would miss those profiles. dimension 'day' has value '' (the whole day).
-- * Erasure: bitmaps are fixed at read time (AND NOT the erased ordinals); counters cannot be,
--   so every event of an erased profile is copied to `ad_erased_events` (by the erasure before
--   it deletes them, and by a view for events that arrive after it) and readers subtract them.
--   It keeps the event id, never the profile; ReplacingMergeTree makes the two copies one.
-- * Dedup: the flusher's token covers the ordinals insert too, and a retried flush that
--   ad_events drops never reaches these views (see sql/0007). ad_erased_events is replaced by
--   (event, batch): the erasure's copy and the view's copy of one stored row are one row after
--   a merge (readers use FINAL), an event stored twice in two batches stays two.
-- * Backfill: existing profiles get ordinals in profile-key order, then the cells are folded
--   from the events joined with them. Run it with ingest stopped, as 0007's.
CREATE TABLE IF NOT EXISTS profile_ordinals
(
    profile_key     FixedString(16),
    ord             UInt32
)
ENGINE = ReplacingMergeTree
ORDER BY (profile_key, ord)
SETTINGS non_replicated_deduplication_window = 10000;

ALTER TABLE ad_events ADD COLUMN IF NOT EXISTS profile_ord UInt32 DEFAULT 0 CODEC(ZSTD(1));

CREATE TABLE IF NOT EXISTS ad_campaign_cells
(
    campaign_id             LowCardinality(String),
    dim                     LowCardinality(String),
    day                     Date,
    value                   String,
    profiles                AggregateFunction(groupBitmap, UInt32),
    reach                   AggregateFunction(groupBitmap, UInt32),
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
    unassigned              SimpleAggregateFunction(sum, UInt64),
    max_ts                  SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (campaign_id, dim, day, value)
TTL day + INTERVAL 400 DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS ad_erased_events
(
    campaign_id     LowCardinality(String),
    day             Date,
    event_id        UUID,
    type            LowCardinality(String),
    device          LowCardinality(String),
    country         LowCardinality(String),
    creative_id     LowCardinality(String),
    break_position  LowCardinality(String),
    batch_id        String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (campaign_id, day, event_id, type, batch_id)
TTL day + INTERVAL 400 DAY
SETTINGS ttl_only_drop_parts = 1;

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
       countIf(type = 'error') AS errors, countIf(profile_ord = 0) AS unassigned,
       max(ts) AS max_ts
FROM ad_events
ARRAY JOIN [('day', ''), ('device', toString(device)), ('country', toString(country)),
            ('creative', toString(creative_id)),
            ('break_position', ifNull(toString(break_position), 'unknown'))] AS cell
GROUP BY campaign_id, dim, day, value;

-- Events of profiles already erased when they arrive (the erasure copies the earlier ones).
-- profile_id, not the materialized profile_hash: a view sees the block the insert sent.
CREATE MATERIALIZED VIEW IF NOT EXISTS ad_erased_events_mv TO ad_erased_events AS
SELECT campaign_id, toDate(ts) AS day, event_id, type, device, country, creative_id,
       ifNull(toString(break_position), 'unknown') AS break_position, batch_id
FROM ad_events
WHERE cityHash64(profile_id) IN (SELECT profile_hash FROM erasures);

-- Backfill. Emptied first: the ledger records the migration only after its last statement, so
-- one interrupted half-way runs again whole.
TRUNCATE TABLE IF EXISTS profile_ordinals;
TRUNCATE TABLE IF EXISTS ad_campaign_cells;
TRUNCATE TABLE IF EXISTS ad_erased_events;

INSERT INTO profile_ordinals
SELECT profile_key, toUInt32(row_number() OVER (ORDER BY profile_key)) AS ord
FROM (SELECT DISTINCT substring(SHA256(profile_id), 1, 16) AS profile_key FROM ad_events)
SETTINGS max_bytes_before_external_sort = 2000000000;

INSERT INTO ad_campaign_cells
SELECT campaign_id, cell.1 AS dim, toDate(ts) AS day, cell.2 AS value,
       groupBitmapStateIf(ord, ord > 0) AS profiles,
       groupBitmapStateIf(ord, ord > 0 AND type = 'impression') AS reach,
       countIf(type = 'impression') AS impressions, countIf(type = 'start') AS starts,
       countIf(type = 'first_quartile') AS first_quartile,
       countIf(type = 'midpoint') AS midpoint, countIf(type = 'third_quartile') AS third_quartile,
       countIf(type = 'complete') AS completes, countIf(type = 'skip') AS skips,
       countIf(type = 'click') AS clicks,
       countIf(type = 'viewable_impression') AS viewable_impressions,
       countIf(type = 'error') AS errors, countIf(ord = 0) AS unassigned,
       max(ts) AS max_ts
FROM (SELECT e.campaign_id AS campaign_id, e.ts AS ts, e.type AS type, e.device AS device,
             e.country AS country, e.creative_id AS creative_id,
             e.break_position AS break_position, o.ord AS ord
      FROM ad_events AS e
      LEFT JOIN profile_ordinals AS o
             -- FixedString to FixedString: against a String, a key ending in a zero byte
             -- would not match (the FixedString side loses its trailing zeros)
             ON o.profile_key = toFixedString(substring(SHA256(e.profile_id), 1, 16), 16))
ARRAY JOIN [('day', ''), ('device', toString(device)), ('country', toString(country)),
            ('creative', toString(creative_id)),
            ('break_position', ifNull(toString(break_position), 'unknown'))] AS cell
GROUP BY campaign_id, dim, day, value
SETTINGS max_bytes_before_external_group_by = 2000000000, join_use_nulls = 0;

INSERT INTO ad_erased_events
SELECT campaign_id, toDate(ts) AS day, event_id, type, device, country, creative_id,
       ifNull(toString(break_position), 'unknown') AS break_position, batch_id
FROM ad_events
WHERE profile_hash IN (SELECT profile_hash FROM erasures);
