-- Event tables. Shared design reasoning:
-- * Times are DateTime64(3, 'UTC'): `ts` is the event time we use (client time, corrected only
--   when the client clock was off by more than the drift threshold), `client_ts` is what the
--   client said, `sent_at`/`received_at` frame the request. Delta+ZSTD because rows arrive in
--   near time order inside a part.
-- * Partitions are monthly: few, large partitions keep part counts low on a laptop and a month
--   is the natural unit for TTL drops. Retention TTLs drop whole parts (ttl_only_drop_parts).
-- * Enumerations are LowCardinality(String) rather than Enum so a new VAST event type is a code
--   change, not a migration.
-- * `profile_hash` (cityHash64 of profile_id) is materialized and last in the sort key, so it
--   can serve as SAMPLE BY and gives per-profile locality inside a (tenant, day) range.
-- * non_replicated_deduplication_window makes `insert_deduplication_token` work on a single
--   (non-replicated) server and chdb: the flusher re-sends a failed or interrupted flush with
--   the same token, so a retried insert is dropped instead of counted twice.

CREATE TABLE IF NOT EXISTS ad_events
(
    event_id        UUID,
    type            LowCardinality(String),
    ts              DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    client_ts       DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    sent_at         Nullable(DateTime64(3, 'UTC')),
    received_at     DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    clock_skew_ms   Int64 CODEC(ZSTD(1)),
    account_id      String CODEC(ZSTD(1)),
    profile_id      String CODEC(ZSTD(1)),
    profile_hash    UInt64 MATERIALIZED cityHash64(profile_id),
    session_id      String CODEC(ZSTD(1)),
    device          LowCardinality(String),
    country         LowCardinality(String),
    campaign_id     LowCardinality(String),
    creative_id     LowCardinality(String),
    ad_serving_id   String CODEC(ZSTD(1)),
    pod_id          String CODEC(ZSTD(1)),
    pod_position    Nullable(UInt8),
    break_position  LowCardinality(Nullable(String)),
    ad_duration_ms  Nullable(UInt32),
    ad_playhead_ms  Nullable(UInt32),
    content_id      String CODEC(ZSTD(1)),
    error_code      Nullable(UInt16),
    source          LowCardinality(String),   -- batch | pixel
    batch_id        String CODEC(ZSTD(1)),
    key_id          LowCardinality(String),
    INDEX idx_batch batch_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_profile profile_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
-- Campaign is the tenant of ad data (advertisers own campaigns): every advertiser query starts
-- with one campaign, then a date range, then the event type of a funnel step.
ORDER BY (campaign_id, toDate(ts), type, profile_hash)
SAMPLE BY profile_hash
TTL toDateTime(ts) + INTERVAL 400 DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS content_events
(
    event_id        UUID,
    type            LowCardinality(String),   -- content_start|heartbeat|complete|stop, rating
    ts              DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    client_ts       DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    sent_at         Nullable(DateTime64(3, 'UTC')),
    received_at     DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    clock_skew_ms   Int64 CODEC(ZSTD(1)),
    account_id      String CODEC(ZSTD(1)),
    profile_id      String CODEC(ZSTD(1)),
    profile_hash    UInt64 MATERIALIZED cityHash64(profile_id),
    session_id      String CODEC(ZSTD(1)),
    device          LowCardinality(String),
    country         LowCardinality(String),
    content_id      String CODEC(ZSTD(1)),
    position_ms     Nullable(UInt32),
    watched_ms      Nullable(UInt32),
    value           Nullable(Int8),           -- ratings only: -1 thumbs down, 1 up, 2 double up
    source          LowCardinality(String),
    batch_id        String CODEC(ZSTD(1)),
    key_id          LowCardinality(String),
    INDEX idx_batch batch_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_profile profile_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
-- Viewing has no advertiser tenant: its readers are per-profile feature builds and
-- per-title effect queries over a date range, so day first, then title, then profile.
ORDER BY (toDate(ts), content_id, type, profile_hash)
SAMPLE BY profile_hash
TTL toDateTime(ts) + INTERVAL 400 DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

-- Every rejected event, with the raw bytes a client sent, so nothing is lost silently.
-- Kept 30 days: long enough to debug a player release, short enough not to hoard bad data.
CREATE TABLE IF NOT EXISTS rejected_events
(
    received_at     DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    source          LowCardinality(String),
    key_id          LowCardinality(String),
    batch_id        String,
    idx             UInt32,
    event_id        String,
    reason          LowCardinality(String),
    detail          String CODEC(ZSTD(3)),
    raw             String CODEC(ZSTD(3))
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(received_at)
ORDER BY (reason, received_at)
TTL toDateTime(received_at) + INTERVAL 30 DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

-- Provenance: one row per accepted request (batch or pixel), written by the flusher in the
-- same flush as its events, so a row here means the batch's events are stored.
CREATE TABLE IF NOT EXISTS ingest_batches
(
    batch_id        String,
    key_id          LowCardinality(String),
    source          LowCardinality(String),
    received_at     DateTime64(3, 'UTC'),
    sent_at         Nullable(DateTime64(3, 'UTC')),
    body_sha256     String,
    events          UInt32,
    accepted        UInt32,
    duplicates      UInt32,
    rejected        UInt32,
    stored_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY batch_id
TTL toDateTime(received_at) + INTERVAL 400 DAY
SETTINGS non_replicated_deduplication_window = 10000;
