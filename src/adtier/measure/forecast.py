"""Reach forecasts: how many distinct profiles a flight of N impressions reaches, and how often.

**Model.** A profile's exposure count over a flight is Poisson given its own rate, and rates vary
across profiles as a gamma distribution: the count is negative binomial (NBD, gamma-Poisson).
The gamma shape ``r`` (heterogeneity) is fitted by moments on the eligible universe's observed
per-profile ad exposures (all campaigns) over the most recent ``days`` of history, zeros
included: mean ``m``, variance ``v``, ``r = m^2 / (v - m)`` (``v <= m`` means no over-dispersion: Poisson, ``r -> inf``). A campaign's
impressions are a random thinning of the ad slots, and a thinned NBD is an NBD with the same
shape, so the plan sets the mean ``mu = impressions / universe`` and:

    reach = N * (1 - (1 + mu / r) ** -r),   P(X = x) = NB(x; r, p = r / (r + mu))

**Bounded opportunities (beta-binomial).** With a frequency cap (impressions per profile per
day), a profile has at most ``n = cap * days`` exposures: the count is binomial over ``n``
opportunities with a per-profile share ``p ~ Beta(a, b)``, ``a + b = s``, mean ``q = mu / n``.
The concentration ``s`` is fitted on the history with its largest per-profile count (in either
half, see ``_opportunities``) as the opportunities: by moments (the share's squared coefficient
of variation matched to the gamma's ``1 / r``: ``s = r (1 - q) / q - 1``) or by mean and zeros
(bisection on ``P(0)``). Plans beyond ``N * n`` impressions cannot be delivered: the answer says
how many can (``deliverable_impressions``).

**Two fits of r**: by mean and variance (above), and by mean and the share of profiles with no
exposure ("mean and zeros", the classic NBD fit, robust when a few very heavy viewers inflate
the variance). Both are backtested and the one with the smaller error is used (``fit``).

**Backtest.** The history window is split in two halves: ``r`` is fitted on the first half and
the second half's reach is predicted from its actual impression count (for the beta-binomial,
over the same opportunities as the fit); ``backtest_error`` is
``|predicted - actual| / actual``.

Closed forms only (NumPy and ``math.lgamma``): SciPy is not a dependency.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
from clickhouse_connect.driver.client import Client

from adtier.catalog.store import excluded_profile_hashes_sql

__all__ = ["fit_shape", "fit_shape_zeros", "fit_concentration_zeros", "bb_concentration", "nbd",
           "beta_binomial", "forecast", "HISTORY_DAYS_MAX", "FIT_METHODS"]

HISTORY_DAYS_MAX = 28
_POISSON_R = 1e6
FIT_METHODS = ("mean-variance", "mean-zeros")
_MAX_BUCKET = 10


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
        p0 = math.exp(-r * math.log1p(mean / r))
        if p0 > zero_share:
            lo = math.log(r)  # too heterogeneous: more shape
        else:
            hi = math.log(r)
    return math.exp((lo + hi) / 2)


def _fit(method: str, n: float, s: float, ss: float, reached: float) -> float:
    mean, var = _moments(n, s, ss)
    if method == "mean-zeros":
        return fit_shape_zeros(mean, 1 - reached / n if n else 1.0)
    return fit_shape(mean, var)


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


def _bb_p0(q: float, s: float, n: int) -> float:
    a, b = q * s, (1 - q) * s
    return math.exp(math.lgamma(b + n) + math.lgamma(a + b) - math.lgamma(b)
                    - math.lgamma(a + b + n))


def fit_concentration_zeros(q: float, n: int, zero_share: float) -> float:
    """Beta concentration from the mean share and the share never exposed (bisection on log s:
    P(0) falls from 1 - q (s -> 0) to (1 - q) ** n (s -> inf))."""
    if q <= 0 or q >= 1 or n <= 0:
        return 1e9
    lo, hi = math.log(1e-4), math.log(1e9)
    for _ in range(100):
        s = math.exp((lo + hi) / 2)
        if _bb_p0(q, s, n) > zero_share:
            lo = math.log(s)
        else:
            hi = math.log(s)
    return math.exp((lo + hi) / 2)


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


_HISTORY = """
WITH universe AS (__UNIVERSE__)
SELECT count() AS n,
       sum(a) AS sa, sum(a * a) AS saa, countIf(a > 0) AS reach_a, max(a) AS max_a,
       sum(b) AS sb, sum(b * b) AS sbb, countIf(b > 0) AS reach_b, max(b) AS max_b,
       sum(a + b) AS s, sum((a + b) * (a + b)) AS ss
