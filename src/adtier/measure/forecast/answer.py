"""One forecast: read the history, backtest both candidates, answer with the one that
predicted the real campaigns better (``forecast``, as an admin key sees it)."""

from __future__ import annotations

from typing import Any

import numpy as np
from clickhouse_connect.driver.client import Client

from adtier.measure.forecast.backtest import backtest, plan_columns, shared_top
from adtier.measure.forecast.history import flights, history, plan_days, scope, tier1
from adtier.measure.forecast.models import (
    CANDIDATES,
    Counts,
    MAX_BUCKET,
    POISSON_R,
    delivery_weights,
    fit_gamma_poisson,
    gamma_poisson,
    history_counts,
    plan_reach,
)

__all__ = ["forecast"]


def _distribution(profiles_by_frequency: list[float]) -> list[dict[str, Any]]:
    return [{"frequency": "10+" if i == MAX_BUCKET - 1 else str(i + 1), "profiles": round(p, 1)}
            for i, p in enumerate(profiles_by_frequency)]


def _negative_binomial_plan(plan: Counts, top: int, n: float, impressions: int, cap: int,
                            days: int) -> dict[str, Any]:
    """The issue's model for the plan: NBD on the replayed days, beta-binomial under a cap,
    over ``n`` reachable profiles (untargeted: the universe less a holdout's share)."""
    fit = fit_gamma_poisson(plan, top)
    opportunities = cap * days if cap > 0 else 0
    deliverable = min(impressions, n * opportunities) if opportunities else impressions
    gp = gamma_poisson(fit, deliverable / n if n else 0.0, opportunities)
    return {"model": "beta-binomial" if opportunities else "negative-binomial",
            "reach": gp["p_reach"] * n, "deliverable": float(deliverable),
            "profiles_by_frequency": [b * n for b in gp["buckets"]],
            "parameters": {"gamma_shape": None if fit.r >= POISSON_R else round(fit.r, 6),
                           "history_mean": round(fit.mean, 6),
                           "history_variance": round(fit.variance, 6),
                           "opportunities": opportunities or None,
                           "beta_concentration": None if gp["concentration"] is None
                           else round(gp["concentration"], 6)}}


def _thinning_plan(h: dict[str, Any], columns: np.ndarray, impressions: int, cap: int,
                   category: str, holdout_percent: float) -> dict[str, Any]:
    """Capped thinning of the replayed days, targeted by the category's delivery weights
    (learnt over the whole history) and served to a random ``1 - holdout`` share."""
    w = (delivery_weights(h["plan_category"], h["vectors"].sum(axis=1), h["counts"])
         if category else None)
    rows, row_w, inverse = plan_days(h["vectors"], columns, w)
    weights = np.bincount(inverse, weights=h["counts"], minlength=len(rows))
    reachable = h["weight"] * (1 - holdout_percent / 100)
    fit = plan_reach(rows, weights * reachable, impressions, cap, row_w)
    # q > 0 below saturation was solved to deliver the plan exactly; saturated, the slots
    # ran out (at 0, there were none)
    deliverable = (float(impressions) if fit["q"] > 0 and not fit["saturated"]
                   else min(impressions, fit["delivered"]))
    return {"model": "empirical-capped-thinning" if cap > 0 else "empirical-thinning",
            "reach": fit["reach"], "deliverable": deliverable,
            "profiles_by_frequency": fit["profiles_by_frequency"],
            "parameters": {"win_rate": round(fit["q"], 9)}}


def _choose(test: dict[str, Any] | None) -> str:
    """The candidate with the lower backtest error; the issue's model on a tie or without
    a backtest (it needs no observed slots)."""
    if test is None:
        return CANDIDATES[0]
    return min(CANDIDATES, key=lambda c: test["candidates"][c]["error"])


def forecast(client: Client, segment_keys: list[str], impressions: int, frequency_cap: int,
             days: int, ad_category: str | None = None, holdout_percent: float = 0.0
             ) -> dict[str, Any]:
    s = scope(client, segment_keys, days)
    served = flights(client, segment_keys, s, days)
    category = tier1(ad_category)
    h = history(client, segment_keys, s, days, category, served)
    blocks, n = h["blocks"], h["universe"]
    columns = plan_columns(blocks, days)
    plan = history_counts(h, columns)
    top = shared_top(h, days)
    reachable = n * (1 - holdout_percent / 100)
    answers = {"negative-binomial": _negative_binomial_plan(plan, top, reachable, impressions,
                                                            frequency_cap, days),
               "empirical-thinning": _thinning_plan(h, columns, impressions, frequency_cap,
                                                    category, holdout_percent)}
    test = backtest(h, served, frequency_cap, days, top)
    name = _choose(test)
    chosen = answers[name]
    reach, deliverable = chosen["reach"], chosen["deliverable"]
    return {
        "universe": n,
        "impressions": impressions,
        "deliverable_impressions": round(deliverable),
        "frequency_cap": frequency_cap,
        "days": days,
        "ad_category": ad_category,
        "holdout_percent": holdout_percent,
        "reach": round(reach, 1),
        "reach_share": round(reach / n, 6) if n else 0.0,
        "avg_frequency": round(deliverable / reach, 6) if reach else 0.0,
        "distribution": _distribution(chosen["profiles_by_frequency"]),
        "model": chosen["model"],
        "backtest_error": test["candidates"][name]["error"] if test else None,
        "backtest": test,
        "parameters": {
            "history_days": blocks, "replayed_days": min(days, blocks),
            "sampled_profiles": h["sampled"] if h["sampled"] < n else None,
            "candidates": {c: {"model": a["model"], "reach": round(a["reach"], 1),
                               "deliverable_impressions": round(a["deliverable"]),
                               **a["parameters"]} for c, a in answers.items()}},
    }
