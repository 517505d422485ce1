"""Measurement accuracy over several simulated worlds: the reach forecast's backtest error and
how often the content-effects lift's 95 % CI covers the planted promo effect.

Each seed builds a small simulated world (``--profiles`` x ``--days``, ``simulate.world``),
stores it with ``run_direct`` into one throwaway chDB (tables emptied between seeds) and asks
the measurement code directly (no HTTP: the numbers are the endpoints' own functions):

- **Forecast backtest** (``measure.forecast``, target (issue) <= 5 %): the answer's own
  backtest, for an uncapped plan and a capped one (cap 3), over every eligible profile. Both
  candidates (the negative binomial, beta-binomial under a cap; empirical capped thinning)
  fitted on the first half of the recent history and asked for each campaign that ran in the
  second half (``flights``: its impressions there, its cap, the half's days, its catalog
  category and holdout) against the
  distinct profiles it reached; or, when none qualifies, for the whole ad stream. Printed per
  candidate: the impressions-weighted mean |error|, the median, the signed mean, the number
  of campaigns, and the model the answer chose.
- **Flights** (informative: each plan knows its own period's history): each simulated
  campaign's impressions served to the forecast's universe (eligible profiles: opted-out
  adults are served but never in it), its cap, flight length, ad category and holdout share
  put to the forecast, against
  the reach it had in that universe (from the store, which equals the simulator's truth:
  ``tests/integration``). Both candidates' reach for the plan (``parameters.candidates``) and
  the chosen answer's, split by capped / uncapped (the uncapped are the always-on fillers,
  which also take every over-cap and holdout slot) and by holdout. The simulator targets
  campaigns by category affinity and never serves their holdout; the forecast learns the
  first from the profiles' own category shares in the history and takes the second as a
  random share of the universe.
- **Lift coverage** (``measure.lift.content_effects``): for each house promo (20 % holdout), is
  the planted effect inside the 95 % CI? In the endpoint's units: ``per_exposed_session`` (the
  ITT session lift divided by the treated arm's share of sessions after first exposure)
  against the truth's ``expected`` = planted lift x (1 - holdout rate) x share of sessions
  whose opener starts (``simulate.truth``); equivalently the ITT CI against expected x that
  share. Coverage is printed with its Wilson 95 % interval.

Run (chDB in-process, ~2 cores)::

    uv run python -m loadtest.measure_accuracy --seeds 1-10
    uv run python -m loadtest.measure_accuracy --seeds 1-40 --skip forecast,flights
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from adtier.measure import forecast as F
from adtier.measure.forecast.history import _universe_sql
from adtier.measure import lift as L
from adtier.measure import noisy as N
from adtier.privacy.noise import NoiseStream, seed_key
from adtier.measure.privacy import CampaignInfo
from adtier.simulate.direct import load_catalog_direct, run_direct
from adtier.simulate.truth import Truth, TruthRecorder
from adtier.simulate.world import World, build_world
from adtier.store import connect
from adtier.store.migrate import apply_migrations

START = dt.date(2026, 11, 2)
TARGET = 0.05
# every table a simulated world writes (catalog, events, their rollups): emptied between seeds
_TABLES = ("ad_events", "content_events", "ingest_batches", "advertisers", "campaigns",
           "creatives", "titles", "profiles", "privacy_optouts", "erasures", "profile_ad_daily",
           "profile_content_daily", "profile_activity_daily", "ad_campaign_daily",
           "ad_breaks_daily", "session_ends_daily", "ad_campaign_cells", "ad_erased_events")


def parse_seeds(text: str) -> list[int]:
    """``1-10`` or ``1,4,7`` (or both: ``1-3,9``)."""
    seeds: list[int] = []
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        seeds.extend(range(int(lo), int(hi or lo) + 1))
    return seeds


def wilson(hits: int, n: int, z: float = L.Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (sound near 0 and 1, unlike Wald)."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def simulate(client, seed: int, profiles: int, days: int) -> tuple[World, Truth]:
    for table in _TABLES:
        client.command(f"TRUNCATE TABLE IF EXISTS {table}")
    world = build_world(seed, profiles, days, START)
    load_catalog_direct(client, world)
    recorder = TruthRecorder(world)
    run_direct(world, client, recorder, tag=uuid.uuid4().hex[:8])
    return world, recorder.finish()


def backtests(client, days: int) -> list[dict[str, Any]]:
    """The forecast answer's backtest for an uncapped and a capped plan (``days`` sets the
    history window: 2 x days, the halves ``days``): every candidate's errors and the choice."""
    rows = []
    for cap in (0, 3):
        answer = F.forecast(client, [], 10_000, cap, days)
        test = answer["backtest"]
        if test is None:
            continue
        rows.append({"cap": cap, "model": answer["model"], "method": test["method"],
                     "campaigns": test["campaigns"], "candidates": test["candidates"],
                     "error": answer["backtest_error"]})
    return rows


