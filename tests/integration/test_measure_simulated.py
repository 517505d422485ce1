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
    # the whole simulated span: a session crossing midnight after a flight's last day still
    # serves (the truth counts it), and without from/to a report covers the flight only
    span = f"from={world.start}&to={world.start + dt.timedelta(days=world.days)}"
    for c in campaigns:
        if not c["impressions"]:
            continue
        cid = c["campaign_id"]
        report = api.client.get(f"/v1/campaigns/{cid}/report?by=creative&{span}",
                                headers=api.admin)
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

        freq = api.client.get(f"/v1/campaigns/{cid}/frequency?{span}", headers=api.admin).json()
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


def _check_backtest(body: dict) -> dict:
    """The flight backtest ran on real campaigns, both candidates were asked the same ones,
    and the answer is the one that predicted them better."""
    test = body["backtest"]
    assert test["method"] == "flights" and test["campaigns"] > 0, test
    errors = {c: v["error"] for c, v in test["candidates"].items()}
    assert set(errors) == {"negative-binomial", "empirical-thinning"}
    assert all(v["count"] == test["campaigns"] for v in test["candidates"].values())
    chosen = "empirical-thinning" if body["model"].startswith("empirical") else \
        "negative-binomial"
    assert body["backtest_error"] == errors[chosen] == min(errors.values()), test
    return errors


def test_reach_forecast_and_its_backtest_on_a_simulated_world(api, ch):
    world, truth = simulate(ch, 42, 2_000, 6)
    plan = {"segment_ids": [], "impressions": 3_000, "frequency_cap": 0, "days": 3}
    answer = api.client.post("/v1/forecast/reach", json=plan, headers=api.admin)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    adults = int((~world.kids).sum() - (world.opted_out & ~world.kids).sum())
    assert body["universe"] == adults
    assert body["model"] in ("empirical-thinning", "negative-binomial")
    assert 0 < body["reach"] <= min(body["universe"], plan["impressions"])
    assert abs(sum(d["profiles"] for d in body["distribution"]) - body["reach"]) < 1.0
    assert body["avg_frequency"] >= 1.0
    candidates = body["parameters"]["candidates"]
    assert candidates["negative-binomial"]["gamma_shape"] > 0
    assert body["reach"] == candidates[
        "empirical-thinning" if body["model"].startswith("empirical") else
        "negative-binomial"]["reach"]
    # halves of 3 days: the campaigns of the last 3 days asked of both candidates fitted on
    # the 3 before. The error is reported, not held to the 5 %: the simulator targets
    # campaigns by affinity and holds profiles out, which no plan can say (measure_accuracy)
    assert body["backtest"]["days"] == 3
    _check_backtest(body)

    capped = api.client.post("/v1/forecast/reach", headers=api.admin, json={
        **plan, "frequency_cap": 1}).json()
    assert capped["model"] in ("empirical-capped-thinning", "beta-binomial")
    thinning = capped["parameters"]["candidates"]["empirical-thinning"]
    # a cap spreads the same impressions wider
    assert thinning["reach"] >= candidates["empirical-thinning"]["reach"]
    assert capped["parameters"]["candidates"]["negative-binomial"]["opportunities"] == 3
    assert capped["avg_frequency"] <= plan["days"]
    over = api.client.post("/v1/forecast/reach", headers=api.admin, json={
        **plan, "impressions": 10**9, "frequency_cap": 1}).json()
    thinning = over["parameters"]["candidates"]["empirical-thinning"]
    # every slot won, one a day: at most a profile's active days, only profiles with slots
    assert thinning["win_rate"] == 1.0
    assert 0 < thinning["deliverable_impressions"] <= adults * 3
    assert thinning["reach"] < adults
    # the beta-binomial delivers cap x days to everyone
    assert over["parameters"]["candidates"]["negative-binomial"][
        "deliverable_impressions"] == adults * 3
    assert over["avg_frequency"] <= 3

    bad = api.client.post("/v1/forecast/reach", headers=api.admin, json={"impressions": 0})
    assert bad.status_code == 400
    for wrong in ({"ad_category": "IAB27"}, {"ad_category": "sports"},
                  {"holdout_percent": 50.5}, {"holdout_percent": -1}):
        bad = api.client.post("/v1/forecast/reach", headers=api.admin, json={**plan, **wrong})
        assert bad.status_code == 400, wrong

    # targeted: the same impressions on a category's keener viewers and off a 20 % holdout
    # reach fewer profiles than a uniform win rate over everyone
    targeted = api.client.post("/v1/forecast/reach", headers=api.admin, json={
        **plan, "ad_category": "IAB19-6", "holdout_percent": 20}).json()
    assert (targeted["ad_category"], targeted["holdout_percent"]) == ("IAB19-6", 20)
    assert (targeted["parameters"]["candidates"]["empirical-thinning"]["reach"]
            < candidates["empirical-thinning"]["reach"])
    assert targeted["backtest"] == body["backtest"]  # the backtest does not depend on the plan


