-- Measurement: the audit log of advertiser-facing answers (BRIEF §5).
-- * One row per measurement call (advertiser or admin), including refusals (404 on another
--   advertiser's campaign), written before the answer leaves: who (key_id, role, advertiser),
--   what (endpoint, the parameters as JSON), when, how many rows were released and the SHA-256
--   of the exact response body, so a third party holding an answer can prove it is ours.
-- * Append-only MergeTree sorted by time (the admin listing reads the newest first); kept as
--   long as the event data it describes (400 days).
-- * No materialized view for reach here on purpose: reports need exact distinct counts over
--   arbitrary date ranges and breakdowns, and ad_events is already sorted by
--   (campaign_id, day, type, profile_hash), so a report reads one contiguous range.
CREATE TABLE IF NOT EXISTS audit_log
(
    audit_id        String,
    ts              DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    key_id          LowCardinality(String),
    role            LowCardinality(String),
    advertiser_id   String,
    endpoint        LowCardinality(String),
    method          LowCardinality(String),
    parameters      String CODEC(ZSTD(3)),
    status          UInt16,
    row_count       UInt32,
    answer_sha256   String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (ts, audit_id)
TTL toDateTime(ts) + INTERVAL 400 DAY;
