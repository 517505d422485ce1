"""Backtests of both candidates: fitted on the first half of the history, asked for the
second half's campaigns (``Flight``) and its whole delivery; the errors choose the model."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

import numpy as np

from adtier.measure.forecast.models import (
    CANDIDATES,
    Counts,
    delivery_weights,
    fit_gamma_poisson,
    gamma_poisson,
    history_counts,
    targeted_reach,
    thinning_reach,
)

__all__ = ["Flight", "backtest"]


@dataclass(frozen=True)
class Flight:
    """A campaign's second-half delivery to the universe (sampled profiles), its cap and
    what targets it: its id and holdout share (held-out profiles are never served it) and its
    ad category (``category`` = the tier-1 IAB id; empty: untargeted)."""

    impressions: int
    reach: int
    cap: int
    campaign_id: str = ""
    category: str = ""
    holdout_percent: float = 0.0


def halves(blocks: int, days: int) -> tuple[np.ndarray, np.ndarray]:
    half = max(1, min(days, blocks // 2))
    return np.arange(blocks - 2 * half, blocks - half), np.arange(blocks - half, blocks)


def plan_columns(blocks: int, days: int) -> np.ndarray:
    """The history's days a plan replays: the most recent, cycled when the plan is longer."""
    return (np.arange(days) + max(0, blocks - days)) % blocks


def shared_top(h: dict[str, Any], days: int) -> int:
    """The beta-binomial's opportunities in the history (its share is ``mean / top``): the
    largest per-profile count over the plan's days and either backtest half. One number for
    the answer and both backtests, so the model that is backtested is the one that answers;
    each window's own largest count is one heavy viewer's draw, and a beta fitted over one
    and applied over another moved reach by 57 %."""
    first, second = halves(h["blocks"], days)
    return max(history_counts(h, c).top for c in (plan_columns(h["blocks"], days), first, second))


def _errors(predicted: list[float], actual: list[float], weights: list[float]
            ) -> dict[str, Any]:
    rel = np.array(predicted) / np.array(actual) - 1
    w = np.array(weights, np.float64)
    return {"error": round(float(w @ np.abs(rel) / w.sum()), 6),
            "median_error": round(statistics.median(np.abs(rel).tolist()), 6),
            "signed_error": round(float(w @ rel / w.sum()), 6), "count": len(rel)}


def _flight_weights(h: dict[str, Any], f: Flight, first: np.ndarray) -> np.ndarray | None:
    """The flight's delivery weight per history row, from the first half only: its
    category's share (``delivery_weights``), zero in its holdout. None: untargeted."""
    categories = h.get("flight_categories", [])
    holdouts = h.get("holdout_ids", [])
    if f.category not in categories and f.campaign_id not in holdouts:
        return None
    w = np.ones(len(h["counts"]))
    if f.category in categories:
        w = delivery_weights(h["flight_category_counts"][:, categories.index(f.category)],
                             h["vectors"][:, first].sum(axis=1), h["counts"])
    if f.campaign_id in holdouts:
        w = w * ~h["holdout"][:, holdouts.index(f.campaign_id)]
    return w


def _flight_backtest(h: dict[str, Any], first_columns: np.ndarray, flights: list[Flight],
                     days: int, top: int) -> dict[str, Any]:
    """Each flight asked of both candidates fitted on the first half: thinning targeted by
    the flight's category and holdout, the NBD untargeted over the universe less the holdout
    share (its beta share over the answer's own ``top``, so it is the model that answers)."""
    first = history_counts(h, first_columns)
    weight = h["weight"]
    fit = fit_gamma_poisson(first, top)  # moments from the first half only
    n = first.profiles
    vectors = h["vectors"][:, first_columns]
    predicted: dict[str, list[float]] = {c: [] for c in CANDIDATES}
    for f in flights:
        impressions = f.impressions * weight
        reachable = n * (1 - f.holdout_percent / 100)
        gp = gamma_poisson(fit, impressions / reachable, f.cap * days if f.cap > 0 else 0)
        predicted["negative-binomial"].append(gp["p_reach"] * reachable)
        w = _flight_weights(h, f, first_columns)
        predicted["empirical-thinning"].append(
            thinning_reach(first, impressions, f.cap)[0] if w is None else
            targeted_reach(vectors, h["counts"] * weight, w, impressions, f.cap)[0])
    actual = [f.reach * weight for f in flights]
    weights = [float(f.impressions) for f in flights]
    # no impressions or reach of other advertisers' campaigns leave: errors and a count only
    return {"method": "flights", "days": days, "campaigns": len(flights),
            "candidates": {c: _errors(p, actual, weights) for c, p in predicted.items()}}


def _stream_backtest(first: Counts, second: Counts, cap: int, days: int, top: int
                     ) -> dict[str, Any] | None:
    """All second-half impressions as one plan against the profiles with any of them (the
    NBD's beta share over the answer's own ``top``)."""
    actual = float(second.total_weights[second.totals > 0].sum())
    if actual <= 0:
        return None
    impressions = float(second.total_weights @ second.totals)
    fit = fit_gamma_poisson(first, top)
    gp = gamma_poisson(fit, impressions / first.profiles, top if cap > 0 else 0)
    predicted = {"negative-binomial": gp["p_reach"] * first.profiles,
                 "empirical-thinning": thinning_reach(first, impressions, 0)[0]}
    return {"method": "ad-stream", "days": days, "campaigns": 0,
            "impressions": round(impressions),
            "candidates": {c: {**_errors([p], [actual], [1.0]),
                               "predicted_reach": round(p, 1), "actual_reach": round(actual, 1)}
                           for c, p in predicted.items()}}


def backtest(h: dict[str, Any], flights: list[Flight], cap: int, days: int,
             top: int | None = None) -> dict[str, Any] | None:
    """Both candidates fitted on the first half of the history's last ``2 h`` days, asked for
    the second half: the flights when there are any, else the whole ad stream; None when the
    second half has no impression. ``top``: ``shared_top`` when the caller has it."""
    first_columns, second_columns = halves(h["blocks"], days)
    top = shared_top(h, days) if top is None else top
    if flights:
        return _flight_backtest(h, first_columns, flights, len(second_columns), top)
    return _stream_backtest(history_counts(h, first_columns),
                            history_counts(h, second_columns), cap, len(second_columns), top)
