"""Attacks on measurement with advertiser keys only: differencing report ranges, averaging a
repeated report, spending without limit; and the admin's exact numbers beside them.

Each test names the attack; on the exact release (k-threshold only) it succeeds, with
differentially private counts, seeded noise and the budget it fails."""

from __future__ import annotations

import datetime as dt
import json

import msgspec
import pytest

from tests.helpers import use_noise_secret
from tests.helpers import ad_event, batch, now_ms

DAY_MS = 86_400_000
CAMPAIGN = {"campaign_id": "cmp-a", "advertiser_id": "adv-a", "name": "A", "ad_category": "IAB2",
            "start_date": "2025-01-01", "end_date": "2030-12-31", "frequency_cap": 0,
            "holdout_percent": 0.0}
SECRETS = [f"secret-{i:02d}" for i in range(20)]  # fixed: the tests are deterministic


def put(api, path: str, items: list[dict]) -> None:
    answer = api.client.put(path, json={"items": items}, headers=api.admin)
    assert answer.status_code == 200, answer.text


def key(api, advertiser_id: str) -> dict[str, str]:
    made = api.client.post("/v1/keys", json={"role": "advertiser", "advertiser_id": advertiser_id},
                           headers=api.admin)
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['key']}"}


@pytest.fixture
def days(api, flush) -> tuple[dt.date, dt.date]:
    """60 profiles reached on day 1; day 2 reaches 3 more (and 20 of day 1's again)."""
    put(api, "/v1/catalog/advertisers", [{"advertiser_id": "adv-a", "name": "A"}])
    put(api, "/v1/catalog/campaigns", [CAMPAIGN])
    base = (now_ms() // DAY_MS - 3) * DAY_MS + 3_600_000
    events = [ad_event("impression", profile_id=f"p{i:03d}", campaign_id="cmp-a",
                       ad_serving_id=f"d1-{i}", ts=base) for i in range(60)]
    events += [ad_event("impression", profile_id=f"p{i:03d}", campaign_id="cmp-a",
                        ad_serving_id=f"d2-{i}", ts=base + DAY_MS) for i in range(40, 63)]
    answer = api.post_events(batch(events))
    assert answer.status_code == 200 and not answer.json()["rejected"], answer.text
    flush()
    day1 = dt.datetime.fromtimestamp(base / 1000, dt.timezone.utc).date()
    return day1, day1 + dt.timedelta(days=1)


def _totals_reach(api, headers, lo: dt.date, hi: dt.date) -> int | None:
    got = api.client.get(f"/v1/campaigns/cmp-a/report?by=day&from={lo}&to={hi}",
                         headers=headers)
    assert got.status_code == 200, got.text
    totals = got.json()["totals"]
    return None if totals is None else totals["reach"]


def test_differencing_two_ranges_no_longer_counts_the_new_profiles(api, rds, days):
    """Attack 4: reach([d1, d2]) - reach([d1]) = profiles first reached on d2 (3, below k)."""
    d1, d2 = days
    adv = key(api, "adv-a")
    # the admin's exact numbers show what the attacker is after
    assert (_totals_reach(api, api.admin, d1, d2), _totals_reach(api, api.admin, d1, d1)) \
        == (63, 60)
    exact_hits = 0
    for secret in SECRETS:  # 20 deployments, each with its own noise secret
        use_noise_secret(api, secret)
        wide, narrow = _totals_reach(api, adv, d1, d2), _totals_reach(api, adv, d1, d1)
        exact_hits += wide is not None and narrow is not None and wide - narrow == 3
    # with exact counts the difference is right 20 times out of 20
    assert exact_hits <= 4, exact_hits


def test_a_report_asked_20_times_returns_one_noisy_answer(api, rds, days):
    """(a) Averaging: with fresh noise, the mean of many answers converges on the truth."""
    d1, d2 = days
    adv = key(api, "adv-a")
    url = f"/v1/campaigns/cmp-a/report?by=day&from={d1}&to={d2}"
    bodies = set()
    for _ in range(20):
        got = api.client.get(url, headers=adv)
        assert got.status_code == 200, got.text
        body = got.json()
        body.pop("report_id")
        bodies.add(json.dumps(body, sort_keys=True))
    assert len(bodies) == 1
    answer = json.loads(bodies.pop())
    exact = api.client.get(url, headers=api.admin).json()
    assert "noise" in answer and "noise" not in exact  # admin: exact, unlabelled
    # the answer is not the exact one (its counts carry noise) ...
    assert answer["totals"] != exact["totals"]
    # ... and cost one query's ε, once
    spent = api.client.get("/v1/privacy/budget", headers=adv).json()
    assert spent["queries"] == 1 and spent["epsilon_spent"] == spent["epsilon_per_query"]


@pytest.fixture
def settings(settings, request):
    # a budget of two queries (ε 0.5 each): the third distinct one is refused; and
    # ``privacy_version_period_s`` when a test parametrizes it
    tight = msgspec.structs.replace(settings, privacy_epsilon_budget=1.0,
                                    privacy_epsilon_query=0.5)
    period = getattr(request, "param", None)
    return tight if period is None else msgspec.structs.replace(
        tight, privacy_version_period_s=period)


def test_budget_exhaustion_answers_429_and_every_spend_is_audited(api, rds, days):
    """(b) Unlimited distinct queries: each one more look at the same profiles."""
    d1, d2 = days
    adv = key(api, "adv-a")
    urls = [f"/v1/campaigns/cmp-a/report?by=day&from={d1}&to={d2}",
            f"/v1/campaigns/cmp-a/frequency?from={d1}&to={d2}",
            f"/v1/campaigns/cmp-a/report?by=device&from={d1}&to={d2}"]
    first = api.client.get(urls[0], headers=adv)
    assert api.client.get(urls[1], headers=adv).status_code == 200
    refused = api.client.get(urls[2], headers=adv)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"] == "privacy_budget_spent"
    assert int(refused.headers["retry-after"]) >= 1
    # a query already paid for still answers, the same
    again = api.client.get(urls[0], headers=adv)
    assert again.status_code == 200
    assert {**again.json(), "report_id": ""} == {**first.json(), "report_id": ""}
    budget = api.client.get("/v1/privacy/budget", headers=adv).json()
    assert budget["epsilon_remaining"] == 0 and budget["queries"] == 2
    # the admin sees the same ledger and keeps exact, unmetered numbers
    assert api.client.get("/v1/privacy/budget?advertiser_id=adv-a",
                          headers=api.admin).json()["epsilon_spent"] == 1.0
    assert api.client.get(urls[2], headers=api.admin).status_code == 200
    records = api.client.get("/v1/audit?advertiser_id=adv-a&limit=100",
                             headers=api.admin).json()["records"]
    spends = [r for r in records if r["endpoint"] == "privacy.spend"]
    charged = sorted(r["parameters"]["charged"] for r in spends if r["status"] == 200)
    assert charged == [0.0, 0.5, 0.5]  # two spends, and the free repeat
    refusals = [r for r in spends if r["status"] == 429]
    assert len(refusals) == 1 and refusals[0]["parameters"]["refused"] is True


HOUR_MS = 3_600_000


@pytest.mark.parametrize(
    ("settings", "same_period", "next_period"),
    [(None, [20 * 60_000, 5 * HOUR_MS], DAY_MS),  # the default: a day
     (3600, [20 * 60_000], 2 * HOUR_MS)],  # ADTIER_PRIVACY_VERSION_PERIOD_S=3600
    indirect=["settings"], ids=["default-day", "hour"])
def test_new_events_within_the_version_period_cost_nothing_and_change_nothing(
        api, rds, flush, days, settings, same_period, next_period):
    """A live campaign's report: the data version is its newest event's time floored to the
    version period, so asking again after new events of the same period is the same paid
    query with the same answer (else every refresh of a live dashboard spends ε again); the
    first event of the next period makes it a new query, paid once. Event timestamps are the
    clock: no waiting."""
    assert settings.privacy_version_period_s in (86_400, 3600)
    d1, d2 = days
    adv = key(api, "adv-a")
    url = f"/v1/campaigns/cmp-a/report?by=day&from={d1}&to={d2}"
    first = api.client.get(url, headers=adv).json()
    newest = (now_ms() // DAY_MS - 2) * DAY_MS + HOUR_MS  # day 2's events, 01:00 UTC

    def arrive(ts: int, tag: str) -> None:
        events = [ad_event("impression", profile_id=f"late{tag}{i}", campaign_id="cmp-a",
                           ad_serving_id=f"late-{tag}-{i}", ts=ts) for i in range(30)]
        assert api.post_events(batch(events)).status_code == 200

    def queries() -> int:
        return api.client.get("/v1/privacy/budget", headers=adv).json()["queries"]

    for n, offset in enumerate(same_period):  # 30 more profiles each, within the period
        arrive(newest + offset, f"same{n}")
    flush()
    exact = api.client.get(url, headers=api.admin).json()
    assert exact["totals"]["reach"] == 63 + 30 * len(same_period)  # the data did change
    again = api.client.get(url, headers=adv).json()
    assert {**again, "report_id": ""} == {**first, "report_id": ""}
    assert queries() == 1
    arrive(newest + next_period, "next")  # the next period: a new query
    flush()
    later = api.client.get(url, headers=adv).json()
    assert later["data_through"] != first["data_through"]
    assert queries() == 2
    assert {**api.client.get(url, headers=adv).json(), "report_id": ""} == \
        {**later, "report_id": ""}  # the new version's answer is kept in turn
    assert queries() == 2