FROM (
    SELECT u.profile_id AS profile_id, e.a AS a, e.b AS b
    FROM universe AS u
    LEFT JOIN (
        SELECT profile_id,
               toUInt64(countIf(ts < {mid:DateTime64(3)})) AS a,
               toUInt64(countIf(ts >= {mid:DateTime64(3)})) AS b
        FROM ad_events
        WHERE type = 'impression' AND ts >= {start:DateTime64(3)} AND ts < {end:DateTime64(3)}
          AND profile_id IN (SELECT profile_id FROM universe)
        GROUP BY profile_id
    ) AS e USING (profile_id)
)
"""


def _universe_sql(segment_keys: list[str]) -> str:
    excluded = excluded_profile_hashes_sql()
    if segment_keys:
        return ("SELECT DISTINCT profile_id FROM segment_members WHERE "
                "concat(segment_id, ':', toString(version)) IN {segments:Array(String)} "
                f"AND profile_hash NOT IN ({excluded})")
    return ("SELECT profile_id FROM profiles FINAL WHERE kind != 'kids' "
            f"AND cityHash64(profile_id) NOT IN ({excluded})")


def history(client: Client, segment_keys: list[str], days: int) -> dict[str, Any]:
    """Per-profile exposure moments of the universe over the recent history, by halves."""
    end = client.query("SELECT max(ts) FROM ad_events").result_rows[0][0]
    first = client.query("SELECT min(ts) FROM ad_events").result_rows[0][0]
    if end is None or end.year <= 1970:
        end = first = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    end = end + dt.timedelta(milliseconds=1)
    span_days = max(2, min(HISTORY_DAYS_MAX, 2 * days, math.ceil((end - first).total_seconds()
                                                                  / 86_400)))
    start = end - dt.timedelta(days=span_days)
    mid = start + (end - start) / 2
    sql = _HISTORY.replace("__UNIVERSE__", _universe_sql(segment_keys))
    result = client.query(sql, parameters={"segments": segment_keys, "start": start,
                                           "mid": mid, "end": end})
    row = dict(zip(result.column_names, result.result_rows[0]))
    row = {k: (float(v) if v is not None else 0.0) for k, v in row.items()}
    row["span_days"] = span_days
    row["through"] = end
    return row


def _moments(n: float, s: float, ss: float) -> tuple[float, float]:
    if n <= 0:
        return 0.0, 0.0
    mean = s / n
    return mean, max(0.0, ss / n - mean * mean)


def _opportunities(h: dict[str, Any]) -> int:
    """The opportunities of a history half: the largest per-profile count in either half. The
    halves are equally long, so they share one supply of ad slots, while each half's own
    maximum is one heavy viewer's draw (102 in one half, 197 in the other, in one simulated
    week): a beta fitted over one maximum and applied over the other moved the backtest's
    reach by up to 57 % (``loadtest/measure_accuracy.py``)."""
    return max(1, int(max(h["max_a"], h["max_b"])))


def _concentration(method: str, h: dict[str, Any], part: str, r: float) -> float:
    """The beta concentration of history half ``part`` (over ``_opportunities``)."""
    n, total, top = h["n"], h["s" + part], _opportunities(h)
    q = min(total / n / top, 1.0) if n else 0.0
    if method == "mean-zeros":
        return fit_concentration_zeros(q, top, 1 - h["reach_" + part] / n if n else 1.0)
    return bb_concentration(r, q)


def backtest(h: dict[str, Any], model: str, method: str) -> dict[str, Any] | None:
    n = h["n"]
    if n <= 0 or h["reach_b"] <= 0:
        return None
    r = _fit(method, n, h["sa"], h["saa"], h["reach_a"])
    mu = h["sb"] / n
    if model == "beta-binomial":
        s = _concentration(method, h, "a", r)
        p = beta_binomial(mu, s, _opportunities(h))["p_reach"]
    else:
        p = nbd(mu, r)["p_reach"]
    predicted = p * n
    return {"predicted_reach": round(predicted, 1), "actual_reach": int(h["reach_b"]),
            "error": round(abs(predicted - h["reach_b"]) / h["reach_b"], 6)}


def forecast(client: Client, segment_keys: list[str], impressions: int, frequency_cap: int,
             days: int) -> dict[str, Any]:
    h = history(client, segment_keys, days)
    n = int(h["n"])
    bounded = frequency_cap > 0
    model = "beta-binomial" if bounded else "negative-binomial"
    # two fits of the gamma shape, each backtested; the one that predicted better is used
    tests = {m: backtest(h, model, m) for m in FIT_METHODS}
    method = min(FIT_METHODS, key=lambda m: tests[m]["error"] if tests[m] else math.inf)
    test = tests[method]
    # the recent half of the history is as long as the flight: fit the shape there
    mean, var = _moments(h["n"], h["sb"], h["sbb"])
    r = _fit(method, h["n"], h["sb"], h["sbb"], h["reach_b"])
    deliverable = impressions
    if n and bounded:
        deliverable = min(impressions, n * frequency_cap * days)
    mu = deliverable / n if n else 0.0
    if bounded:
        fit = beta_binomial(mu, _concentration(method, h, "b", r), frequency_cap * days)
    else:
        fit = nbd(mu, r)
    reach = fit["p_reach"] * n
    dist = [{"frequency": "10+" if i == 9 else str(i + 1), "profiles": round(p * n, 1)}
            for i, p in enumerate(fit["buckets"])]
    return {
        "universe": n,
        "impressions": impressions,
        "deliverable_impressions": deliverable,
        "frequency_cap": frequency_cap,
        "days": days,
        "reach": round(reach, 1),
        "reach_share": round(fit["p_reach"], 6),
        "avg_frequency": round(deliverable / reach, 6) if reach else 0.0,
        "distribution": dist,
        "model": model,
        "parameters": {"gamma_shape": None if r >= _POISSON_R else round(r, 6),
                       "history_mean": round(mean, 6), "history_variance": round(var, 6),
                       "history_days": h["span_days"], "fit": method,
                       "backtest_by_fit": {m: t["error"] if t else None
                                           for m, t in tests.items()},
                       "opportunities": frequency_cap * days if bounded else None},
        "backtest_error": test["error"] if test else None,
        "backtest": test,
    }
