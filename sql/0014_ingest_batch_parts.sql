-- A batch whose events were split over several buffer partitions is stored as one provenance
-- row per partition (each with that part's counts), written with that part's events; `parts`
-- says how many rows make the whole batch, so a reader sums them and knows when all are in.
ALTER TABLE ingest_batches ADD COLUMN IF NOT EXISTS parts UInt16 DEFAULT 1;
