"""Accuracy of the differentially private counts at the default ε: the error by reach size.

For each reach size N, the campaign report's release (``measure.noisy.report``, the endpoint's
own code) is run over ``--seeds`` noise secrets on cells of that size, and the 95th percentile
of |released - exact| / exact is printed for a totals reach of N and a row reach of N (a
``by=day`` report over 7 and 31 days; a row's reach counts each profile in one row, so its
scale is the same for any range or breakdown), and the frequency's reach of N, beside OpenDP's
95 % bound for each scale (``opendp.accuracy``). The target: totals reach of 100,000 within
±1 % in 95 % of answers.

Run::

    uv run python -m loadtest.privacy_accuracy
    uv run python -m loadtest.privacy_accuracy --seeds 2000 --epsilon 0.5
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt

import numpy as np

from adtier.measure import noisy
from adtier.measure.cells import COUNT_METRICS, CellRows
from adtier.privacy.noise import NoiseStream, accuracy, seed_key
from adtier.privacy.release import Policy
from adtier.settings import load_settings

SIZES = (1_000, 10_000, 100_000, 1_000_000)
TARGET = 0.01


def _cells(reach: int, days: int) -> CellRows:
    """Every day's row and the totals reach ``reach`` (each row its own ``reach`` profiles, as
    if every profile came every day): the error of a count of that size in either place."""
    per_day = reach
    cell = {"profiles": per_day, "reach": per_day, **{m: 3 * per_day for m in COUNT_METRICS}}
    total = {"profiles": reach, "reach": reach, **{m: 3 * reach for m in COUNT_METRICS}}
    start = dt.date(2026, 11, 1)
    cells = [{"key": (start + dt.timedelta(days=d)).isoformat(), **cell} for d in range(days)]
    # every row's bounded reach is N too: the error of a row of N, whatever the rows
    return CellRows(cells, total, None, lambda keys: cell,
                    lambda: {c["key"]: per_day for c in cells})


def report_errors(reach: int, days: int, seeds: int, policy: Policy) -> tuple[float, float]:
    """95th percentile relative error of the totals' reach and of one row's reach."""
    lo = dt.date(2026, 11, 1)
    hi = lo + dt.timedelta(days=days - 1)
    got = _cells(reach, days)
    totals, rows = [], []
    for s in range(seeds):
        stream = NoiseStream(seed_key(f"bench-{s}".encode(), "adv", {"r": reach}, str(days)))
        body = noisy.report(got, "cmp", "day", lo, hi, policy.k, stream,
                            policy.epsilon_query, policy.event_bound)
        totals.append(abs(body["totals"]["reach"] - reach) / reach)
        row = body["rows"][0]["reach"] if body["rows"] else 0
        rows.append(abs(row - reach) / reach)
    return float(np.quantile(totals, 0.95)), float(np.quantile(rows, 0.95))


def frequency_error(reach: int, seeds: int, policy: Policy) -> float:
    exact = (None, {1: [reach // 2, reach // 2], 2: [reach - reach // 2, 2 * (reach - reach // 2)]},
             {dt.date(2026, 11, 1): reach})
    errors = []
    for s in range(seeds):
        stream = NoiseStream(seed_key(f"bench-{s}".encode(), "adv", {"f": reach}, "v"))
        body = noisy.frequency(exact, "cmp", policy.k, stream, policy.epsilon_query,
                               policy.impressions_bound)
        errors.append(abs(body["reach"] - reach) / reach)
    return float(np.quantile(errors, 0.95))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1000)
    configured = Policy.of(load_settings())  # the server's ADTIER_PRIVACY_* (defaults included)
    parser.add_argument("--epsilon", type=float, default=configured.epsilon_query)
    args = parser.parse_args()
    policy = dataclasses.replace(configured, epsilon_query=args.epsilon)
    lo = dt.date(2026, 11, 1)
    scales = {d: noisy.report_scales("day", lo, lo + dt.timedelta(days=d - 1), args.epsilon,
                                     policy.event_bound) for d in (7, 31)}
    f_scale = noisy.frequency_scales(args.epsilon, policy.impressions_bound)["buckets"]
    print(f"ε per query {args.epsilon}, k {policy.k}, {args.seeds} seeds; 95th percentile of "
          "|released - exact| / exact")
    print(f"  scales: totals reach {scales[7]['totals_reach']:.1f} (95 % ±"
          f"{accuracy(scales[7]['totals_reach']):.0f}), row reach 7 days "
          f"{scales[7]['rows_reach']:.1f} (±{accuracy(scales[7]['rows_reach']):.0f}), 31 days "
          f"{scales[31]['rows_reach']:.1f} (±{accuracy(scales[31]['rows_reach']):.0f}), "
          f"frequency bucket {f_scale:.1f}")
    print(f"  {'reach':>10s}  {'totals 7d':>10s}  {'totals 31d':>10s}  {'row 7d':>10s}  "
          f"{'row 31d':>10s}  {'frequency':>10s}")
    for reach in SIZES:
        t7, r7 = report_errors(reach, 7, args.seeds, policy)
        t31, r31 = report_errors(reach, 31, args.seeds, policy)
        fr = frequency_error(reach, args.seeds, policy)
        print(f"  {reach:>10,d}  {t7:>10.3%}  {t31:>10.3%}  {r7:>10.3%}  {r31:>10.3%}  "
              f"{fr:>10.3%}")
    t, _ = report_errors(100_000, 31, args.seeds, policy)
    print(f"target: totals reach of 100,000 within ±{TARGET:.0%} in 95 % of answers: "
          f"{'met' if t <= TARGET else 'NOT met'} ({t:.3%})")


if __name__ == "__main__":
    main()
