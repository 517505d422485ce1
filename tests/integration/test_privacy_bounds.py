"""Contribution bounds of the advertiser's report rows: each profile counts in one row, so the
rows' reach noise has the documented scale whatever the breakdown (before: a profile could be
in every row, and a ``by=country`` row's reach carried noise of scale 1,339)."""

from __future__ import annotations

import datetime as dt

import pytest

from adtier.measure import reach
from adtier.privacy.noise import scale_for
from tests.helpers import ad_event, batch, now_ms, use_noise_secret
from tests.integration.test_privacy_noise_scale import CAMPAIGN, _check
from tests.integration.test_segments_http import key_for

DAY_MS = 86_400_000
COUNTRIES = ("CA", "GB", "US")
PROFILES = 900
SECRETS = [f"bounds-{i:03d}" for i in range(100)]


@pytest.fixture
def everywhere(api, flush) -> tuple[dt.date, dt.date]:
    """900 profiles, each seen on three days, one day in each of three countries."""
    api.client.put("/v1/catalog/advertisers", json={"items": [
        {"advertiser_id": "adv-a", "name": "A"}]}, headers=api.admin)
    api.client.put("/v1/catalog/campaigns", json={"items": [CAMPAIGN]}, headers=api.admin)
    base = (now_ms() // DAY_MS - 4) * DAY_MS + 3_600_000
    events = [ad_event("impression", profile_id=f"p{i:04d}", campaign_id="cmp-a",
                       country=COUNTRIES[(i + d) % 3], ad_serving_id=f"a-{i}-{d}",
                       ts=base + d * DAY_MS)
              for i in range(PROFILES) for d in range(3)]
    assert api.post_events(batch(events)).status_code == 200
    flush()
    day1 = dt.datetime.fromtimestamp(base / 1000, dt.timezone.utc).date()
    return day1, day1 + dt.timedelta(days=2)


@pytest.mark.parametrize("source", ["cells", "rollup"])
def test_a_profile_in_every_row_counts_in_one(ch, api, everywhere, source):
    d1, d3 = everywhere
    exact = api.client.get(f"/v1/campaigns/cmp-a/report?by=country&from={d1}&to={d3}",
                           headers=api.admin).json()
    # the admin's exact rows: every profile in all three (what made the noise so large)
    assert [r["reach"] for r in exact["rows"]] == [PROFILES] * 3
    by_country = reach.report_cells(ch, "cmp-a", "country", d1, d3, source).attributed()
    assert sum(by_country.values()) == PROFILES  # each profile in one row
    assert set(by_country) == set(COUNTRIES)
    assert all(240 <= n <= 360 for n in by_country.values()), by_country  # by a fair hash
    by_day = reach.report_cells(ch, "cmp-a", "day", d1, d3, source).attributed()
    assert by_day == {d1.isoformat(): PROFILES}  # by day: the first day in the range


def test_row_noise_scale_is_the_documented_one_whatever_the_breakdown(ch, api, rds,
                                                                      everywhere):
    d1, d3 = everywhere
    adv = key_for(api, "adv-a")
    eps = api.client.get("/v1/privacy/budget", headers=adv).json()["epsilon_per_query"]
    documented = scale_for(2, 3 * eps / 8)  # L1 2: the profile's row and the remainder
    month = d3 - dt.timedelta(days=30)
    for url in (f"by=country&from={d1}&to={d3}", f"by=day&from={month}&to={d3}",
                f"by=creative&from={d1}&to={d3}"):
        body = api.client.get(f"/v1/campaigns/cmp-a/report?{url}", headers=adv).json()
        assert body["noise"]["scales"]["rows_reach"] == pytest.approx(documented, abs=1e-6)
        # impressions where they happened over a reach counted once: no frequency, withheld
        assert all(row["avg_frequency"] is None for row in body["rows"])
    assert documented < 11  # at the default ε (before: 1,339 by country, 171 over 31 days)
    # and the released rows follow it: 100 deployments, the GB row against its bounded count
    truth = reach.report_cells(ch, "cmp-a", "country", d1, d3).attributed()["GB"]
    draws = []
    for secret in SECRETS:
        use_noise_secret(api, secret)
        body = api.client.get(f"/v1/campaigns/cmp-a/report?by=country&from={d1}&to={d3}",
                              headers=adv).json()
        draws.append(next(r["reach"] for r in body["rows"] if r["country"] == "GB") - truth)
    _check(draws, documented)
