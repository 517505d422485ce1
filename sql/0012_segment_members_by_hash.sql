-- segment_members sorted by (segment_id, version, profile_hash) instead of profile_id (issue 4).
-- Design reasoning:
-- * A build writes every member row of every segment it builds (6.1M rows for 20 segments over
--   1M profiles), and ClickHouse sorts each inserted block by the table's key. Sorted by
--   profile_id strings that sort was most of the insert; a build's members already come in
--   profile_hash order (its chunks are ranges of profile_hash, sorted), so with profile_hash in
--   the key the block is already sorted and ClickHouse only checks it. Measured on 20 x 300k
--   member inserts (chdb, 2 cores, busy machine): 3.5-3.7 s wall and 2.9-3.6 CPU s against
--   8.4-10.1 s and 5.9-8.3 CPU s.
-- * Readers always filter one (segment_id, version) and never rely on the order of ids within
--   it: reading or intersecting a version is still one contiguous range. profile_hash stays
--   MATERIALIZED cityHash64(profile_id) (the same as the event tables'), so writers still
--   send ids only and it cannot disagree with the id.
-- * ClickHouse cannot reorder a table's sorting key in place (MODIFY ORDER BY only appends new
--   columns), so the rows are copied into a new table, the two are renamed in one statement
--   and the old one is dropped. Run it with builds stopped (embedded start-up does: migrations
--   run before anything else): member rows written by a build between the copy and the rename
--   would be lost. A retried run starts its copy again (the TRUNCATE); nothing here deletes
--   rows that exist only in the old table: a run that failed after its rename stops at the
--   rename on a retry (segment_members_by_id exists), and the rows are then in
--   segment_members (sorted by hash): drop segment_members_by_id by hand.

CREATE TABLE IF NOT EXISTS segment_members_by_hash
(
    segment_id      String,
    version         UInt64,
    profile_id      String CODEC(ZSTD(1)),
    profile_hash    UInt64 MATERIALIZED cityHash64(profile_id)
)
ENGINE = MergeTree
ORDER BY (segment_id, version, profile_hash);

TRUNCATE TABLE segment_members_by_hash;

INSERT INTO segment_members_by_hash (segment_id, version, profile_id)
SELECT segment_id, version, profile_id FROM segment_members;

RENAME TABLE segment_members TO segment_members_by_id,
    segment_members_by_hash TO segment_members;

DROP TABLE segment_members_by_id;