def test_reach_forecast_flight_backtest_on_whole_weeks(api, ch):
    # a 7-day plan on two weeks of history: each campaign of the second week asked of both
    # candidates fitted on the first. The chosen model's error is the smaller; the issue's
    # negative binomial is fitted and backtested all the same, and its error is what it is
    # (a loose sanity bound only; 10 seeds: loadtest/measure_accuracy.py --days 14)
    simulate(ch, 42, 2_000, 14)
    for cap in (0, 3):
        body = api.client.post("/v1/forecast/reach", headers=api.admin, json={
            "segment_ids": [], "impressions": 20_000, "frequency_cap": cap, "days": 7}).json()
        assert body["parameters"]["history_days"] == 14
        assert body["backtest"]["days"] == 7
        errors = _check_backtest(body)
        assert all(0 < e < 1 for e in errors.values()), errors


def test_reach_forecast_of_capped_campaigns_own_plans(api, ch):
    # each capped campaign, its impressions to the eligible profiles, cap, flight, category
    # and holdout put to the forecast, against the reach it had there. Thinning targeted by
    # the category's delivery weights and the holdout share (10 seeds of measure_accuracy:
    # |error| mean 3.3 %, signed +3.0 %, max 15.3 %; untargeted it was +16.7 %, max 28.5 %)
    world, truth = simulate(ch, 43, 1_500, 5)
    served = dict(ch.query(
        "SELECT campaign_id, (count(), uniqExact(profile_id)) FROM ad_events "
        "WHERE type = 'impression' AND profile_hash IN (SELECT cityHash64(profile_id) "
        "FROM profiles FINAL WHERE kind != 'kids') AND profile_id NOT IN "
        "(SELECT profile_id FROM privacy_optouts) GROUP BY campaign_id").result_rows)
    errors = []
    for c in truth.campaigns.to_pylist():
        impressions, reach = served.get(c["campaign_id"], (0, 0))
        if not c["frequency_cap"] or impressions < 50:
            continue
        days = (dt.date.fromisoformat(c["end_date"])
                - dt.date.fromisoformat(c["start_date"])).days + 1
        body = api.client.post("/v1/forecast/reach", headers=api.admin, json={
            "segment_ids": [], "impressions": impressions, "frequency_cap": c["frequency_cap"],
            "days": days, "ad_category": c["ad_category"],
            "holdout_percent": c["holdout_percent"]}).json()
        assert (body["ad_category"], body["holdout_percent"]) == (c["ad_category"],
                                                                  c["holdout_percent"])
        errors.append(body["parameters"]["candidates"]["empirical-thinning"]["reach"] / reach - 1)
    assert len(errors) >= 3
    assert abs(sum(errors) / len(errors)) < 0.06, errors
    assert all(-0.15 < e < 0.2 for e in errors), errors


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
