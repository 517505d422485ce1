"""The report rows' noisy threshold is sound: a row of one profile is never released (at most
with probability 1e-6), rows well above it always are. Fixed seeds: deterministic.

A report row's key (a country, a creative, a day) is drawn only when someone is in it, so the
row's release alone says the key had reach: with the bare k on noisy counts, a row of one
profile passed with probability P(noise >= k - 1)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from adtier.measure import noisy
from adtier.measure.cells import COUNT_METRICS, CellRows
from adtier.privacy.noise import NoiseStream, pmf, seed_key
from adtier.privacy.release import THRESHOLD_DELTA, over_k, release_threshold

SEEDS = 4_000
DAY = dt.date(2026, 11, 2)


def _tail(scale: float, t: int) -> float:
    """P(noise >= t) summed from the pmf (independent of the closed form under test)."""
    x = np.arange(t, t + int(60 * scale) + 100)
    return float(pmf(x, scale).sum())


@pytest.mark.parametrize("scale", [5.0, 10.666667, 16.0, 42.7])
def test_the_threshold_is_the_smallest_that_holds_delta(scale):
    tau = release_threshold(50, scale)
    # a row of one profile passes when 1 + noise >= tau
    assert _tail(scale, tau - 1) <= THRESHOLD_DELTA
    if tau > 50:  # and one less would not hold (the margin is not wider than it must be)
        assert _tail(scale, tau - 2) > THRESHOLD_DELTA
    assert release_threshold(50, 0) == 50  # exact (no noise): k itself


def _cells(counts: dict[str, int]) -> CellRows:
    def values(n: int) -> dict[str, int]:
        return {"profiles": n, "reach": n, **{m: n for m in COUNT_METRICS}}

    cells = [{"key": key, **values(n)} for key, n in counts.items()]
    total = values(sum(counts.values()))
    return CellRows(cells, total, None,
                    lambda keys: values(sum(counts[key] for key in keys)),
                    lambda: dict(counts))


def test_one_profile_rows_never_appear_and_rows_well_above_k_do():
    """A country report with one one-profile row beside two large ones, over 4,000 fixed
    noise secrets (the row scale at the default ε, 10.7)."""
    got = _cells({"US": 1, "CA": 400, "GB": 1})
    released = {"US": 0, "CA": 0, "GB": 0}
    bare_k = 0  # what the bare k would have let through, for the record
    for s in range(SEEDS):
        stream = NoiseStream(seed_key(b"threshold", "adv", {"s": s}, "v"))
        body = noisy.report(got, "cmp", "country", DAY, DAY, 50, stream, 0.5, 5)
        for row in body["rows"]:
            released[row["country"]] += 1
        scale = body["noise"]["scales"]["rows_reach"]
        bare_k += over_k(1 + stream.draw("row/US/reach", scale), 50)
    assert released["US"] == released["GB"] == 0
    assert released["CA"] == SEEDS
    assert body["noise"]["row_threshold"] == release_threshold(50, scale) > 50
    # the bare k lets a one-profile row through about 1 time in 200 at this scale
    assert bare_k > 0, bare_k
