"""Reach forecasts: how many distinct profiles a flight of N impressions reaches, and how often.

The forecast reads the eligible universe's recent ad history (every campaign's impressions per
profile, in 24 h blocks back from the newest event, zeros included), fits two candidate models
on it, backtests both on the campaigns that really ran, and answers with the one that predicted
them better: ``model`` names it, ``backtest`` holds every candidate's error.

A plan may say what targets it, as the catalog says of a campaign: ``ad_category`` (its
delivery is learnt from the history's impressions of that tier-1 IAB category) and
``holdout_percent`` (a share of profiles never served it).

**Candidate ``negative-binomial``** (the issue's model; ``model`` = ``negative-binomial``, or
``beta-binomial`` with a cap). A profile's exposures are Poisson given its own rate, rates are
gamma across profiles: a negative binomial (NBD) whose shape ``r = m^2 / (v - m)`` is fitted on
the mean ``m`` and variance ``v`` of the per-profile counts over the plan's days, zeros included
(``v <= m``: Poisson). A campaign is a random thinning of the ad slots, which keeps ``r``, so
the plan sets the mean ``mu = impressions / universe``: reach = ``N (1 - (1 + mu / r) ** -r)``.
With a frequency cap a profile has at most ``n = cap x days`` opportunities: beta-binomial over
``n`` with mean ``mu / n`` and concentration ``s = r (1 - q) / q - 1`` (the share's CV^2 matched
to the gamma's ``1 / r`` at the history's own share ``q`` = its mean over its largest
per-profile count). Plans beyond ``N x cap x days`` are not deliverable. It stays untargeted:
``N`` is the universe less the holdout share, the category is not used.

**Candidate ``empirical-thinning``** (``model`` = ``empirical-thinning``, or
``empirical-capped-thinning`` with a cap). Every profile keeps its own observed ad slots day by
day; the campaign wins each slot with one probability ``q``, solved so the expected impressions
equal the plan, until the profile has had ``cap`` that day: profile ``i`` gets
``sum_d min(cap, Binomial(o_id, q))`` impressions and is reached with probability
``1 - (1 - q) ** sum_d o_id``. There is no shape to fit, which matters because ad slots come in
clumps (pods, breaks, sessions) and a thinned clumped count is not an NBD of the same shape.
Plans beyond the slots (``q = 1``) are not deliverable.

Targeted (``ad_category``): an ad server picks a campaign for a slot by how the profile takes
to its category, so profile ``i`` wins a slot with ``min(1, q w_i)``, ``w_i`` its delivery
weight: its share of the category among its impressions over the universe's share ``s``,
smoothed with ``CATEGORY_PRIOR`` (10) pseudo-impressions at ``s`` (``w_i = (c_i + 10 s) / (t_i +
10) / s``), normalised to a mean of 1 over the universe (no impression of the category: all 1,
the untargeted forecast). ``q`` is solved as before (``win_rate`` is this base rate; plans
beyond every weighted slot are not deliverable). Holdout: a random ``holdout_percent`` share
of profiles has no slots.

Both replay the history's most recent ``days`` (cycled when the plan is longer than the history).

**Backtest** (fit on the first part of the history, predict the rest). The history's last
``2 h`` days, ``h = min(days, history // 2)``, are split in halves; each candidate is fitted on
the first half only and asked for the second (the beta-binomial's share over the answer's
own ``top``, the largest per-profile count of the plan's days and both halves, so the model
backtested is the one that answers):

- ``flights`` (whenever a campaign qualifies): every campaign with impressions to the universe
  in the second half that reached at least ``FLIGHT_MIN_REACH`` (sampled) profiles, at most the
  ``FLIGHTS_MAX`` largest by impressions. Each is asked as a plan: its second-half impressions,
  its catalog frequency cap, ``h`` days, and what targets it in the catalog: thinning weights
  profiles by its category's share in the first half only and gives its own holdout (the
  catalog's ``HOLDOUT_SQL`` with its id) no slots, the NBD takes the universe less the holdout
  share; the answer is compared with the distinct profiles it really reached there. ``error``
  is the impressions-weighted mean of ``|predicted - actual| / actual``, with
  ``median_error``, ``signed_error`` (weighted, positive = forecast too high) and ``count``.
  Every advertiser's campaigns are used; only these aggregates are returned.
- ``ad-stream`` (no campaign qualifies): all second-half impressions as one plan (uncapped for
  thinning; for the NBD the model this plan would use, a beta-binomial over the larger of the
  halves' largest per-profile counts when capped) against the profiles with any impression.

The candidate with the lower ``error`` answers (a tie, or no impressions to backtest at all:
the negative binomial, which needs no observed slots).

**Answer.** ``universe`` (eligible profiles: the segments' union, or everyone; never opted-out,
erased or kids' profiles), ``reach``, ``reach_share``, ``avg_frequency`` (deliverable
impressions / reach), ``distribution`` (profiles reached 1..9 and 10+ times),
``deliverable_impressions`` (the plan, or what the chosen model can deliver), ``model``,
``ad_category`` and ``holdout_percent`` (as asked), ``backtest_error`` (the chosen model's
``error``), ``backtest`` (``method``, ``days``, ``campaigns``, ``candidates`` with each
candidate's errors) and ``parameters`` (``history_days``, ``replayed_days``,
``sampled_profiles``, and under ``candidates`` each model's fit and its reach and
deliverable impressions for this plan).

**What an advertiser sees** (``release``; admin keys get all of the above). Its universe
may be any list it uploaded, and a saturated plan answers with that list's own ad history,
so: every profile count and the deliverable impressions ``coarse`` (a step of ``k`` or the
second significant figure, the coarser; a reach under ``k`` is None), frequency buckets under
``k`` folded into ``suppressed`` as the frequency endpoint folds them, the models' fitted
parameters dropped, the ad-stream backtest without its impressions or reaches, and the flight
backtest (other advertisers' campaigns among its list) only when it rests on at least
``BACKTEST_MIN_CAMPAIGNS`` campaigns, as each candidate's ``error`` to 0.1 %; else
``method`` = ``withheld``. The model is still chosen on the full backtest.

A frequency cap above every day count caps nothing and is computed as that count
(``frequency_cap`` may be 1000; the pmf recursion holds cap x profile-days floats).

Scale: per-profile day vectors are aggregated in ClickHouse (identical vectors counted once),
with each profile's impressions of the plan's category and of each flight's category and its
flights' holdout flags in the same pass (one join of the impressions with the catalog);
above ``SAMPLE_MAX`` eligible profiles a stable hash sample of the universe is read and scaled
up, for the plan and the backtest alike.

NumPy and ``math.lgamma`` only: SciPy is not a dependency.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from dataclasses import dataclass
from typing import Any

import numpy as np
from clickhouse_connect.driver.client import Client

from adtier.catalog.holdouts import HOLDOUT_SQL
from adtier.catalog.store import excluded_profile_hashes_sql
from adtier.measure.privacy import fold_small_rows, fold_until_k

__all__ = ["fit_shape", "fit_shape_zeros", "bb_concentration", "nbd", "beta_binomial",
           "expected_delivered", "solve_win_rate", "exposure_pmf", "plan_reach", "Counts",
           "counts_on", "thinning_reach", "GammaPoisson", "fit_gamma_poisson",
           "gamma_poisson", "delivery_weights", "targeted_reach", "win_rate_max", "rates",
           "tier1", "Flight", "backtest", "scope", "history", "forecast", "release",
           "coarse", "CANDIDATES", "BACKTEST_MIN_CAMPAIGNS",
           "CATEGORY_PRIOR",
           "HISTORY_DAYS_MAX", "SAMPLE_MAX", "FLIGHTS_MAX", "FLIGHT_MIN_REACH"]

HISTORY_DAYS_MAX = 28
SAMPLE_MAX = 200_000  # eligible profiles read per forecast; above, a stable hash sample
FLIGHTS_MAX = 50  # campaigns backtested per request, the largest: bounds the cost
FLIGHT_MIN_REACH = 50  # sampled profiles: below, one campaign's relative error is mostly noise
# campaigns an advertiser's flight backtest must rest on (other advertisers' campaigns on its
# own list): fewer, and its errors describe a handful of identifiable competitor campaigns
BACKTEST_MIN_CAMPAIGNS = 5
CANDIDATES = ("negative-binomial", "empirical-thinning")
_POISSON_R = 1e6
_MAX_BUCKET = 10
_Q_MAX = 1 - 1e-12  # q = 1 makes the binomial recursion's odds infinite
CATEGORY_PRIOR = 10.0  # pseudo-impressions at the universe's category share (delivery_weights)


# ---- the negative binomial and its beta-binomial (the model) ------------------------

def fit_shape(mean: float, variance: float) -> float:
    """Gamma shape by moments (r -> large for Poisson-like or empty data)."""
    if mean <= 0 or variance <= mean:
        return _POISSON_R
    return mean * mean / (variance - mean)


def fit_shape_zeros(mean: float, zero_share: float) -> float:
    """Gamma shape from the mean and the share of profiles never exposed ("mean and zeros",
    Ehrenberg's classic NBD fit): solves (1 + m / r) ** -r = p0 by bisection on log r."""
    if mean <= 0 or zero_share <= math.exp(-mean):
        return _POISSON_R
    if zero_share >= 1:
        return 1e-6
    lo, hi = math.log(1e-6), math.log(_POISSON_R)
    for _ in range(100):
        r = math.exp((lo + hi) / 2)
        if math.exp(-r * math.log1p(mean / r)) > zero_share:
            lo = math.log(r)  # too heterogeneous: more shape
        else:
            hi = math.log(r)
    return math.exp((lo + hi) / 2)


def _buckets(pmf: np.ndarray) -> list[float]:
    """P(X = 1..9) and P(X >= 10) from a pmf over 0..len-1 (the tail from 1 - sum)."""
    head = [float(pmf[x]) if x < len(pmf) else 0.0 for x in range(1, _MAX_BUCKET)]
    return head + [max(0.0, 1.0 - float(pmf[0] if len(pmf) else 1.0) - sum(head))]


def nbd(mu: float, r: float) -> dict[str, Any]:
    """Per-profile reach probability and frequency buckets of an NBD with mean ``mu``."""
    if mu <= 0:
        return {"p_reach": 0.0, "buckets": [0.0] * _MAX_BUCKET}
    p = r / (r + mu)
    x = np.arange(_MAX_BUCKET)
    log_pmf = (np.array([math.lgamma(r + k) - math.lgamma(r) - math.lgamma(k + 1) for k in x])
               + r * math.log(p) + x * math.log1p(-p))
    pmf = np.exp(log_pmf)
    p0 = math.exp(r * math.log(p)) if r < _POISSON_R else math.exp(-mu)
    return {"p_reach": 1.0 - p0, "buckets": _buckets(pmf)}


def bb_concentration(r: float, q: float) -> float:
    """Beta concentration ``s = a + b`` whose share has the gamma's CV^2 (1 / r) at mean q."""
    if r >= _POISSON_R:
        return 1e9
    return max(r * (1 - q) / q - 1 if q > 0 else 1e9, 1e-3)


def beta_binomial(mu: float, s: float, n: int) -> dict[str, Any]:
    """Per-profile reach probability and buckets of a beta-binomial over ``n`` opportunities
    with mean ``mu`` (``mu <= n``) and beta concentration ``s``."""
    if mu <= 0 or n <= 0:
        return {"p_reach": 0.0, "buckets": [0.0] * _MAX_BUCKET}
    q = min(mu / n, 1.0)
    if q >= 1.0:
        pmf = np.zeros(n + 1)
        pmf[n] = 1.0
        return {"p_reach": 1.0, "buckets": _buckets(pmf)}
    a, b = q * s, (1 - q) * s
    k = np.arange(n + 1)
    lb = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    log_pmf = np.array([
        math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1)
        + math.lgamma(j + a) + math.lgamma(n - j + b) - math.lgamma(n + a + b) - lb
        for j in k])
    pmf = np.exp(log_pmf)
    pmf /= pmf.sum()
    return {"p_reach": 1.0 - float(pmf[0]), "buckets": _buckets(pmf)}


