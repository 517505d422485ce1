"""Measurement against a simulated world's ground truth: reach, frequency, the funnel and the
cumulative reach curve exactly equal to what the simulator served (k = 1 here so every cell
is released; suppression is covered in test_measure_report_http.py)."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec
import pytest

from adtier.simulate.direct import load_catalog_direct, run_direct
from adtier.simulate.truth import TruthRecorder
from adtier.simulate.world import build_world

START = dt.date(2026, 11, 2)


@pytest.fixture
def settings(settings):
    return msgspec.structs.replace(settings, privacy_k=1)


def simulate(ch, seed: int, profiles: int, days: int):
    world = build_world(seed, profiles, days, START)
    load_catalog_direct(ch, world)
    recorder = TruthRecorder(world, keep_exposures=True)
    run_direct(world, ch, recorder, tag=uuid.uuid4().hex[:8])
    return world, recorder.finish()


def test_report_and_frequency_equal_the_simulators_truth(api, ch):
    world, truth = simulate(ch, 41, 1_500, 4)
    campaigns = truth.campaigns.to_pylist()
    # the truth's daily curve counts by session day; the report counts by the impression's UTC
    # day (a session may cross midnight): rebuild the truth by UTC day from the exposures
    served = truth.exposures.filter(truth.exposures["served"]).to_pydict()
    first: dict[tuple[str, str], dt.date] = {}
    for pid, cid, ts in zip(served["profile_id"], served["campaign_id"], served["ts"]):
        day = ts.date()
        if first.get((pid, cid), day) >= day:
            first[(pid, cid)] = day
    by_day: dict[str, dict[str, int]] = {}
    for (pid, cid), day in first.items():
        counts = by_day.setdefault(cid, {})
        counts[day.isoformat()] = counts.get(day.isoformat(), 0) + 1
    checked = 0
    for c in campaigns:
        if not c["impressions"]:
            continue
        cid = c["campaign_id"]
        report = api.client.get(f"/v1/campaigns/{cid}/report?by=creative", headers=api.admin)
        assert report.status_code == 200, report.text
        totals = report.json()["totals"]
        assert totals["impressions"] == c["impressions"], cid
        assert totals["reach"] == c["reach"], cid
        for metric, name in (("starts", "start"), ("first_quartile", "first_quartile"),
                             ("midpoint", "midpoint"), ("third_quartile", "third_quartile"),
                             ("completes", "complete"), ("skips", "skip"), ("clicks", "click"),
                             ("viewable_impressions", "viewable_impression")):
            assert totals[metric] == c[name], (cid, metric)
        funnel = [totals[m] for m in ("impressions", "starts", "first_quartile", "midpoint",
                                      "third_quartile", "completes")]
        assert funnel == sorted(funnel, reverse=True), cid
        rows = report.json()["rows"]
        assert sum(r["impressions"] for r in rows) == c["impressions"]

        freq = api.client.get(f"/v1/campaigns/{cid}/frequency", headers=api.admin).json()
        assert freq["reach"] == c["reach"]
        assert [d["profiles"] for d in freq["distribution"]] == c["frequency_1_to_10plus"], cid
        assert sum(d["profiles"] for d in freq["distribution"]) == freq["reach"]
        curve = {p["day"]: p["reach"] for p in freq["cumulative_reach"]}
        running = 0
        for d in range(world.days + 1):
            day = (START + dt.timedelta(days=d)).isoformat()
            running += by_day[cid].get(day, 0)
            if day in curve:
                assert curve[day] == running, (cid, day)
        assert running == c["reach"]
        assert freq["cumulative_reach"][-1]["reach"] == c["reach"]
        checked += 1
    assert checked >= 10


def test_reach_forecast_and_its_backtest_on_a_simulated_world(api, ch):
    world, truth = simulate(ch, 42, 2_000, 6)
    plan = {"segment_ids": [], "impressions": 3_000, "frequency_cap": 0, "days": 3}
    answer = api.client.post("/v1/forecast/reach", json=plan, headers=api.admin)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    adults = int((~world.kids).sum() - (world.opted_out & ~world.kids).sum())
    assert body["universe"] == adults
    assert body["model"] == "negative-binomial"
    assert 0 < body["reach"] <= min(body["universe"], plan["impressions"])
    assert abs(sum(d["profiles"] for d in body["distribution"]) - body["reach"]) < 1.0
    assert body["avg_frequency"] >= 1.0
    assert body["parameters"]["gamma_shape"] > 0
    # fitted on the first 3 days, predicting the last 3: the error is reported. Not held to
    # the 5 % target: halves of 3 days cannot both hold a weekend (here Mon-Wed and Thu-Sat),
    # and the simulator's weekend has 30 % more sessions, which the model fitted on weekdays
    # reads as the same viewers watching more rather than more viewers: on 7-day worlds the
    # uncapped backtest was 4-13 % low over 10 seeds (loadtest/measure_accuracy.py)
    assert body["backtest"]["actual_reach"] > 0
    assert body["backtest_error"] is not None and body["backtest_error"] < 0.10, body["backtest"]

    capped = api.client.post("/v1/forecast/reach", headers=api.admin, json={
        **plan, "frequency_cap": 1}).json()
    assert capped["model"] == "beta-binomial"
    assert capped["reach"] >= body["reach"]  # a cap spreads the same impressions wider
    assert capped["avg_frequency"] <= plan["days"]
    over = api.client.post("/v1/forecast/reach", headers=api.admin, json={
        **plan, "impressions": 10**9, "frequency_cap": 1}).json()
    assert over["deliverable_impressions"] == adults * 3
    assert over["reach"] == pytest.approx(adults, rel=1e-6)

    bad = api.client.post("/v1/forecast/reach", headers=api.admin, json={"impressions": 0})
    assert bad.status_code == 400


def test_reach_forecast_backtest_on_whole_weeks_is_within_the_target(api, ch):
    # a 7-day plan on two weeks of history: halves of one week each, so the weekend is in both
    # and the backtest is held to the 5 % (over 10 seeds of 3,000 profiles: at most
    # 2.7 % uncapped, 3.8 % capped; loadtest/measure_accuracy.py --days 14 --forecast-days 7)
    simulate(ch, 42, 2_000, 14)
    for cap, model in ((0, "negative-binomial"), (3, "beta-binomial")):
        body = api.client.post("/v1/forecast/reach", headers=api.admin, json={
            "segment_ids": [], "impressions": 20_000, "frequency_cap": cap, "days": 7}).json()
        assert body["model"] == model
        assert body["parameters"]["history_days"] == 14
        assert body["backtest_error"] <= 0.05, body["backtest"]


def test_content_effects_lift_ci_covers_the_planted_effect(api, ch):
    world, truth = simulate(ch, 3, 3_000, 7)
    effects = {r["campaign_id"]: r for r in truth.effects.to_pylist()
               if r["effect"] == "promo_start_lift"}
    covered = 0
    for cid, planted in effects.items():
        answer = api.client.get(f"/v1/campaigns/{cid}/content-effects?days=7", headers=api.admin)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["kind"] == "holdout_lift" and not body["suppressed"]
        assert body["holdout_served"] == 0  # the holdout is never served the campaign
        assert 0 < body["exposed_share"] < 1
        arms = {a["arm"]: a for a in body["arms"]}
        assert set(arms) == {"treated", "holdout"}
        share = arms["holdout"]["profiles"] / (arms["holdout"]["profiles"]
                                               + arms["treated"]["profiles"])
        assert share == pytest.approx(0.20, abs=0.05)  # the 20% holdout, by the shared hash
        sessions = body["lift"][0]
        assert sessions["metric"] == "share_of_sessions_starting_target"
        assert sessions["ci95"][0] <= sessions["estimate"] <= sessions["ci95"][1]
        lo, hi = body["per_exposed_session"]["ci95"]
        # the planted effect, in the same units (extra share of post-exposure sessions that
        # start the target): planted lift * (1 - holdout rate) * share of openers started
        covered += lo <= planted["expected"] <= hi
        metrics = [c["metric"] for c in body["lift"]]
        assert metrics == ["share_of_sessions_starting_target",
                           "share_of_profiles_starting_target",
                           "target_minutes_watched_per_profile"]
        if "promoted_title_id" in body["target"]:
            assert sessions["ci95"][0] > 0, body  # a title promo's lift is detected
            assert body["lift"][2]["estimate"] > 0  # and it brings watch time
    assert covered >= len(effects) - 1, covered

    # abandonment after breaks, by pod size, against the planted exit probabilities (the
    # report's 60 s window also catches a few natural session ends right after a break)
    exits = {r["target"]: r for r in truth.effects.to_pylist()
             if r["effect"] == "session_exit_after_pod"}
    abandon = body["abandonment"]
    assert abandon["kind"] == "observational" and not abandon["suppressed"]
    assert 0 <= abandon["campaign_rate"] <= 1 and 0 <= abandon["baseline_rate"] <= 1
    by_size = {r["pod_size"]: r["abandonment_rate"] for r in abandon["by_pod_size"]}
    for size in ("1", "2", "3"):
        realised = exits[f"pod_size={size}"]["realised"]
        assert realised - 0.01 <= by_size[size] <= realised + 0.02, (size, by_size, realised)
    assert by_size["3"] > by_size["2"] + 0.03  # long pods drive viewers away


def test_content_effects_without_holdout_is_observational(api, ch):
    simulate(ch, 5, 1_500, 3)
    # a campaign without a holdout, made into a promotion of a genre
    row = ch.query("SELECT campaign_id FROM campaigns FINAL WHERE holdout_percent = 0 "
                   "ORDER BY campaign_id LIMIT 1").result_rows[0][0]
    item = api.client.get(f"/v1/catalog/campaigns/{row}", headers=api.admin).json()
    item = {k: item[k] for k in ("campaign_id", "advertiser_id", "name", "ad_category",
                                 "start_date", "end_date", "frequency_cap", "holdout_percent")}
    assert api.client.put("/v1/catalog/campaigns", headers=api.admin, json={
        "items": [{**item, "promoted_genre": "drama"}]}).status_code == 200
    body = api.client.get(f"/v1/campaigns/{row}/content-effects", headers=api.admin).json()
    assert body["kind"] == "observational"
    assert "lift" not in body and "difference" in body and "causal" in body["caveat"]
    assert {a["arm"] for a in body["arms"]} == {"exposed", "not_exposed"}
    not_promo = ch.query("SELECT campaign_id FROM campaigns FINAL WHERE holdout_percent = 0 "
                         "AND campaign_id != {c:String} LIMIT 1",
                         parameters={"c": row}).result_rows[0][0]
    assert api.client.get(f"/v1/campaigns/{not_promo}/content-effects",
                          headers=api.admin).status_code == 422
