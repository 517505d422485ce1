-- Per-profile ad-engagement features for recommendation jobs (issue 6; schema documented in
-- src/adtier/features/schema.py, FEATURE_SCHEMA_VERSION).
-- Design reasoning:
-- * One row per profile, ReplacingMergeTree(watermark) ordered by profile_hash: a recompute
--   writes a new row only for profiles whose features changed, and merges keep the latest.
--   profile_hash (cityHash64(profile_id), as in the event tables) first so a point look-up reads
--   one granule and an erasure (which keeps only the hash) can address the row.
-- * `watermark` is the writer's wall clock in nanoseconds, strictly increasing per write; an
--   export "since W" reads rows with watermark > W (the skip index keeps that scan cheap).
-- * Deletions are rows too (`deleted = 1`, features zeroed): a profile that became kids,
--   opted out or was erased gets a tombstone with a newer watermark, which replaces its live
--   row and reaches consumers through the same incremental export. An erased profile's
--   tombstone carries no profile_id, only profile_sha256 (hex SHA-256 of the id, as in
--   `erasures`), so consumers can match their own ids without us handing the raw id out.
-- * Shares are Map(LowCardinality(String), Float32): only non-zero keys are stored.
CREATE TABLE IF NOT EXISTS profile_features
(
    profile_hash            UInt64,
    profile_id              String,
    profile_sha256          String,
    deleted                 UInt8,
    schema_version          UInt16,
    as_of                   Date,
    window_days             UInt16,
    impressions             UInt32,
    completes               UInt32,
    skips                   UInt32,
    clicks                  UInt32,
    completion_rate         Float32,
    skip_propensity         Float32,
    ctr                     Float32,
    ad_category_affinity    Map(LowCardinality(String), Float32),
    watch_minutes           Float32,
    genre_affinity          Map(LowCardinality(String), Float32),
    ratings                 UInt32,
    rating_sentiment        Float32,
    ad_fatigue              Float32,
    computed_at             DateTime64(3, 'UTC'),
    watermark               UInt64,
    INDEX idx_watermark watermark TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree(watermark)
ORDER BY profile_hash;