# ---- capped thinning of observed opportunities --------------------------------------------

def _binomial_head(o: np.ndarray, q: float | np.ndarray, k: int) -> np.ndarray:
    """P(Binomial(o, q) = j) for j = 0..k-1, shape (k, *o.shape), by the pmf recursion
    (``q`` a scalar or one rate per element of ``o``)."""
    q = np.minimum(np.asarray(q, np.float64), _Q_MAX)
    o = np.asarray(o, np.float64)
    out = np.empty((k, *o.shape))
    if k == 0:
        return out
    out[0] = np.exp(o * np.log1p(-q))
    odds = q / (1 - q)
    for j in range(1, k):
        out[j] = out[j - 1] * np.maximum(o - (j - 1), 0) / j * odds
    return out


def _cap_in_effect(counts: np.ndarray, cap: int) -> int:
    """The cap no larger than the largest day count: a cap at or above every count caps
    nothing, and ``_binomial_head`` allocates cap x counts floats (a cap of 1000 over the
    sampled profile-days was ~1 GB per solver step). 0 stays 0 (no cap); with no slots at
    all the cap is 0 too, which delivers ``0 x q`` either way."""
    if cap <= 0:
        return cap
    return min(cap, int(np.max(counts, initial=0)))


def expected_delivered(o: np.ndarray, q: float | np.ndarray, cap: int) -> np.ndarray:
    """E[min(cap, Binomial(o, q))] per element (cap 0: no cap, ``o * q``):
    sum over k < cap of P(Binomial > k)."""
    o = np.asarray(o, np.float64)
    cap = _cap_in_effect(o, cap)
    if cap <= 0 or np.all(np.asarray(q) <= 0):
        return o * q
    cdf = np.cumsum(_binomial_head(o, q, cap), axis=0)
    return np.sum(1.0 - cdf, axis=0)


