-- Catalog (advertisers, campaigns, creatives, titles), profiles and privacy records.
-- Shared design reasoning:
-- * Catalog tables are small (thousands to a few hundred thousand rows) and written by bulk
--   admin upserts, so each is a ReplacingMergeTree(version) ordered by its own id only: a
--   re-upsert writes a newer version and merges keep the latest. The id alone is the sort key
--   on purpose: putting a parent id first (advertiser_id, campaign_id) would make a re-parented
--   row a second row instead of a replacement. Readers use FINAL (cheap at this size) or
--   argMax(..., version) when they join.
-- * `version` is the writer's wall clock in nanoseconds (as in api_keys); one request writes one
--   version, and duplicates inside a request are resolved (last item wins) before the insert.
-- * Ids are String (at most 64 characters, checked by the API); enumerations are
--   LowCardinality(String) so adding a title kind or a rating is a code change, not a migration.

CREATE TABLE IF NOT EXISTS advertisers
(
    advertiser_id   String,
    name            String,
    updated_at      DateTime64(3, 'UTC'),
    version         UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY advertiser_id;

-- A campaign belongs to one advertiser (the tenant of measurement). Flight dates are Dates
-- (an advertiser books days, not instants). frequency_cap counts impressions per profile per
-- day, 0 = no cap. holdout_percent (0..50) is the share of eligible profiles kept out of the
-- campaign so content effects can be measured as lift rather than observationally.
CREATE TABLE IF NOT EXISTS campaigns
(
    campaign_id         String,
    advertiser_id       String,
    name                String,
    ad_category         LowCardinality(String),           -- IAB content taxonomy id, e.g. IAB18
    start_date          Date,
    end_date            Date,
    frequency_cap       UInt32,
    holdout_percent     Float64,
    promoted_title_id   Nullable(String),
    promoted_genre      LowCardinality(Nullable(String)),
    updated_at          DateTime64(3, 'UTC'),
    version             UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY campaign_id;

CREATE TABLE IF NOT EXISTS creatives
(
    creative_id     String,
    campaign_id     String,
    name            String,
    duration_ms     UInt32,
    updated_at      DateTime64(3, 'UTC'),
    version         UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY creative_id;

-- Titles: films, series and their episodes (an episode names its series). Genres are an array
-- of low-cardinality strings so `has(genres, g)` and arrayJoin serve genre features directly.
CREATE TABLE IF NOT EXISTS titles
(
    content_id      String,
    name            String,
    kind            LowCardinality(String),           -- film | series | episode
    series_id       Nullable(String),
    genres          Array(LowCardinality(String)),
    maturity        LowCardinality(String),           -- G, PG, PG-13, R, TV-Y ... TV-MA
    duration_ms     UInt32,
    updated_at      DateTime64(3, 'UTC'),
    version         UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY content_id;

-- Profiles as the account owner declared them. `kind = 'kids'` keeps a profile out of every
-- segment, lookalike and feature export (brief §5). Erasure deletes the profile's rows here.
CREATE TABLE IF NOT EXISTS profiles
(
    profile_id      String,
    account_id      String,
    kind            LowCardinality(String),           -- adult | kids
    updated_at      DateTime64(3, 'UTC'),
    version         UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY profile_id;

-- Opt-outs are sticky: there is no opt-in endpoint, and the writer only inserts profiles not
-- already recorded, so the first opt-out time is the one kept. Readers need no FINAL to ask
-- "is this profile opted out" (any row means yes). An erasure does not remove the opt-out: the
-- suppression record is what keeps a returning profile out of targeting.
CREATE TABLE IF NOT EXISTS privacy_optouts
(
    profile_id      String,
    opted_out_at    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY profile_id;

-- One row per erasure request. The profile id itself is not kept: `profile_hash` is
-- cityHash64(profile_id), the same function as the event tables' materialized profile_hash,
-- so late-arriving events of an erased profile can be found and filtered; `profile_sha256`
-- (hex) is what exports emit as a deletion, so downstream systems can match their own ids
-- without us handing out the raw id. Ordered by time: exports read it "since a watermark".
CREATE TABLE IF NOT EXISTS erasures
(
    profile_hash    UInt64,
    profile_sha256  String,
    erased_at       DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
ORDER BY (erased_at, profile_hash);
