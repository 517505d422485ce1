"""(c) For each endpoint that releases counts to an advertiser key, the noise over many seeds
matches the scale the answer documents (``noise.scales``): centred on the exact count (the
admin's), 95 % of draws within OpenDP's 95 % half-width, half within its 50 % half-width.

The seeds are a fixed list of noise secrets, so the test is deterministic: the same draws on
every run. A mechanism with twice the documented scale (or half) fails the coverage bands."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from adtier.privacy.noise import accuracy
from tests.helpers import use_noise_secret
from tests.helpers import ad_event, batch, now_ms
from tests.integration.test_segments_http import build, create, key_for

DAY_MS = 86_400_000
SECRETS = [f"scale-{i:03d}" for i in range(200)]
CAMPAIGN = {"campaign_id": "cmp-a", "advertiser_id": "adv-a", "name": "A", "ad_category": "IAB2",
            "start_date": "2025-01-01", "end_date": "2030-12-31", "frequency_cap": 0,
            "holdout_percent": 0.0}


def _check(noise: list[int], scale: float) -> None:
    x = np.asarray(noise, dtype=float)
    sd = math.sqrt(2 * math.exp(-1 / scale)) / (1 - math.exp(-1 / scale))
    assert abs(x.mean()) <= 4 * sd / math.sqrt(len(x)), (x.mean(), sd)
    within95 = float(np.mean(np.abs(x) < accuracy(scale, 0.05)))
    within50 = float(np.mean(np.abs(x) < accuracy(scale, 0.5)))
    assert 0.90 <= within95 <= 0.99, within95
    assert 0.38 <= within50 <= 0.62, within50


@pytest.fixture
def loaded(api, flush):
    """400 profiles, two days, 1 to 3 impressions each."""
    api.client.put("/v1/catalog/advertisers", json={"items": [
        {"advertiser_id": "adv-a", "name": "A"}]}, headers=api.admin)
    api.client.put("/v1/catalog/campaigns", json={"items": [CAMPAIGN]}, headers=api.admin)
    base = (now_ms() // DAY_MS - 3) * DAY_MS + 3_600_000
    events = []
    for i in range(400):
        for j in range(1 + i % 3):
            events.append(ad_event("impression", profile_id=f"p{i:03d}", campaign_id="cmp-a",
                                   ad_serving_id=f"a-{i}-{j}", ts=base + (i % 2) * DAY_MS + j))
    assert api.post_events(batch(events)).status_code == 200
    flush()
    day1 = dt.datetime.fromtimestamp(base / 1000, dt.timezone.utc).date()
    return day1, day1 + dt.timedelta(days=1)


def _draws(api, url: str, headers: dict, pick) -> tuple[list[int], dict]:
    values, note = [], {}
    for secret in SECRETS:
        use_noise_secret(api, secret)
        body = api.client.get(url, headers=headers).json()
        values.append(pick(body))
        note = body.get("noise") or note
    return values, note


def test_report_totals_and_rows_follow_their_scales(api, rds, loaded):
    d1, d2 = loaded
    url = f"/v1/campaigns/cmp-a/report?by=day&from={d1}&to={d2}"
    exact = api.client.get(url, headers=api.admin).json()
    adv = key_for(api, "adv-a")
    totals, note = _draws(api, url, adv, lambda b: b["totals"]["reach"])
    _check([t - exact["totals"]["reach"] for t in totals], note["scales"]["totals_reach"])
    imps, _ = _draws(api, url, adv, lambda b: b["totals"]["impressions"])
    _check([t - exact["totals"]["impressions"] for t in imps], note["scales"]["totals_events"])
    rows, _ = _draws(api, url, adv, lambda b: b["rows"][0]["reach"])
    _check([r - exact["rows"][0]["reach"] for r in rows], note["scales"]["rows_reach"])


def test_frequency_buckets_follow_their_scale(api, rds, loaded):
    d1, d2 = loaded
    url = f"/v1/campaigns/cmp-a/frequency?from={d1}&to={d2}"
    exact = api.client.get(url, headers=api.admin).json()
    first = exact["distribution"][0]["profiles"]
    got, note = _draws(api, url, key_for(api, "adv-a"),
                       lambda b: b["distribution"][0]["profiles"])
    _check([g - first for g in got], note["scales"]["buckets"])
    # the cumulative curve's first point is the first day's noisy new profiles
    day_one = exact["cumulative_reach"][0]["reach"]
    points, note = _draws(api, url, key_for(api, "adv-a"),
                          lambda b: b["cumulative_reach"][0]["reach"])
    _check([p - day_one for p in points], note["scales"]["new_by_day"])


def test_segment_sizes_and_overlaps_follow_their_scales(api, rds, loaded):
    adv = key_for(api, "adv-a")
    ids = [f"p{i:03d}" for i in range(400)] + [f"x{i}" for i in range(800)]
    mine = create(api, {"name": "list", "kind": "static", "profile_ids": ids}, adv)
    assert build(api, mine["segment_id"], adv)["status"] == "ready"
    platform = create(api, {"name": "p", "kind": "static", "profile_ids": ids[:900]})
    assert build(api, platform["segment_id"])["status"] == "ready"
    sid, pid = mine["segment_id"], platform["segment_id"]
    sizes, _ = _draws(api, f"/v1/segments/{sid}", adv, lambda b: b["size"])
    from adtier.privacy.noise import scale_for
    from adtier.privacy.release import SIZE_SHARE
    eps = api.client.get("/v1/privacy/budget", headers=adv).json()["epsilon_per_query"]
    _check([s - 1200 for s in sizes], scale_for(1, eps / SIZE_SHARE))
    url = f"/v1/segments/overlap?ids={sid},{pid}"
    pairs, note = _draws(api, url, adv,
                         lambda b: next(p["intersection"] for p in b["pairs"] if p["a"] != p["b"]))
    _check([p - 900 for p in pairs], note["scales"]["pairs"])


def test_content_effects_arm_counts_follow_their_scale(api, flush):
    """A promotion with a 50 % holdout over 1,000 profiles: each arm's released profile count
    is the exact one plus noise of the documented scale."""
    api.client.put("/v1/catalog/advertisers", json={"items": [
        {"advertiser_id": "adv-a", "name": "A"}]}, headers=api.admin)
    today = dt.datetime.fromtimestamp(now_ms() / 1000, dt.timezone.utc).date()
    promo = {**CAMPAIGN, "campaign_id": "cmp-h", "holdout_percent": 50.0,
             "promoted_genre": "drama", "start_date": (today - dt.timedelta(days=5)).isoformat(),
             "end_date": today.isoformat()}
    api.client.put("/v1/catalog/campaigns", json={"items": [promo]}, headers=api.admin)
    base = now_ms() - 2 * DAY_MS
    events = [ad_event("impression", profile_id=f"h{i:04d}", campaign_id="cmp-h",
                       ad_serving_id=f"h-{i}", ts=base) for i in range(1000)]
    assert api.post_events(batch(events)).status_code == 200
    flush()
    url = "/v1/campaigns/cmp-h/content-effects"
    exact = api.client.get(url, headers=api.admin).json()
    assert exact["suppressed"] is False, exact
    truth = exact["arms"][0]["profiles"]
    got, note = _draws(api, url, key_for(api, "adv-a"), lambda b: b["arms"][0]["profiles"])
    _check([g - truth for g in got], note["scales"]["profiles"])
    assert note["ci_widened_for_noise"] is True


def _coarse_distribution(truth: float, scale: float, k: int) -> dict[int | None, float]:
    """What ``forecast.release`` makes of truth + discrete Laplace noise: P(released = v)."""
    from adtier.measure.forecast.release import coarse
    from adtier.privacy.noise import pmf

    noise = np.arange(-int(40 * scale) - 1, int(40 * scale) + 2)
    out: dict[int | None, float] = {}
    for n, p in zip(noise.tolist(), pmf(noise, scale).tolist()):
        value = max(0.0, truth + n)
        released = None if value < k else coarse(value, k)
        out[released] = out.get(released, 0.0) + p
    return out


def _check_distribution(got: list, predicted: dict) -> None:
    """Each released value's share over the fixed seeds against its predicted probability
    (binomial, 4 standard deviations): a scale twice or half the documented one fails."""
    n = len(got)
    for value in set(predicted) | set(got):
        p = predicted.get(value, 0.0)
        seen = sum(1 for g in got if g == value)
        assert abs(seen - n * p) <= 4 * math.sqrt(n * p * (1 - p)) + 2, (value, seen, n * p)


def test_forecast_counts_follow_their_scale(api, rds, loaded):
    """The reach forecast's universe and reach, released coarse (steps of k) after the noise:
    their distribution over 100 deployments is the coarse image of the documented scale."""
    viewers = create(api, {"name": "viewers", "kind": "static",
                           "profile_ids": [f"p{i:03d}" for i in range(400)]})
    assert build(api, viewers["segment_id"])["status"] == "ready"
    plan = {"segment_ids": [viewers["segment_id"]], "impressions": 10**9, "days": 1}
    exact = api.client.post("/v1/forecast/reach", json=plan, headers=api.admin).json()
    adv = key_for(api, "adv-a")
    universes, reaches, note = [], [], {}
    for secret in SECRETS[:100]:
        use_noise_secret(api, secret)
        body = api.client.post("/v1/forecast/reach", json=plan, headers=adv).json()
        universes.append(body["universe"])
        reaches.append(body["reach"])
        note = body["noise"]
    k = 50  # ADTIER_PRIVACY_K, the coarse step
    _check_distribution(universes, _coarse_distribution(exact["universe"],
                                                        note["scales"]["universe"], k))
    _check_distribution(reaches, _coarse_distribution(exact["reach"], note["scales"]["reach"],
                                                      k))
    # the coarse step alone would give one value: the noise spreads it over its neighbours
    assert len(set(universes)) > 1 and len(set(reaches)) > 1