def win_rate_max(multipliers: np.ndarray | None) -> float:
    """The base rate at which every slot of a profile with a delivery weight is won."""
    if multipliers is None:
        return 1.0
    held = np.asarray(multipliers, np.float64)
    held = held[held > 0]
    return 1.0 / float(held.min()) if len(held) else 1.0


def rates(q: float, multipliers: np.ndarray | None) -> float | np.ndarray:
    """Per-slot win probability ``min(1, q x w)`` (no weights: ``q``)."""
    return q if multipliers is None else np.minimum(1.0, q * np.asarray(multipliers, np.float64))


def solve_win_rate(day_counts: np.ndarray, weights: np.ndarray, impressions: float,
                   cap: int, multipliers: np.ndarray | None = None) -> float:
    """The base win rate ``q`` whose expected delivery over these profile-days (each
    ``day_counts`` value standing for ``weights`` profile-days, won with probability
    ``min(1, q x multipliers)``: the targeting's delivery weight, 1 when untargeted) equals
    ``impressions``; ``win_rate_max`` when the slots cannot hold them. Delivery rises with
    q, so a bracketing root search."""
    day_counts = np.asarray(day_counts, np.float64)
    supply = float(np.dot(weights, day_counts if multipliers is None
                          else day_counts * (np.asarray(multipliers) > 0)))
    if impressions <= 0 or supply <= 0:
        return 0.0
    if cap <= 0 and multipliers is None:
        return min(1.0, impressions / supply)  # no cap: delivery is q x slots
    top = win_rate_max(multipliers)

    def delivered(q: float) -> float:
        return float(np.dot(weights, expected_delivered(day_counts, rates(q, multipliers), cap)))

    over = delivered(top) - impressions
    if over <= 0:
        return top
    return _illinois(lambda q: delivered(q) - impressions, 0.0, -impressions, top, over,
                     1e-10 * impressions)


def _illinois(f: Any, lo: float, f_lo: float, hi: float, f_hi: float, tol: float) -> float:
    """The root of rising ``f`` in [lo, hi] (f_lo < 0 < f_hi) by regula falsi with the
    Illinois fix: delivery is smooth in q, so ~10 evaluations where bisection took 50 (each
    one a pass over the slots; the backtest asks it once per campaign)."""
    side = 0
    q = lo
    for _ in range(100):
        q = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
        value = f(q)
        if abs(value) <= tol or hi - lo <= 1e-12 * hi:
            break
        if value < 0:
            lo, f_lo = q, value
            if side < 0:
                f_hi /= 2  # the same end twice: halve the other's weight
            side = -1
        else:
            hi, f_hi = q, value
            if side > 0:
                f_lo /= 2
            side = 1
    return q