_SERVED = """
SELECT campaign_id, count() AS impressions, uniqExact(profile_id) AS reach
FROM ad_events
WHERE type = 'impression' AND profile_id IN (__UNIVERSE__)
GROUP BY campaign_id
"""


def flights(client, truth: Truth) -> list[dict[str, Any]]:
    """Each served campaign's own plan (impressions to the universe, cap, flight days) against
    the reach it had in the universe: signed error (predicted / actual - 1) of the answer and
    of every candidate."""
    sql = _SERVED.replace("__UNIVERSE__", _universe_sql([]))
    served = {c: (i, r) for c, i, r in client.query(sql, parameters={"segments": []})
              .result_rows}
    rows = []
    for c in truth.campaigns.to_pylist():
        impressions, reach = served.get(c["campaign_id"], (0, 0))
        if impressions < 50:
            continue
        start, end = (dt.date.fromisoformat(c[k]) for k in ("start_date", "end_date"))
        n_days = (end - start).days + 1
        answer = F.forecast(client, [], int(impressions), int(c["frequency_cap"]), n_days,
                            c["ad_category"], float(c["holdout_percent"]))
        errors = {name: a["reach"] / reach - 1
                  for name, a in answer["parameters"]["candidates"].items()}
        rows.append({"error": answer["reach"] / reach - 1, "by_candidate": errors,
                     "model": answer["model"], "capped": c["frequency_cap"] > 0,
                     "holdout": c["holdout_percent"] > 0})
    return rows


def campaign_info(client, campaign_id: str) -> CampaignInfo:
    row = client.query(
        "SELECT campaign_id, advertiser_id, start_date, end_date, frequency_cap, "
        "holdout_percent, promoted_title_id, promoted_genre FROM campaigns FINAL "
        "WHERE campaign_id = {c:String}", parameters={"c": campaign_id}).result_rows[0]
    return CampaignInfo(*row)


def lift_checks(client, truth: Truth, window: int, epsilon: float | None = None,
                seed: int = 0) -> list[dict[str, Any]]:
    """Per promo: the planted effect against the per-exposed-session CI and the ITT CI.
    With ``epsilon``: the answer an advertiser key gets (noisy sums, CIs widened for the
    noise; ``measure.noisy.EffectsPrivatizer``), its noise seeded by the world's seed."""
    rows = []
    for planted in truth.effects.to_pylist():
        if planted["effect"] != "promo_start_lift":
            continue
        privatize = None
        if epsilon is not None:
            def open_stream(version: str, c=planted["campaign_id"]) -> NoiseStream:
                return NoiseStream(seed_key(f"accuracy-{seed}".encode(), "adv", c, version))
            privatize = N.EffectsPrivatizer(open_stream, epsilon, window)
        body = L.content_effects(client, campaign_info(client, planted["campaign_id"]),
                                 window, 1, privatize)
        if body["suppressed"] or "per_exposed_session" not in body:
            rows.append({"campaign_id": planted["campaign_id"], "skipped": True})
            continue
        session = body["lift"][0]
        share = body["exposed_session_share"]
        lo, hi = body["per_exposed_session"]["ci95"]
        expected = planted["expected"]
        rows.append({"campaign_id": planted["campaign_id"], "skipped": False,
                     "kind": "title" if "promoted_title_id" in body["target"] else "genre",
                     "expected": expected, "estimate": body["per_exposed_session"]["estimate"],
                     "lo": lo, "hi": hi, "covered": lo <= expected <= hi,
                     "itt": session["estimate"], "itt_se": session["std_error"],
                     "itt_truth": expected * share})
    return rows


