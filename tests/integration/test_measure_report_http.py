"""Measurement reports and frequency over HTTP on the real stores: exact counts against the
events posted, suppression of small cells, tenant isolation (404 on every endpoint) and the
audit log."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time

import pytest

from tests.helpers import ad_event, batch, content_event, now_ms

DAY_MS = 86_400_000
CAMPAIGNS = [
    {"campaign_id": "cmp-a", "advertiser_id": "adv-a", "name": "A", "ad_category": "IAB2",
     "start_date": "2025-01-01", "end_date": "2030-12-31", "frequency_cap": 0,
     "holdout_percent": 0.0},
    {"campaign_id": "cmp-b", "advertiser_id": "adv-b", "name": "B", "ad_category": "IAB8",
     "start_date": "2025-01-01", "end_date": "2030-12-31", "frequency_cap": 0,
     "holdout_percent": 10.0, "promoted_genre": "drama"},
]


def put(api, path: str, items: list[dict]) -> None:
    answer = api.client.put(path, json={"items": items}, headers=api.admin)
    assert answer.status_code == 200, answer.text


def key(api, advertiser_id: str) -> dict[str, str]:
    made = api.client.post("/v1/keys", json={"role": "advertiser", "advertiser_id": advertiser_id},
                           headers=api.admin)
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['key']}"}


def world() -> tuple[list[dict], dict]:
    """200 profiles of cmp-a: 120 on tv (1 impression, day -2), 70 on web (2 impressions,
    day -1), 10 on mobile (12 impressions, day -1). Funnel: every impression starts; every
    other one completes (all quartiles), the rest skip after the first quartile."""
    base = now_ms() - 2 * DAY_MS
    events, truth = [], {"impressions": 0, "starts": 0, "completes": 0, "skips": 0,
                         "first_quartile": 0, "midpoint": 0, "third_quartile": 0}
    for i in range(200):
        device, n, day = ("tv", 1, 0) if i < 120 else ("web", 2, 1) if i < 190 else ("mobile", 12, 1)
        for j in range(n):
            common = {"profile_id": f"p{i:03d}", "campaign_id": "cmp-a", "device": device,
                      "ad_serving_id": f"as-{i}-{j}", "session_id": f"s-{i}",
                      "ts": base + day * DAY_MS + j * 1000}
            types = ["impression", "start", "first_quartile"]
            types += ["midpoint", "third_quartile", "complete"] if (i + j) % 2 == 0 else ["skip"]
            for t in types:
                events.append(ad_event(t, **common))
            truth["impressions"] += 1
            truth["starts"] += 1
            truth["first_quartile"] += 1
            if (i + j) % 2 == 0:
                truth["midpoint"] += 1
                truth["third_quartile"] += 1
                truth["completes"] += 1
            else:
                truth["skips"] += 1
    # another advertiser's campaign: 60 profiles, never visible to adv-a
    for i in range(60):
        events.append(ad_event("impression", profile_id=f"q{i}", campaign_id="cmp-b",
                               ad_serving_id=f"b-{i}"))
    return events, truth


@pytest.fixture
def loaded(api, flush):
    put(api, "/v1/catalog/advertisers", [{"advertiser_id": "adv-a", "name": "A"},
                                          {"advertiser_id": "adv-b", "name": "B"}])
    put(api, "/v1/catalog/campaigns", CAMPAIGNS)
    events, truth = world()
    for start in range(0, len(events), 5000):
        answer = api.post_events(batch(events[start:start + 5000]))
        assert answer.status_code == 200 and not answer.json()["rejected"], answer.text
    flush()
    return truth


def test_report_totals_exact_and_funnel_monotone(api, loaded):
    # exact numbers (the k-fold without noise) are the admin's; advertiser keys get them
    # noised (tests/integration/test_privacy_measure.py)
    adv = api.admin
    answer = api.client.get("/v1/campaigns/cmp-a/report?by=day", headers=adv)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    totals = body["totals"]
    assert totals["reach"] == 200
    for name, value in loaded.items():
        assert totals[name] == value, name
    assert totals["avg_frequency"] == round(loaded["impressions"] / 200, 6)
    assert totals["vcr"] == round(loaded["completes"] / loaded["impressions"], 6)
    assert totals["skip_rate"] == round(loaded["skips"] / loaded["starts"], 6)
    funnel = [totals[m] for m in ("impressions", "starts", "first_quartile", "midpoint",
                                  "third_quartile", "completes")]
    assert funnel == sorted(funnel, reverse=True)
    # two days, each covering >= 50 profiles: both released, summing to the totals
    assert [r["reach"] for r in body["rows"]] == [120, 80]
    assert sum(r["impressions"] for r in body["rows"]) == totals["impressions"]
    assert body["suppressed_rows"] == 0 and body["suppressed"] is None
    assert body["report_id"].startswith("rep_") and body["data_through"]
    assert "p000" not in answer.text  # no profile id ever
    assert api.client.get("/v1/campaigns/cmp-a/report?by=profile", headers=adv).status_code == 400
    assert api.client.get("/v1/campaigns/cmp-a/report?from=2026-02-01&to=2026-01-01",
                          headers=adv).status_code == 400


def test_metric_definitions_are_in_the_api_docs(api):
    schema = api.client.get("/docs/openapi.json").json()
    report = schema["paths"]["/v1/campaigns/{campaign_id}/report"]["get"]["description"]
    for term in ("vcr", "skip_rate", "viewable_rate", "MRC", "VAST"):
        assert term in report


def test_small_cell_is_suppressed_with_its_complement(api, loaded):
    # exact numbers (the k-fold without noise) are the admin's; advertiser keys get them
    # noised (tests/integration/test_privacy_measure.py)
    adv = api.admin
    body = api.client.get("/v1/campaigns/cmp-a/report?by=device", headers=adv).json()
    # mobile (10 profiles) is folded; the remainder would be 10 < k, so the smallest released
    # row (web, 70) is folded too: only tv is shown, the remainder covers 80 profiles
    assert [r["device"] for r in body["rows"]] == ["tv"]
    assert "mobile" not in json.dumps(body)
    assert body["suppressed_rows"] == 2 and body["suppressed"]["reach"] == 80
    assert body["rows"][0]["impressions"] + body["suppressed"]["impressions"] \
        == body["totals"]["impressions"]


def test_frequency_distribution_sums_to_reach(api, loaded):
    # exact numbers (the k-fold without noise) are the admin's; advertiser keys get them
    # noised (tests/integration/test_privacy_measure.py)
    adv = api.admin
    body = api.client.get("/v1/campaigns/cmp-a/frequency", headers=adv).json()
    assert body["reach"] == 200
    released = {d["frequency"]: d["profiles"] for d in body["distribution"]}
    assert released["1"] == 120
    assert "10+" not in released  # 10 profiles: folded with the next smallest bucket (2: 70)
    assert sum(released.values()) + body["suppressed"]["profiles"] == body["reach"]
    assert body["suppressed"]["profiles"] == 80
    today = dt.datetime.fromtimestamp(now_ms() / 1000, dt.timezone.utc).date()
    assert body["cumulative_reach"] == [
        {"day": (today - dt.timedelta(days=2)).isoformat(), "reach": 120},
        {"day": (today - dt.timedelta(days=1)).isoformat(), "reach": 200}]


def test_whole_report_below_k_releases_nothing(api, loaded):
    # exact numbers (the k-fold without noise) are the admin's; advertiser keys get them
    # noised (tests/integration/test_privacy_measure.py)
    adv_b = api.admin
    body = api.client.get("/v1/campaigns/cmp-b/report?by=country", headers=adv_b).json()
    assert body["totals"]["reach"] == 60 and body["rows"][0]["country"] == "US"
    # a day range with no events: nothing released, nothing suppressed to release
    empty = api.client.get("/v1/campaigns/cmp-b/report?from=2025-01-01&to=2025-01-02",
                           headers=adv_b).json()
    assert empty["rows"] == [] and empty["totals"] is None


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/campaigns/{c}/report"),
    ("GET", "/v1/campaigns/{c}/frequency"),
    ("GET", "/v1/campaigns/{c}/content-effects"),
])
def test_isolation_another_advertisers_campaign_is_404(api, loaded, method, path):
    adv = key(api, "adv-a")
    if "content-effects" in path:  # cmp-a promotes nothing: make it a promotion too
        put(api, "/v1/catalog/campaigns", [{**CAMPAIGNS[0], "promoted_genre": "comedy"}])
    foreign = api.client.request(method, path.format(c="cmp-b"), headers=adv)
    unknown = api.client.request(method, path.format(c="cmp-nope"), headers=adv)
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json()["error"] == "not_found"
    own = api.client.request(method, path.format(c="cmp-a"), headers=adv)
    assert own.status_code == 200
    admin = api.client.request(method, path.format(c="cmp-b"), headers=api.admin)
    assert admin.status_code == 200
    assert api.client.request(method, path.format(c="cmp-a"),
                              headers=api.ingest).status_code == 403


def test_every_call_is_audited_with_the_answer_hash(api, loaded):
    adv = key(api, "adv-a")
    answer = api.client.get("/v1/campaigns/cmp-a/report?by=device&from=2025-01-01", headers=adv)
    refused = api.client.get("/v1/campaigns/cmp-b/frequency", headers=adv)
    assert refused.status_code == 404
    assert api.client.get("/v1/audit", headers=adv).status_code == 403
    records = api.client.get("/v1/audit", headers=api.admin).json()["records"]
    by_id = {r["audit_id"]: r for r in records}
    mine = by_id[answer.json()["report_id"]]
    assert mine["answer_sha256"] == hashlib.sha256(answer.content).hexdigest()
    assert mine["endpoint"] == "campaign_report" and mine["status"] == 200
    assert mine["parameters"]["by"] == "device" and mine["parameters"]["from"] == "2025-01-01"
    assert mine["row_count"] == len(answer.json()["rows"])
    assert mine["advertiser_id"] == "adv-a" and mine["key_id"].startswith("key_")
    denied = [r for r in records if r["status"] == 404]
    assert len(denied) == 1 and denied[0]["parameters"]["campaign_id"] == "cmp-b"


def _built(api, segment_id: str) -> None:
    assert api.client.post(f"/v1/segments/{segment_id}/build", headers=api.admin).status_code == 202
    for _ in range(200):
        seg = api.client.get(f"/v1/segments/{segment_id}", headers=api.admin).json()
        if seg["status"] in ("ready", "failed"):
            break
        time.sleep(0.05)
    assert seg["status"] == "ready", seg


def _keys(value) -> set[str]:
    """Every key anywhere in a JSON answer."""
    if isinstance(value, dict):
        return set(value).union(*(_keys(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_keys(v) for v in value))
    return set()


def _b_list(api, name: str) -> str:
    """adv-b's static segment of the 200 profiles adv-a's campaign reached."""
    made = api.client.post("/v1/segments", headers=api.admin, json={
        "name": name, "kind": "static", "advertiser_id": "adv-b",
        "profile_ids": [f"p{i:03d}" for i in range(200)]})
    assert made.status_code in (200, 201), made.text
    return made.json()["segment_id"]


def test_forecast_to_an_advertiser_is_coarse_and_hides_other_campaigns(api, loaded):
    # adv-b lists adv-a's 200 viewers and asks a plan no slots can hold: thinning saturates
    # (every slot won) and its answer is the list's own ad history. The admin sees it exact;
    # adv-b sees every count coarse (k = 50), small buckets folded, no model parameter, and
    # no backtest of cmp-a, the only campaign that reached >= 50 of the list
    segment_id = _b_list(api, "b's copy of a's viewers")
    _built(api, segment_id)
    plan = {"segment_ids": [segment_id], "impressions": 10**9, "days": 1}

    admin = api.client.post("/v1/forecast/reach", json=plan, headers=api.admin).json()
    exact = admin["parameters"]["candidates"]["empirical-thinning"]
    assert exact["win_rate"] == 1.0 and exact["reach"] == 80.0  # web and mobile, the last day
    assert admin["backtest"]["method"] == "flights" and admin["backtest"]["campaigns"] == 1
    assert admin["backtest"]["candidates"]["empirical-thinning"]["count"] == 1
    assert "median_error" in admin["backtest"]["candidates"]["negative-binomial"]

    answer = api.client.post("/v1/forecast/reach", json=plan, headers=key(api, "adv-b"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert "cmp-a" not in answer.text
    assert not _keys(body) & {"campaigns", "count", "median_error", "signed_error",
                              "actual_reach", "predicted_reach", "win_rate",
                              "history_mean", "history_variance", "gamma_shape"}
    assert body["backtest"] == {"method": "withheld", "days": 1, "candidates": None}
    assert body["backtest_error"] is None
    # counts are noised (docs/privacy.md), then coarse: near the exact ones, multiples of k
    thinning = body["parameters"]["candidates"]["empirical-thinning"]
    assert set(thinning) == {"model", "reach", "deliverable_impressions"}
    assert thinning["model"] == exact["model"] and thinning["reach"] in (50, 100, 150)
    assert abs(body["universe"] - 200) <= 50 and body["k"] == 50
    assert "noise" in body and body["noise"]["epsilon"] > 0
    for count in (body["reach"], body["deliverable_impressions"],
                  *(c["reach"] for c in body["parameters"]["candidates"].values())):
        assert count is None or count % 50 == 0, body
    for row in body["distribution"]:
        assert row["profiles"] == 0 or (row["profiles"] >= 50 and row["profiles"] % 50 == 0)
    assert body["suppressed"] is None or body["suppressed"]["profiles"] >= 50


def test_forecast_isolation_and_audit(api, loaded):
    segment_id = _b_list(api, "b's list")
    adv_a, adv_b = key(api, "adv-a"), key(api, "adv-b")
    plan = {"segment_ids": [segment_id], "impressions": 100, "days": 1}
    assert api.client.post("/v1/forecast/reach", json=plan, headers=adv_a).status_code == 404
    # the owner may ask; before the build the segment has no membership yet
    assert api.client.post("/v1/forecast/reach", json=plan, headers=adv_b).status_code == 409
    _built(api, segment_id)
    answer = api.client.post("/v1/forecast/reach", json=plan, headers=adv_b)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    # coarse to the owner too (k = 50; a reach under k is None), and the backtest rests on
    # one campaign (adv-a's): withheld
    assert abs(body["universe"] - 200) <= 50 and body["reach"] in (None, 50, 100, 150)
    assert body["backtest"]["method"] == "withheld" and body["backtest_error"] is None
    # targeted over the segment: a category's keener viewers, a random holdout share (exact
    # numbers: the admin's)
    targeted = api.client.post("/v1/forecast/reach", headers=adv_b, json={
        **plan, "ad_category": "IAB1", "holdout_percent": 10})
    assert targeted.status_code == 200, targeted.text
    exact = api.client.post("/v1/forecast/reach", headers=api.admin, json=plan).json()
    exact_targeted = api.client.post("/v1/forecast/reach", headers=api.admin, json={
        **plan, "ad_category": "IAB1", "holdout_percent": 10}).json()
    assert exact["universe"] == 200 and exact["backtest_error"] is not None
    assert 0 < exact_targeted["reach"] <= exact["reach"] <= 100
    records = api.client.get("/v1/audit?advertiser_id=adv-a", headers=api.admin).json()["records"]
    assert [r["status"] for r in records if r["endpoint"] == "forecast_reach"] == [404]


def _newest_event(ch, campaign_id: str) -> dt.datetime:
    ts = ch.query("SELECT max(ts) FROM ad_events WHERE campaign_id = {c:String}",
                  parameters={"c": campaign_id}).result_rows[0][0]
    return ts if ts.tzinfo else ts.replace(tzinfo=dt.timezone.utc)


def test_frequency_carries_report_id_and_the_reports_data_through(api, loaded, ch):
    adv = key(api, "adv-a")
    report = api.client.get("/v1/campaigns/cmp-a/report", headers=adv).json()
    answer = api.client.get("/v1/campaigns/cmp-a/frequency", headers=adv)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["report_id"].startswith("rep_") and body["report_id"] != report["report_id"]
    # the report's definition: the newest stored event of the campaign, in UTC
    assert body["data_through"] == report["data_through"]
    assert dt.datetime.fromisoformat(body["data_through"]) == _newest_event(ch, "cmp-a")
    # it is the campaign's freshness, not the range's: an empty range still says it, and so
    # does an answer below k (nothing released)
    empty = api.client.get("/v1/campaigns/cmp-a/frequency?from=2025-01-01&to=2025-01-02",
                           headers=adv).json()
    assert empty["reach"] is None and empty["data_through"] == body["data_through"]
    empty_report = api.client.get("/v1/campaigns/cmp-a/report?from=2025-01-01&to=2025-01-02",
                                  headers=adv).json()
    assert empty_report["rows"] == [] and empty_report["data_through"] == body["data_through"]
    # the audit record of the answer is the one its report_id names
    records = api.client.get("/v1/audit", headers=api.admin).json()["records"]
    mine = next(r for r in records if r["audit_id"] == body["report_id"])
    assert mine["endpoint"] == "campaign_frequency"
    assert mine["answer_sha256"] == hashlib.sha256(answer.content).hexdigest()


def test_frequency_of_a_campaign_without_events_has_no_data_through(api, loaded):
    put(api, "/v1/catalog/campaigns", [{**CAMPAIGNS[0], "campaign_id": "cmp-new"}])
    body = api.client.get("/v1/campaigns/cmp-new/frequency", headers=key(api, "adv-a")).json()
    assert body["reach"] is None and body["data_through"] is None


def test_content_effects_carry_report_id_and_the_reports_data_through(api, loaded, ch):
    adv_b = key(api, "adv-b")
    report = api.client.get("/v1/campaigns/cmp-b/report", headers=adv_b).json()
    answer = api.client.get("/v1/campaigns/cmp-b/content-effects", headers=adv_b)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["kind"] == "holdout_lift" and body["report_id"].startswith("rep_")
    assert body["data_through"] == report["data_through"]
    assert dt.datetime.fromisoformat(body["data_through"]) == _newest_event(ch, "cmp-b")
    # a promotion not served yet: the answer says so rather than inventing a time
    put(api, "/v1/catalog/campaigns", [{**CAMPAIGNS[1], "campaign_id": "cmp-b2"}])
    fresh = api.client.get("/v1/campaigns/cmp-b2/content-effects", headers=adv_b).json()
    assert fresh["suppressed"] is True and fresh["data_through"] is None
    assert fresh["report_id"].startswith("rep_")


def _newest_viewing(ch) -> dt.datetime:
    ts = ch.query("SELECT max(ts) FROM content_events").result_rows[0][0]
    return ts if ts.tzinfo else ts.replace(tzinfo=dt.timezone.utc)


def test_content_effects_say_how_far_the_outcome_data_reaches(api, loaded, ch, flush):
    """``data_through`` is the campaign's ad events; the outcome is viewing: the answer says
    how far the stored viewing reaches and whether that covers the window it used."""
    adv_b = key(api, "adv-b")
    # before any viewing: no time is invented, and no window is complete
    empty = api.client.get("/v1/campaigns/cmp-b/content-effects", headers=adv_b).json()
    assert ch.query("SELECT count() FROM content_events").result_rows[0][0] == 0
    assert empty["outcome_data_through"] is None and empty["outcome_window_complete"] is False
    # viewing up to an hour ago, the newest one a few seconds older than the rest
    now = now_ms()
    views = [content_event(profile_id=f"q{i}", session_id=f"v-{i}",
                           ts=now - 3_600_000 - (0 if i == 7 else 60_000 + i)) for i in range(20)]
    answer = api.post_events(batch(views))
    assert answer.status_code == 200 and not answer.json()["rejected"], answer.text
    flush()
    newest = _newest_viewing(ch)
    assert newest == dt.datetime.fromtimestamp((now - 3_600_000) / 1000, dt.timezone.utc)

    # cmp-b's flight ends in 2030: its outcome window is far from complete
    body = api.client.get("/v1/campaigns/cmp-b/content-effects", headers=adv_b).json()
    assert dt.datetime.fromisoformat(body["outcome_data_through"]) == newest
    assert body["outcome_window_complete"] is False
    assert body["data_through"] == empty["data_through"]  # the ad events' own, unchanged

    # a flight that ended 3 days ago: with days=1 its window ended at the midnight after
    # end + 1 day (yesterday 00:00 UTC, before the newest viewing an hour ago); with days=7
    # it ends 5 days from now
    today = dt.datetime.now(dt.timezone.utc).date()
    ended = today - dt.timedelta(days=3)
    put(api, "/v1/catalog/campaigns", [{**CAMPAIGNS[1], "campaign_id": "cmp-b3",
                                        "end_date": ended.isoformat()}])
    for days, complete in ((1, True), (7, False)):
        got = api.client.get(f"/v1/campaigns/cmp-b3/content-effects?days={days}",
                             headers=adv_b).json()
        window_end = dt.datetime.combine(ended + dt.timedelta(days=days + 1), dt.time(),
                                         dt.timezone.utc)
        assert (newest >= window_end) is complete, (days, newest, window_end)
        assert got["window_days"] == days
        assert dt.datetime.fromisoformat(got["outcome_data_through"]) == newest
        assert got["outcome_window_complete"] is complete, (days, got)