def _shift(cur: np.ndarray, j: int) -> np.ndarray:
    """Add ``j`` exposures to every row's pmf over 0..9, 10+ (the last bucket absorbs)."""
    m = min(j, _MAX_BUCKET)
    out = np.zeros_like(cur)
    out[:, m:-1] = cur[:, :_MAX_BUCKET - m]
    out[:, -1] = cur[:, _MAX_BUCKET - m:].sum(axis=1)
    return out


def exposure_pmf(vectors: np.ndarray, q: float | np.ndarray, cap: int) -> np.ndarray:
    """Per row of day counts (profiles x days), the pmf of the campaign's impressions over
    0..9 and 10+: each day min(cap, Binomial(o, q)), the days convolved (cap 0: one
    binomial over the row's total); ``q`` a scalar or one rate per row."""
    vectors = np.asarray(vectors, np.int64)
    if not len(vectors):  # an empty universe (no history yet): nobody to reach
        return np.zeros((0, _MAX_BUCKET + 1))
    vectors = vectors.reshape(len(vectors), -1)
    q = np.broadcast_to(np.asarray(q, np.float64), (len(vectors),))
    if cap > 0:
        # at least 1: every count 0 keeps a (trivially) capped pmf rather than turning uncapped
        cap = max(1, _cap_in_effect(vectors, cap))
    if cap <= 0:
        vectors = vectors.sum(axis=1, keepdims=True)
        cap = _MAX_BUCKET
    top = min(cap, _MAX_BUCKET)
    pmf = np.zeros((len(vectors), _MAX_BUCKET + 1))
    pmf[:, 0] = 1.0
    for d in range(vectors.shape[1]):
        head = _binomial_head(vectors[:, d], q, top)  # P(j) for j < top
        last = np.clip(1.0 - head.sum(axis=0), 0.0, 1.0)  # P(>= top): capped at top
        day = np.vstack([head, last[None, :]])
        pmf = sum(_shift(pmf, j) * day[j][:, None] for j in range(top + 1))
    return pmf