def _pct(x: float) -> str:
    return f"{100 * x:5.2f}%"


def report_forecast(per_seed: dict[int, list[dict[str, Any]]]) -> None:
    print("\nforecast backtest (both candidates fitted on the first half of the history, asked "
          "for the second half's campaigns; weighted mean |error|, signed):")
    groups: dict[tuple[int, str], list[float]] = {}
    chosen: dict[int, dict[str, int]] = {}
    for seed, rows in per_seed.items():
        parts = []
        for r in rows:
            text = " ".join(f"{name} {_pct(c['error'])} ({100 * c['signed_error']:+.1f}%)"
                            for name, c in r["candidates"].items())
            parts.append(f"cap {r['cap']} {r['method']} n={r['campaigns']}: {text} -> "
                         f"{r['model']}")
            for name, c in r["candidates"].items():
                groups.setdefault((r["cap"], name), []).append(c["error"])
            groups.setdefault((r["cap"], "chosen"), []).append(r["error"])
            counts = chosen.setdefault(r["cap"], {})
            counts[r["model"]] = counts.get(r["model"], 0) + 1
        print(f"  seed {seed:3d}  " + "\n            ".join(parts))
    for (cap, name), errors in groups.items():
        within = sum(e <= TARGET for e in errors)
        print(f"  cap {cap} {name:18s} error mean {_pct(statistics.fmean(errors))} median "
              f"{_pct(statistics.median(errors))} max {_pct(max(errors))}; <= {TARGET:.0%} in "
              f"{within}/{len(errors)} seeds")
    for cap, counts in chosen.items():
        print(f"  cap {cap} chosen: {counts}")


def _flight_line(label: str, errors: list[float]) -> str:
    absolute = sorted(abs(e) for e in errors)
    return (f"  {label:40s} {len(errors):4d} campaigns: |error| mean "
            f"{_pct(statistics.fmean(absolute))} median {_pct(statistics.median(absolute))} "
            f"max {_pct(absolute[-1])}; signed mean {_pct(statistics.fmean(errors))}")


