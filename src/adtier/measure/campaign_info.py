"""The campaign facts a measurement needs (owner, flight, cap, holdout, promoted title or
genre), read from the catalog for one campaign id."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from adtier.measure.privacy import CampaignInfo

_CAMPAIGN_SQL = (
    "SELECT campaign_id, advertiser_id, start_date, end_date, frequency_cap, "
    "holdout_percent, promoted_title_id, promoted_genre FROM campaigns FINAL "
    "WHERE campaign_id = {c:String}")


def load(client: Client, campaign_id: str) -> CampaignInfo | None:
    rows = client.query(_CAMPAIGN_SQL, parameters={"c": campaign_id}).result_rows
    return CampaignInfo(*rows[0]) if rows else None