def _day_terms(vectors: np.ndarray, weights: np.ndarray, multipliers: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Profile-days as distinct (day count, delivery weight) pairs with the profile-days each
    stands for: delivery is a sum over profile-days, so each pair is computed once."""
    days = vectors.shape[1]
    per_day = np.repeat(weights, days)
    if multipliers is None:
        counts, inverse = np.unique(vectors.reshape(-1), return_inverse=True)
        return counts, np.bincount(inverse.reshape(-1), weights=per_day,
                                   minlength=len(counts)), None
    # one integer key per (count, weight) pair: a flat unique is much cheaper than axis=0
    values, ids = np.unique(np.asarray(multipliers, np.float64), return_inverse=True)
    pairs = vectors.astype(np.int64) * len(values) + ids.reshape(-1, 1)
    keys, inverse = np.unique(pairs.reshape(-1), return_inverse=True)
    return (keys // len(values)).astype(np.float64), np.bincount(
        inverse.reshape(-1), weights=per_day, minlength=len(keys)), values[keys % len(values)]


def plan_reach(vectors: np.ndarray, weights: np.ndarray, impressions: float, cap: int,
               multipliers: np.ndarray | None = None) -> dict[str, Any]:
    """Reach, frequency buckets and delivery of a plan over profiles given as day-count rows
    (days = the plan's days), each standing for ``weights`` profiles and winning a slot with
    probability ``min(1, q x multipliers)`` (its delivery weight; None: ``q``)."""
    vectors = np.asarray(vectors, np.int64)
    weights = np.asarray(weights, np.float64)
    counts, per_count, per_mult = _day_terms(vectors, weights, multipliers)
    q = solve_win_rate(counts, per_count, impressions, cap, per_mult)
    delivered = float(np.dot(per_count, expected_delivered(counts, rates(q, per_mult), cap)))
    pmf = exposure_pmf(vectors, rates(q, multipliers), cap)
    profiles = weights @ pmf
    return {"q": q, "saturated": q >= win_rate_max(multipliers), "delivered": delivered,
            "reach": float(profiles[1:].sum()), "profiles_by_frequency": profiles[1:].tolist()}


def delivery_weights(category: np.ndarray, total: np.ndarray, profiles: np.ndarray,
                     prior: float = CATEGORY_PRIOR) -> np.ndarray:
    """Per profile, how much more often than average an ad server picks a campaign of one
    category for its slots, from the history: the profile's share of the category among its
    impressions over the universe's share ``s``, smoothed with ``prior`` pseudo-impressions at
    ``s`` (``w = (c + prior s) / (t + prior) / s``: a profile with few impressions stays near
    1), normalised to a mean of 1 over the universe. Without any impression of the category
    there is nothing to learn: all 1.

    Why a fixed prior: raw shares (prior 0) spread more than profiles really differ and make
    reach low; a beta posterior mean with its concentration fitted by moments spread less
    (reach +5 % on the simulator), and stretching it to the fitted spread overshot (-18 %):
    ad slots clump in sessions, so the counts' spread overstates the shares'. 10 was the best
    of 5 / 10 / 20 on ``measure_accuracy`` seeds 1-3."""
    category = np.asarray(category, np.float64)
    total = np.asarray(total, np.float64)
    profiles = np.asarray(profiles, np.float64)
    slots = float(profiles @ total)
    share = float(profiles @ category) / slots if slots > 0 else 0.0
    if share <= 0:
        return np.ones(len(total))
    w = (category + prior * share) / (total + prior) / share
    return w / (float(profiles @ w) / float(profiles.sum()))


# ---- the history as counts ----------------------------------------------------------------

@dataclass(frozen=True)
class Counts:
    """Per-profile impression counts over some days of the history, kept as distinct values
    with the (scaled) profiles each stands for: delivery sums over profile-days and reach over
    profiles, so every distinct count is computed once."""

    day_counts: np.ndarray  # distinct impressions of one profile on one day
    day_weights: np.ndarray  # profile-days with that count
    totals: np.ndarray  # distinct impressions of one profile over the days
    total_weights: np.ndarray  # profiles with that total

    @property
    def profiles(self) -> float:
        return float(self.total_weights.sum())

    @property
    def top(self) -> int:
        """The largest per-profile total (the beta-binomial's opportunities in the history)."""
        held = self.totals[self.total_weights > 0]
        return int(held.max()) if len(held) else 0

    def moments(self) -> tuple[float, float, float]:
        """Mean, variance and zero share of the per-profile totals."""
        n = self.profiles
        if n <= 0:
            return 0.0, 0.0, 1.0
        t = self.totals.astype(np.float64)
        mean = float(self.total_weights @ t) / n
        var = max(0.0, float(self.total_weights @ (t * t)) / n - mean * mean)
        return mean, var, float(self.total_weights[self.totals == 0].sum()) / n


def counts_on(vectors: np.ndarray, weights: np.ndarray) -> Counts:
    """``Counts`` of day-count rows (profiles x days), each row standing for ``weights``."""
    vectors = np.asarray(vectors, np.int64)
    weights = np.asarray(weights, np.float64)
    days, inverse = np.unique(vectors.reshape(-1), return_inverse=True)
    day_weights = np.bincount(inverse.reshape(-1), weights=np.repeat(weights, vectors.shape[1]),
                              minlength=len(days))
    totals, inverse = np.unique(vectors.sum(axis=1), return_inverse=True)
    total_weights = np.bincount(inverse.reshape(-1), weights=weights, minlength=len(totals))
    return Counts(days, day_weights, totals, total_weights)


def _counts(h: dict[str, Any], columns: np.ndarray) -> Counts:
    return counts_on(h["vectors"][:, columns], h["counts"] * h["weight"])


# ---- the candidates on counts ---------------------------------------------------------------

def thinning_reach(c: Counts, impressions: float, cap: int) -> tuple[float, float]:
    """Reach and win rate of a plan thinned from these slots. A cap changes how many slots
    must be won, not who is reached (a profile is reached when it wins any slot), so reach
    needs the totals only."""
    q = solve_win_rate(c.day_counts, c.day_weights, impressions, cap)
    return float(c.total_weights @ -np.expm1(c.totals * math.log1p(-min(q, _Q_MAX)))), q


@dataclass(frozen=True)
class GammaPoisson:
    """The NBD fitted on the per-profile totals of some days, and the history's own share of
    its opportunities (``mean / top``) that sets a beta-binomial's concentration."""

    r: float
    mean: float
    variance: float
    share: float


def fit_gamma_poisson(c: Counts, top: int) -> GammaPoisson:
    """Shape by mean and variance over the universe, zeros included (the issue's fit)."""
    mean, var, _ = c.moments()
    return GammaPoisson(fit_shape(mean, var), mean, var, min(mean / top, 1.0) if top else 0.0)


def gamma_poisson(fit: GammaPoisson, mu: float, opportunities: int) -> dict[str, Any]:
    """Per-profile reach and buckets at mean ``mu``: the NBD, or with ``opportunities`` (> 0)
    the beta-binomial over them."""
    if opportunities <= 0:
        return {**nbd(mu, fit.r), "concentration": None}
    s = bb_concentration(fit.r, fit.share)
    return {**beta_binomial(mu, s, opportunities), "concentration": s}


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


def _halves(blocks: int, days: int) -> tuple[np.ndarray, np.ndarray]:
    half = max(1, min(days, blocks // 2))
    return np.arange(blocks - 2 * half, blocks - half), np.arange(blocks - half, blocks)


def _plan_columns(blocks: int, days: int) -> np.ndarray:
    """The history's days a plan replays: the most recent, cycled when the plan is longer."""
    return (np.arange(days) + max(0, blocks - days)) % blocks


def _shared_top(h: dict[str, Any], days: int) -> int:
    """The beta-binomial's opportunities in the history (its share is ``mean / top``): the
    largest per-profile count over the plan's days and either backtest half. One number for
    the answer and both backtests, so the model that is backtested is the one that answers;
    each window's own largest count is one heavy viewer's draw, and a beta fitted over one
    and applied over another moved reach by 57 %."""
    first, second = _halves(h["blocks"], days)
    return max(_counts(h, c).top for c in (_plan_columns(h["blocks"], days), first, second))


def _errors(predicted: list[float], actual: list[float], weights: list[float]
            ) -> dict[str, Any]:
    rel = np.array(predicted) / np.array(actual) - 1
    w = np.array(weights, np.float64)
    return {"error": round(float(w @ np.abs(rel) / w.sum()), 6),
            "median_error": round(statistics.median(np.abs(rel).tolist()), 6),
            "signed_error": round(float(w @ rel / w.sum()), 6), "count": len(rel)}


def targeted_reach(vectors: np.ndarray, profiles: np.ndarray, multipliers: np.ndarray,
                   impressions: float, cap: int) -> tuple[float, float]:
    """``thinning_reach`` with a delivery weight per row (profile i wins a slot with
    probability ``min(1, q w_i)``): reach and base win rate."""
    vectors = np.asarray(vectors, np.int64)
    profiles = np.asarray(profiles, np.float64)
    counts, per_count, per_mult = _day_terms(vectors, profiles, multipliers)
    q = solve_win_rate(counts, per_count, impressions, cap, per_mult)
    rate = np.minimum(rates(q, multipliers), _Q_MAX)
    return float(profiles @ -np.expm1(vectors.sum(axis=1) * np.log1p(-rate))), q


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
    first = _counts(h, first_columns)
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
    second half has no impression. ``top``: ``_shared_top`` when the caller has it."""
    first_columns, second_columns = _halves(h["blocks"], days)
    top = _shared_top(h, days) if top is None else top
    if flights:
        return _flight_backtest(h, first_columns, flights, len(second_columns), top)
    return _stream_backtest(_counts(h, first_columns), _counts(h, second_columns), cap,
                            len(second_columns), top)


# ---- history -------------------------------------------------------------------------------

# Per profile: impressions by 24 h block (v); of the plan's category over the whole history
# (c); of each flight's category over the backtest's first half (fc); and whether it is in each
# flight's holdout (hf, the catalog's own rule); identical rows counted once. An impression's
# category is its campaign's tier-1 IAB id from the catalog.
_VECTORS = """
WITH universe AS (__UNIVERSE__)
SELECT v, c, fc, hf, count() AS profiles
FROM (
    SELECT arrayMap(d -> toUInt32(countEqual(ds, d)), range(toUInt32({blocks:UInt32}))) AS v,
           toUInt32(countEqual(cs, {category:String})) AS c,
           arrayMap(k -> toUInt32(arrayCount((d, x) -> x = k AND d >= {first_from:UInt32}
                                                      AND d < {first_to:UInt32}, ds, cs)),
                    {flight_categories:Array(String)}) AS fc,
           arrayMap((cid, pct) -> __HOLDOUT__,
                    {holdout_ids:Array(String)}, {holdout_percents:Array(Float64)}) AS hf
    FROM (
        SELECT e.profile_id AS profile_id,
               groupArray(toUInt32(intDiv(toUnixTimestamp64Milli(e.ts) - {start_ms:Int64},
                                          86400000))) AS ds,
               groupArray(__CATEGORY__) AS cs
        FROM ad_events AS e __JOIN__
        WHERE e.type = 'impression' AND e.ts >= {start:DateTime64(3)}
          AND e.ts < {end:DateTime64(3)}
          AND e.profile_id IN (SELECT profile_id FROM universe)
        GROUP BY e.profile_id
    )
)
GROUP BY v, c, fc, hf
"""
_CATEGORY_JOIN = ("LEFT JOIN (SELECT campaign_id, splitByChar('-', ad_category)[1] AS category "
                  "FROM campaigns FINAL) AS k ON e.campaign_id = k.campaign_id")
# the catalog's holdout rule with the campaign and its share as lambda arguments, so one pass
# flags every flight's holdout
_HOLDOUT_LAMBDA = HOLDOUT_SQL.replace("{campaign_id:String}", "cid").replace(
    "{holdout_percent:Float64}", "pct")
_NO_CATEGORY = "-"  # matches no IAB id: the plan names no category


def tier1(category: str | None) -> str:
    """The tier-1 IAB id a category's delivery is learnt from (``IAB19-6`` -> ``IAB19``):
    campaigns are served by interest in the tier-1 category, and it has more history."""
    return category.split("-")[0] if category else ""


def _universe_sql(segment_keys: list[str], sampled: bool = False) -> str:
    excluded = excluded_profile_hashes_sql()
    sample = " AND cityHash64(profile_id) % 1000000 < {ppm:UInt64}" if sampled else ""
    if segment_keys:
        return ("SELECT DISTINCT profile_id FROM segment_members WHERE "
                "concat(segment_id, ':', toString(version)) IN {segments:Array(String)} "
                f"AND profile_hash NOT IN ({excluded}){sample}")
    return ("SELECT profile_id FROM profiles FINAL WHERE kind != 'kids' "
            f"AND cityHash64(profile_id) NOT IN ({excluded}){sample}")


def _window(client: Client, days: int) -> tuple[dt.datetime, int]:
    """The history's end (just after the newest impression) and its whole 24 h blocks: twice
    the plan, at most ``HISTORY_DAYS_MAX``, at most what the data spans (at least 2)."""
    end, first = client.query("SELECT max(ts), min(ts) FROM ad_events").result_rows[0]
    if end is None or end.year <= 1970:
        end = first = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    end = end + dt.timedelta(milliseconds=1)
    span = math.floor((end - first).total_seconds() / 86_400)
    return end, max(2, min(HISTORY_DAYS_MAX, 2 * days, span))


def scope(client: Client, segment_keys: list[str], days: int) -> dict[str, Any]:
    """The history's window and universe: its end and 24 h blocks, the eligible profiles and
    the hash sample read (``ppm``) with the weight that scales it back to the universe."""
    end, blocks = _window(client, days)
    universe = int(client.query(f"SELECT count() FROM ({_universe_sql(segment_keys)})",
                                parameters={"segments": segment_keys}).result_rows[0][0])
    sampled = universe > SAMPLE_MAX
    ppm = max(1, round(1_000_000 * SAMPLE_MAX / universe)) if sampled else 1_000_000
    n = universe
    if sampled:
        n = int(client.query(f"SELECT count() FROM ({_universe_sql(segment_keys, True)})",
                             parameters={"segments": segment_keys, "ppm": ppm}
                             ).result_rows[0][0])
    return {"universe": universe, "sampled": n, "weight": universe / n if n else 0.0,
            "blocks": blocks, "through": end, "ppm": ppm}


def history(client: Client, segment_keys: list[str], s: dict[str, Any], days: int,
            category: str = "", flights: list[Flight] | None = None) -> dict[str, Any]:
    """The universe's per-profile impression counts by 24 h block over the recent history
    (distinct rows with their profile counts, zero profiles as one all-zero row) and, in the
    same pass, what targets a campaign: per row its impressions of the plan's ``category``
    (whole history), of each flight's category (the backtest's first half) and whether it is
    in each flight's holdout."""
    flights = flights or []
    blocks, end = s["blocks"], s["through"]
    start = end - dt.timedelta(days=blocks)
    first, _ = _halves(blocks, days)
    flight_categories = sorted({f.category for f in flights if f.category})
    held = [f for f in flights if f.holdout_percent > 0]
    joined = bool(category or flight_categories)
    sql = (_VECTORS.replace("__UNIVERSE__", _universe_sql(segment_keys, s["ppm"] < 1_000_000))
           .replace("__HOLDOUT__", _HOLDOUT_LAMBDA)
           .replace("__JOIN__", _CATEGORY_JOIN if joined else "")
           .replace("__CATEGORY__", "k.category" if joined else "''"))
    epoch = dt.datetime(1970, 1, 1)
    rows = client.query(sql, parameters={
        "segments": segment_keys, "ppm": s["ppm"], "blocks": blocks, "start": start,
        "end": end, "start_ms": int((start - epoch) / dt.timedelta(milliseconds=1)),
        "category": category or _NO_CATEGORY, "first_from": int(first[0]),
        "first_to": int(first[-1]) + 1, "flight_categories": flight_categories,
        "holdout_ids": [f.campaign_id for f in held],
        "holdout_percents": [float(f.holdout_percent) for f in held]}).result_rows
    k, m = len(flight_categories), len(held)
    vectors = np.array([list(r[0]) for r in rows], np.int64).reshape(len(rows), blocks)
    plan_category = np.array([r[1] for r in rows], np.int64)
    flight_counts = np.array([list(r[2]) for r in rows], np.int64).reshape(len(rows), k)
    holdout = np.array([list(r[3]) for r in rows], bool).reshape(len(rows), m)
    counts = np.array([r[4] for r in rows], np.float64)
    zeros = s["sampled"] - counts.sum()
    if zeros > 0:  # no slots: never served, whatever their category or holdout
        vectors = np.vstack([vectors, np.zeros((1, blocks), np.int64)])
        plan_category = np.append(plan_category, 0)
        flight_counts = np.vstack([flight_counts, np.zeros((1, k), np.int64)])
        holdout = np.vstack([holdout, np.zeros((1, m), bool)])
        counts = np.append(counts, zeros)
    return {**s, "vectors": vectors, "counts": counts, "plan_category": plan_category,
            "flight_categories": flight_categories, "flight_category_counts": flight_counts,
            "holdout_ids": [f.campaign_id for f in held], "holdout": holdout}


def _plan_days(vectors: np.ndarray, columns: np.ndarray, multipliers: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """The plan's day columns of every row, sorted within the row (a profile's day order
    does not change its count), and the rows' delivery weights: identical (days, weight)
    rows are computed once. Returns the distinct days, their weights and the inverse."""
    picked = np.sort(vectors[:, columns], axis=1)
    if multipliers is None:
        rows, inverse = np.unique(picked, axis=0, return_inverse=True)
        return rows, None, inverse.reshape(-1)
    keys = np.hstack([picked.astype(np.float64), multipliers[:, None]])
    rows, inverse = np.unique(keys, axis=0, return_inverse=True)
    return rows[:, :-1].astype(np.int64), rows[:, -1], inverse.reshape(-1)


_FLIGHTS = """
WITH universe AS (__UNIVERSE__)
SELECT campaign_id, count() AS impressions, uniqExact(profile_id) AS reach
FROM ad_events
WHERE type = 'impression' AND ts >= {start:DateTime64(3)} AND ts < {end:DateTime64(3)}
  AND profile_id IN (SELECT profile_id FROM universe)
GROUP BY campaign_id
HAVING reach >= {min_reach:UInt64}
ORDER BY impressions DESC, campaign_id
LIMIT {limit:UInt32}
"""


def flights(client: Client, segment_keys: list[str], h: dict[str, Any], days: int
            ) -> list[Flight]:
    """The campaigns of the backtest's second half: their impressions and distinct profiles
    among the universe (the history's sample when it is sampled) and their catalog caps,
    categories and holdouts. A campaign missing from the catalog is left out: its cap is
    unknown."""
    _, second = _halves(h["blocks"], days)
    end = h["through"]
    params = {"segments": segment_keys, "ppm": h["ppm"], "end": end,
              "start": end - dt.timedelta(days=len(second)), "min_reach": FLIGHT_MIN_REACH,
              "limit": FLIGHTS_MAX}
    sql = _FLIGHTS.replace("__UNIVERSE__", _universe_sql(segment_keys, h["ppm"] < 1_000_000))
    served = client.query(sql, parameters=params).result_rows
    if not served:
        return []
    catalog = {c: rest for c, *rest in client.query(
        "SELECT campaign_id, frequency_cap, ad_category, holdout_percent FROM campaigns FINAL "
        "WHERE campaign_id IN {ids:Array(String)}",
        parameters={"ids": [c for c, _, _ in served]}).result_rows}
    return [Flight(int(i), int(r), int(catalog[c][0]), c, tier1(catalog[c][1]),
                   float(catalog[c][2])) for c, i, r in served if c in catalog]


def _distribution(profiles_by_frequency: list[float]) -> list[dict[str, Any]]:
    return [{"frequency": "10+" if i == _MAX_BUCKET - 1 else str(i + 1), "profiles": round(p, 1)}
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
            "parameters": {"gamma_shape": None if fit.r >= _POISSON_R else round(fit.r, 6),
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
    rows, row_w, inverse = _plan_days(h["vectors"], columns, w)
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
    columns = _plan_columns(blocks, days)
    plan = _counts(h, columns)
    top = _shared_top(h, days)
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


# ---- what an advertiser may see (docs/privacy.md) ------------------------------------------------

def coarse(value: float, k: int) -> int:
    """``value`` rounded to a step of ``k`` or its second significant figure, the coarser.

    Why both: the forecast of a saturated plan is the universe's own data (exact reach,
    slots), and an advertiser can ask it of any list it uploads, so two lists one profile
    apart could tell that profile's activity by difference. A step of at least ``k`` makes
    one answer never resolve fewer than ``k`` profiles (the §5 row rule); two significant
    figures keep large answers from claiming precision no forecast has. Half up."""
    if value <= 0:
        return 0
    step = max(k, 10 ** max(0, math.floor(math.log10(value)) - 1))
    return int(step * math.floor(value / step + 0.5))


def _released_count(value: float, k: int) -> int | None:
    """A profile count as released: None below ``k`` (as the frequency endpoint's reach),
    else ``coarse``."""
    return None if value < k else coarse(value, k)


def _released_distribution(distribution: list[dict[str, Any]], k: int
                           ) -> tuple[list[dict[str, Any]], dict[str, Any] | None, int]:
    """Frequency buckets with the frequency endpoint's semantics: buckets under ``k`` folded
    (complementary suppression until the remainder reaches ``k``), the remainder released
    only at ``k`` or more, empty buckets shown as 0; counts ``coarse``. Buckets are disjoint,
    so the remainder covers the sum of its buckets. Answers the rows, the remainder and the
    number of buckets folded."""
    cells = [{"key": d["frequency"], "profiles": d["profiles"]}
             for d in distribution if d["profiles"] > 0]
    profiles = {c["key"]: c["profiles"] for c in cells}
    folded, rest = fold_until_k(fold_small_rows(cells, k, "key"), k, "key",
                                lambda keys: sum(profiles[x] for x in keys))
    released = {r["key"]: coarse(r["profiles"], k) for r in folded.released}
    rows = [{"frequency": d["frequency"], "profiles": released.get(d["frequency"], 0)}
            for d in distribution if d["frequency"] in released or d["profiles"] <= 0]
    suppressed = None
    if folded.folded_keys and rest >= k:
        order = [d["frequency"] for d in distribution]
        suppressed = {"frequencies": sorted(folded.folded_keys, key=order.index),
                      "profiles": coarse(rest, k)}
    return rows, suppressed, len(folded.folded_keys)


def _released_backtest(test: dict[str, Any] | None) -> dict[str, Any] | None:
    """The backtest an advertiser sees. The flight backtest runs on every advertiser's
    campaigns among the asker's universe, which may be a list it chose: released only when it
    rests on ``BACKTEST_MIN_CAMPAIGNS`` or more, and then each candidate's error to 0.1 %
    only (a count, a median or a signed error narrows it to single competitor campaigns);
    else ``withheld``. The ad-stream backtest keeps its errors, not the stream's impressions,
    reach or the predicted reach they were measured against."""
    if test is None:
        return None
    if test["method"] == "flights" and test["campaigns"] < BACKTEST_MIN_CAMPAIGNS:
        return {"method": "withheld", "days": test["days"], "candidates": None}
    return {"method": test["method"], "days": test["days"],
            "candidates": {c: {"error": round(v["error"], 3)}
                           for c, v in test["candidates"].items()}}


def release(answer: dict[str, Any], k: int) -> dict[str, Any]:
    """A forecast as an advertiser key may see it (admin keys get ``forecast`` as is).

    Every profile count (universe, reach, each bucket, each candidate's reach) and every
    impression count derived from the universe's slots (deliverable impressions) is
    ``coarse``, a reach under ``k`` is None; buckets are folded as the frequency endpoint
    folds them; ratios are taken of the released numbers; the models' fitted parameters
    (win rate, history moments, shapes) are dropped: each inverts to the universe's exact
    slots (impressions / win rate) or moments; the backtest per ``_released_backtest``."""
    universe = coarse(answer["universe"], k)
    reach = _released_count(answer["reach"], k)
    deliverable = coarse(answer["deliverable_impressions"], k) if reach is not None else None
    rows, suppressed, folded = ([], None, 0) if reach is None else \
        _released_distribution(answer["distribution"], k)
    test = _released_backtest(answer["backtest"])
    error = None  # the chosen candidate's error, as released (to 0.1 %)
    if test is not None and test["candidates"] is not None:
        error = round(answer["backtest_error"], 3)
    parameters = answer["parameters"]
    candidates = {}
    for name, c in parameters["candidates"].items():
        c_reach = _released_count(c["reach"], k)
        candidates[name] = {
            "model": c["model"], "reach": c_reach,
            "deliverable_impressions": None if c_reach is None
            else coarse(c["deliverable_impressions"], k),
            **({"opportunities": c["opportunities"]} if "opportunities" in c else {})}
    sampled = parameters["sampled_profiles"]
    return {
        **answer,
        "k": k,
        "universe": universe,
        "deliverable_impressions": deliverable,
        "reach": reach,
        "reach_share": round(reach / universe, 4) if reach is not None and universe else None,
        "avg_frequency": (round(deliverable / reach, 2) if reach and deliverable is not None
                          else None),
        "distribution": rows,
        "suppressed": suppressed,
        "suppressed_rows": folded,
        "backtest_error": error,
        "backtest": test,
        "parameters": {**parameters, "candidates": candidates,
                       "sampled_profiles": None if sampled is None else coarse(sampled, k)},
    }
