-- Feature schema v2 (issue 6): ad tolerance and post-ad abandonment, per profile over the
-- 30-day window (definitions in src/adtier/features/schema.py).
-- Design reasoning:
-- * New columns only, with defaults: rows written by v1 read as 0 until the next compute
--   rewrites them (a compute compares every feature, so each such profile is rewritten once
--   and reaches the next incremental export as a change).
-- * Placed after ad_fatigue so the table's column order matches the export schema.
-- * `ad_sessions` and `post_ad_abandons` are the counts behind the two rates, kept so a
--   consumer can apply its own smoothing.
ALTER TABLE profile_features
    ADD COLUMN IF NOT EXISTS ad_sessions UInt32 DEFAULT 0 AFTER ad_fatigue,
    ADD COLUMN IF NOT EXISTS post_ad_abandons UInt32 DEFAULT 0 AFTER ad_sessions,
    ADD COLUMN IF NOT EXISTS ad_load Float32 DEFAULT 0 AFTER post_ad_abandons,
    ADD COLUMN IF NOT EXISTS ad_tolerance Float32 DEFAULT 0 AFTER ad_load;
