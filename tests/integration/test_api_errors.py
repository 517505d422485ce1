"""Mistakes in requests are refused with words a client can act on, or defaulted and said."""

from __future__ import annotations

import datetime as dt

from tests.helpers import ad_event, batch

TODAY = dt.datetime.now(dt.timezone.utc).date()
CAMPAIGN = {"campaign_id": "cmp-v", "advertiser_id": "adv-v", "name": "V", "ad_category": "IAB2",
            "start_date": str(TODAY - dt.timedelta(days=3)),
            "end_date": str(TODAY + dt.timedelta(days=3)),
            "frequency_cap": 0, "holdout_percent": 0}
TITLE = {"content_id": "t-1", "name": "Far Stars", "kind": "film", "genres": ["sci_fi", "drama"],
         "maturity": "PG", "duration_ms": 6_000_000}


def _catalog(api) -> None:
    for path, item in (("advertisers", {"advertiser_id": "adv-v", "name": "V"}),
                       ("campaigns", CAMPAIGN), ("titles", TITLE)):
        answer = api.client.put(f"/v1/catalog/{path}", json={"items": [item]}, headers=api.admin)
        assert answer.status_code == 200, answer.text


def _rule(api, feature: str, key: str):
    return api.client.post("/v1/segments", headers=api.admin, json={
        "name": "r", "kind": "rule",
        "rule": {"all": [{"feature": feature, "key": key, "op": ">=", "value": 0.3}]}})


def test_rule_keys_are_checked_against_the_catalog(api):
    _catalog(api)
    typo = _rule(api, "genre_share", "scifi")
    assert typo.status_code == 400, typo.text
    assert typo.json()["error"] == "invalid_rule"
    assert typo.json()["detail"].startswith("rule.all[0].key: unknown genre 'scifi'")
    assert "did you mean 'sci_fi'" in typo.json()["detail"]
    category = _rule(api, "ad_impressions", "IAB3")
    assert category.status_code == 400 and "the catalog's ad categories: IAB2" in category.text
    device = _rule(api, "device_share", "TV")
    assert device.status_code == 400 and "did you mean 'tv'" in device.json()["detail"]
    assert _rule(api, "genre_share", "sci_fi").status_code == 201
    assert _rule(api, "ad_impressions", "IAB2").status_code == 201


def test_genre_keys_before_any_title_say_what_to_load(api):
    answer = _rule(api, "genre_rank", "drama")
    assert answer.status_code == 400
    assert "no genres yet (PUT /v1/catalog/titles first)" in answer.json()["detail"]


def test_report_without_dates_spans_the_flight_and_says_so(api, flush):
    _catalog(api)
    inside = [ad_event(campaign_id="cmp-v", profile_id=f"p{i}") for i in range(3)]
    assert api.post_events(batch(inside)).status_code == 200
    flush()
    body = api.client.get("/v1/campaigns/cmp-v/report", headers=api.admin).json()
    assert (body["from"], body["to"]) == (CAMPAIGN["start_date"], CAMPAIGN["end_date"])
    assert body["note"] == (f"from and to not given: the campaign's flight "
                            f"({CAMPAIGN['start_date']} to {CAMPAIGN['end_date']}) is used")
    one = api.client.get(f"/v1/campaigns/cmp-v/report?from={TODAY}", headers=api.admin).json()
    assert (one["from"], one["to"]) == (str(TODAY), CAMPAIGN["end_date"])
    assert one["note"].startswith("to not given")
    both = api.client.get(f"/v1/campaigns/cmp-v/report?from={TODAY}&to={TODAY}",
                          headers=api.admin).json()
    assert "note" not in both
    freq = api.client.get("/v1/campaigns/cmp-v/frequency", headers=api.admin).json()
    assert freq["note"].startswith("from and to not given")


def test_parameter_errors_use_the_public_names(api):
    _catalog(api)
    cases = {
        "/v1/campaigns/cmp-v/report?from=yesterday":
            "query parameter `from`: expected a date, YYYY-MM-DD (got 'yesterday')",
        "/v1/campaigns/cmp-v/report?by=week":
            "query parameter `by`: expected one of day, device, country, creative, "
            "break_position (got 'week')",
        "/v1/features/export?since=abc":
            "query parameter `since`: expected a whole number (got 'abc')",
    }
    for path, detail in cases.items():
        answer = api.client.get(path, headers=api.admin)
        assert answer.status_code == 400, answer.text
        assert answer.json() == {"error": "bad_request", "detail": detail}
        for internal in ("ParamType", "date_from", "Validation failed", "`str`"):
            assert internal not in answer.text


def test_a_bulk_upsert_without_items_says_so(api):
    answer = api.client.put("/v1/catalog/campaigns", json=CAMPAIGN, headers=api.admin)
    assert answer.status_code == 400
    assert answer.json()["detail"] == ('the body is {"items": [...]}, a list of the objects to '
                                       "upsert: put this object in that list")
