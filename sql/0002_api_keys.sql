-- API keys, stored as SHA-256 of the secret (keys are 256-bit random, so a fast unsalted hash
-- is safe and lets the hot path look a key up by hash). Revocation writes a newer version;
-- ReplacingMergeTree keeps the latest per key_id, and readers use FINAL (the table is tiny).
CREATE TABLE IF NOT EXISTS api_keys
(
    key_id          String,
    key_hash        String,
    role            LowCardinality(String),   -- ingest | advertiser | recs | admin
    advertiser_id   String,
    name            String,
    created_at      DateTime64(3, 'UTC'),
    revoked_at      Nullable(DateTime64(3, 'UTC')),
    version         UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY key_id;