def report_flights(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    print("\nflights (each campaign's own plan over the eligible profiles vs the reach it had "
          "there; signed error positive: the forecast over-reaches):")
    groups = {"all": rows,
              "uncapped (fillers)": [r for r in rows if not r["capped"]],
              "capped": [r for r in rows if r["capped"]],
              "capped, no holdout": [r for r in rows if r["capped"] and not r["holdout"]],
              "capped, holdout": [r for r in rows if r["capped"] and r["holdout"]]}
    for label, group in groups.items():
        if not group:
            continue
        print(_flight_line(f"{label}, answer", [r["error"] for r in group]))
        for name in group[0]["by_candidate"]:
            print(_flight_line(f"{label}, {name}", [r["by_candidate"][name] for r in group]))
    models: dict[str, int] = {}
    for r in rows:
        models[r["model"]] = models.get(r["model"], 0) + 1
    print(f"  models answering: {models}")


def report_lift(per_seed: dict[int, list[dict[str, Any]]]) -> None:
    print("\nlift: planted promo effect inside the 95 % CI (per exposed session)?")
    hits = total = skipped = 0
    by_kind: dict[str, list[bool]] = {}
    z_scores = []
    for seed, rows in per_seed.items():
        marks = " ".join(("ok" if r["covered"] else "MISS") if not r["skipped"] else "skip"
                         for r in rows)
        print(f"  seed {seed:3d}  {marks}")
        for r in rows:
            if r["skipped"]:
                skipped += 1
                continue
            total += 1
            hits += r["covered"]
            by_kind.setdefault(r["kind"], []).append(r["covered"])
            z_scores.append((r["itt"] - r["itt_truth"]) / r["itt_se"])
    lo, hi = wilson(hits, total)
    print(f"  coverage {hits}/{total} = {hits / total if total else 0:.3f} "
          f"(Wilson 95 % [{lo:.3f}, {hi:.3f}]; expected 0.95), skipped {skipped}")
    for kind, marks in by_kind.items():
        klo, khi = wilson(sum(marks), len(marks))
        print(f"    {kind:5s} promos {sum(marks)}/{len(marks)} [{klo:.3f}, {khi:.3f}]")
    widths = [r["hi"] - r["lo"] for rows in per_seed.values() for r in rows if not r["skipped"]]
    if widths:
        print(f"  CI width (per exposed session): median {statistics.median(widths):.4f}")
    if len(z_scores) > 1:
        # (estimate - truth) / se: mean ~0 and sd ~1 if the estimator is unbiased and its
        # standard error right; a shifted mean is bias, a wide sd an understated error
        print(f"  z = (ITT estimate - planted) / se: mean {statistics.fmean(z_scores):+.2f}, "
              f"sd {statistics.stdev(z_scores):.2f} (unbiased, honest se: 0, 1)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1-10", help="e.g. 1-10 or 1,4,7")
    parser.add_argument("--profiles", type=int, default=3_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--forecast-days", type=int, default=3,
                        help="the plan's days: the backtest's halves (history 2 x days)")
    parser.add_argument("--window", type=int, default=7, help="content effects' outcome days")
    parser.add_argument("--skip", default="", help="comma list of: forecast,flights,lift")
    parser.add_argument("--epsilon", type=float, default=None,
                        help="lift as an advertiser key gets it: DP noise at this ε per query "
                             "(default: exact, as admin)")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    data_dir = Path(tempfile.mkdtemp(prefix="adtier-measure-accuracy-"))
    client = connect(f"chdb://{data_dir / 'clickhouse'}")
    apply_migrations(client)
    backtest_rows: dict[int, list[dict[str, Any]]] = {}
    flight_rows: list[dict[str, Any]] = []
    lift_rows: dict[int, list[dict[str, Any]]] = {}
    started = time.perf_counter()
    try:
        for seed in parse_seeds(args.seeds):
            t = time.perf_counter()
            world, truth = simulate(client, seed, args.profiles, args.days)
            t_sim = time.perf_counter() - t
            if "forecast" not in skip:
                backtest_rows[seed] = backtests(client, args.forecast_days)
            if "flights" not in skip:
                flight_rows += flights(client, truth)
            if "lift" not in skip:
                lift_rows[seed] = lift_checks(client, truth, args.window, args.epsilon, seed)
            print(f"seed {seed}: {world.n_profiles:,} profiles x {world.days} days, simulated "
                  f"and stored in {t_sim:.1f} s, measured in {time.perf_counter() - t - t_sim:.1f}"
                  f" s", flush=True)
    finally:
        client.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    if backtest_rows:
        report_forecast(backtest_rows)
    report_flights(flight_rows)
    if lift_rows:
        report_lift(lift_rows)
    print(f"\ntotal {time.perf_counter() - started:.0f} s; target (issue): backtest error "
          f"<= {TARGET:.0%}, lift CI coverage ~95 %")


if __name__ == "__main__":
    main()
