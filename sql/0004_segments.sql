-- Segments (first-party audiences): definitions and versioned membership.
-- Shared design reasoning:
-- * A segment's definition and its build state live in one small ReplacingMergeTree row per
--   segment. Every state change (created, building, ready, failed) writes a whole new row with
--   a larger `row_version` (the writer's wall clock in nanoseconds); readers use FINAL (the
--   table holds thousands of rows, not millions). `version` is something else: the membership
--   version now served (0 = never built). A failed build writes status 'failed' and its error
--   but carries the previous `version`, `size`, `built_at` and `data_through` forward, so the
--   previous membership stays the one readers use.
-- * Membership is written as a whole new version next to the old one, and becomes current only
--   when the segment row naming that version lands (one insert: atomic for readers). Readers
--   always filter `segment_id = ? AND version = <segments.version>`, so a half-written version
--   is never visible. Versions older than the previous one are deleted after a swap; the
--   previous one is kept so a reader that just read the old version number still finds it.
-- * `segment_members` is sorted by (segment_id, version, profile_id): reading or intersecting one
--   segment's current version is a contiguous range scan. `profile_hash` (cityHash64, the same as
--   the event tables') is materialized for joins with the privacy exclusions.
-- * Version 0 of a static segment holds its uploaded profile list (the source, before
--   exclusions); builds write versions >= 1, so version 0 is never read as membership.
-- * Owner is the advertiser id, or '' for a platform segment (visible to every advertiser).

CREATE TABLE IF NOT EXISTS segments
(
    segment_id      String,
    name            String,
    kind            LowCardinality(String),           -- rule | lookalike | static
    owner           String,                           -- advertiser_id, '' = platform
    definition      String CODEC(ZSTD(3)),            -- JSON: the rule tree / seed + percent
    status          LowCardinality(String),           -- pending | building | ready | failed
    version         UInt64,                           -- membership version served, 0 = none
    size            UInt64,                           -- members in that version
    built_at        Nullable(DateTime64(3, 'UTC')),   -- when that version was built
    data_through    Nullable(DateTime64(3, 'UTC')),   -- latest event time the build saw
    error           String,                           -- why the last build failed ('' if not)
    created_at      DateTime64(3, 'UTC'),
    created_by      String,                           -- key_id that created it
    updated_at      DateTime64(3, 'UTC'),
    row_version     UInt64
)
ENGINE = ReplacingMergeTree(row_version)
ORDER BY segment_id;

CREATE TABLE IF NOT EXISTS segment_members
(
    segment_id      String,
    version         UInt64,
    profile_id      String CODEC(ZSTD(1)),
    profile_hash    UInt64 MATERIALIZED cityHash64(profile_id)
)
ENGINE = MergeTree
ORDER BY (segment_id, version, profile_id);
