-- The campaign cells' view (0011, 0013) aggregated once per insert block, then fanned out.
-- Design reasoning:
-- * Before: every event row was ARRAY JOINed into its five cells (day, device, country,
--   creative, break position) and the five times as many rows were aggregated: ingest paid
--   for five rows per event. Now the block is first folded by (campaign, day, device,
--   country, creative, break position), the finest cell every dimension is a roll-up of
--   (a flush of 200,000 events folds to a few hundred rows), and only those rows fan out to
--   the five dimensions, where the partial bitmaps are OR-ed (groupBitmapMergeState) and the
--   counters summed. Same rows, same values: a cell's bitmap is the OR, and its counter the
--   sum, of its finer cells' (tests/integration/test_measure_cells.py).
-- * No backfill: the table is unchanged, only how the view computes its rows. Run with ingest
--   stopped, as 0013 (embedded start-up does): an event inserted between the DROP and the
--   CREATE would miss the cells.
DROP VIEW IF EXISTS ad_campaign_cells_mv;
CREATE MATERIALIZED VIEW IF NOT EXISTS ad_campaign_cells_mv TO ad_campaign_cells AS
SELECT campaign_id, cell.1 AS dim, day, cell.2 AS value,
       groupBitmapMergeState(fine_profiles) AS profiles,
       groupBitmapMergeState(fine_reach) AS reach,
       sum(n_impression) AS impressions, sum(n_start) AS starts,
       sum(n_first_quartile) AS first_quartile, sum(n_midpoint) AS midpoint,
       sum(n_third_quartile) AS third_quartile, sum(n_complete) AS completes,
       sum(n_skip) AS skips, sum(n_click) AS clicks,
       sum(n_viewable) AS viewable_impressions, sum(n_not_viewable) AS not_viewable_impressions,
       sum(n_undetermined) AS undetermined, sum(n_error) AS errors,
       sum(n_unassigned) AS unassigned, max(fine_max_ts) AS max_ts
FROM (SELECT campaign_id, toDate(ts) AS day, toString(device) AS fine_device,
             toString(country) AS fine_country, toString(creative_id) AS fine_creative,
             ifNull(toString(break_position), 'unknown') AS fine_break_position,
             groupBitmapStateIf(profile_ord, profile_ord > 0) AS fine_profiles,
             groupBitmapStateIf(profile_ord, profile_ord > 0 AND type = 'impression') AS fine_reach,
             countIf(type = 'impression') AS n_impression, countIf(type = 'start') AS n_start,
             countIf(type = 'first_quartile') AS n_first_quartile,
             countIf(type = 'midpoint') AS n_midpoint,
             countIf(type = 'third_quartile') AS n_third_quartile,
             countIf(type = 'complete') AS n_complete, countIf(type = 'skip') AS n_skip,
             countIf(type = 'click') AS n_click,
             countIf(type = 'viewable_impression') AS n_viewable,
             countIf(type = 'not_viewable') AS n_not_viewable,
             countIf(type = 'view_undetermined') AS n_undetermined,
             countIf(type = 'error') AS n_error, countIf(profile_ord = 0) AS n_unassigned,
             max(ts) AS fine_max_ts
      FROM ad_events
      GROUP BY campaign_id, day, fine_device, fine_country, fine_creative, fine_break_position)
ARRAY JOIN [('day', ''), ('device', fine_device), ('country', fine_country),
            ('creative', fine_creative), ('break_position', fine_break_position)] AS cell
GROUP BY campaign_id, dim, day, value;
