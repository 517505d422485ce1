-- Break and session rollups for ad-induced abandonment (issue 5, content effects).
-- Design reasoning:
-- * What the abandonment query needs: per ad break (one pod_id in one session) its last ad
--   event time, how many distinct ads it held (only as 1, 2, 3, 4+), which campaigns it carried
--   and its viewer; per session the time of its last event of any kind. From the raw tables
--   that means grouping every ad event and every viewing event of the flight (minutes at 50M
--   impressions: ~6 ad events per impression, all read twice). Here a break is one row per
--   day and a session one row per day, so the query reads several times fewer, narrower rows.
-- * Keyed by day first: the query's only filter is the flight's days, and `day` is toDate(ts)
--   in UTC exactly as the raw query filters, so a break or session that spans midnight is cut
--   at the same place. Re-aggregating the day rows of a range (max of times, merge of the
--   uniqUpTo(4) states, campaigns) gives the raw answer over the same range.
-- * `profile_hash` is part of the key (last: a session normally has one profile) so an erasure
--   deletes exactly the profile's rows here too (catalog ERASE_TABLES), and readers leave out
--   kids, opted-out and erased profiles by hash, as the raw query does per event, even if a
--   client sent one session id for several profiles.
-- * Session and pod ids are kept as cityHash64 (what the raw query grouped by).
-- * AggregatingMergeTree: a view only sees its insert block, so one key can have several rows
--   until merges fold them; readers always aggregate again. Same TTL and dedup window as the
--   event tables; a retried flush that the event table drops never reaches the views
--   (deduplicate_blocks_in_dependent_materialized_views = 1 on every flush insert).
-- * Backfill at the end (emptied first, so a re-run does not double): run with ingest stopped,
--   as for 0007 and 0009 (embedded start-up does; a fleet's migrators hold the migration lease).
--   Its GROUP BYs spill to disk past 2 GB: at 296M ad events they held ~11 GB in memory.
CREATE TABLE IF NOT EXISTS ad_breaks_daily
(
    day             Date,
    session_hash    UInt64,
    pod_hash        UInt64,
    break_end       SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    ads             AggregateFunction(uniqUpTo(4), String),
    campaigns       SimpleAggregateFunction(groupUniqArrayArray, Array(String)),
    profile_hash    UInt64
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, session_hash, pod_hash, profile_hash)
TTL day + INTERVAL 400 DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS session_ends_daily
(
    day             Date,
    session_hash    UInt64,
    last_ts         SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    profile_hash    UInt64
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, session_hash, profile_hash)
TTL day + INTERVAL 400 DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS ad_breaks_daily_mv TO ad_breaks_daily AS
SELECT toDate(ts) AS day, cityHash64(session_id) AS session_hash, cityHash64(pod_id) AS pod_hash,
       max(ts) AS break_end, uniqUpToState(4)(ad_serving_id) AS ads,
       groupUniqArray(toString(campaign_id)) AS campaigns, cityHash64(pid) AS profile_hash
FROM (SELECT ts, session_id, pod_id, ad_serving_id, campaign_id, profile_id AS pid
      FROM ad_events WHERE pod_id != '')
GROUP BY day, session_hash, pod_hash, profile_hash;

CREATE MATERIALIZED VIEW IF NOT EXISTS session_ends_ad_mv TO session_ends_daily AS
SELECT toDate(ts) AS day, cityHash64(session_id) AS session_hash, max(ts) AS last_ts,
       cityHash64(pid) AS profile_hash
FROM (SELECT ts, session_id, profile_id AS pid FROM ad_events)
GROUP BY day, session_hash, profile_hash;

CREATE MATERIALIZED VIEW IF NOT EXISTS session_ends_content_mv TO session_ends_daily AS
SELECT toDate(ts) AS day, cityHash64(session_id) AS session_hash, max(ts) AS last_ts,
       cityHash64(pid) AS profile_hash
FROM (SELECT ts, session_id, profile_id AS pid FROM content_events)
GROUP BY day, session_hash, profile_hash;

TRUNCATE TABLE IF EXISTS ad_breaks_daily;
TRUNCATE TABLE IF EXISTS session_ends_daily;
INSERT INTO ad_breaks_daily
SELECT toDate(ts) AS day, cityHash64(session_id) AS session_hash, cityHash64(pod_id) AS pod_hash,
       max(ts) AS break_end, uniqUpToState(4)(ad_serving_id) AS ads,
       groupUniqArray(toString(campaign_id)) AS campaigns, cityHash64(pid) AS profile_hash
FROM (SELECT ts, session_id, pod_id, ad_serving_id, campaign_id, profile_id AS pid
      FROM ad_events WHERE pod_id != '')
GROUP BY day, session_hash, pod_hash, profile_hash
SETTINGS max_bytes_before_external_group_by = 2000000000;

INSERT INTO session_ends_daily
SELECT toDate(ts) AS day, cityHash64(session_id) AS session_hash, max(ts) AS last_ts,
       cityHash64(pid) AS profile_hash
FROM (SELECT ts, session_id, profile_id AS pid FROM ad_events
      UNION ALL
      SELECT ts, session_id, profile_id AS pid FROM content_events)
GROUP BY day, session_hash, profile_hash
SETTINGS max_bytes_before_external_group_by = 2000000000;
