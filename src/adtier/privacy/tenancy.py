"""Tenancy of catalog-keyed inputs: an advertiser names only its own campaigns.

The rule language keys ``campaign_exposures`` by a campaign id; a segment owned by an
advertiser may name only that advertiser's campaigns. Anything else (another advertiser's
campaign, or a campaign that never existed) is the same ``unknown campaign``: the caller answers
404 ``not_found`` for both, so a competitor's ids cannot be probed, sized or targeted through a
rule. Platform segments (no owner) are the platform's own data and may name any campaign.
Titles, genres, categories, devices and dayparts are platform catalog keys, open to everyone.
"""

from __future__ import annotations

from collections.abc import Iterable

from clickhouse_connect.driver.client import Client

__all__ = ["TENANT_KEY_KINDS", "foreign_campaigns", "campaign_keys"]

# rule-language key kinds that name an advertiser's catalog entry (segments.rules.Feature)
TENANT_KEY_KINDS = frozenset({"campaign"})


def campaign_keys(keyed: Iterable[tuple[str, str | None]]) -> list[str]:
    """The campaign ids among ``(key_kind, key)`` pairs, in order, without repeats."""
    return list(dict.fromkeys(k for kind, k in keyed if kind in TENANT_KEY_KINDS and k))


def foreign_campaigns(client: Client, owner: str, campaign_ids: list[str]) -> list[str]:
    """The ids in ``campaign_ids`` that are not ``owner``'s campaigns (unknown ones included),
    in the order given; empty when ``owner`` is the platform ('')."""
    if not owner or not campaign_ids:
        return []
    rows = client.query(
        "SELECT campaign_id FROM campaigns FINAL WHERE campaign_id IN {ids:Array(String)} "
        "AND advertiser_id = {owner:String}",
        parameters={"ids": campaign_ids, "owner": owner}).result_rows
    own = {r[0] for r in rows}
    return [c for c in campaign_ids if c not in own]
