"""The forecast's closed forms: NBD and beta-binomial probabilities, and both shape fits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adtier.measure.forecast import (
    FIT_METHODS,
    _bb_p0,
    backtest,
    beta_binomial,
    fit_concentration_zeros,
    fit_shape,
    fit_shape_zeros,
    nbd,
)


@pytest.mark.parametrize("mu,r", [(0.5, 0.3), (2.0, 1.0), (5.0, 20.0)])
def test_nbd_matches_a_gamma_poisson_simulation(mu, r):
    rng = np.random.default_rng(1)
    counts = rng.poisson(rng.gamma(r, mu / r, 400_000))
    got = nbd(mu, r)
    assert got["p_reach"] == pytest.approx((counts > 0).mean(), abs=0.003)
    for x in range(1, 10):
        assert got["buckets"][x - 1] == pytest.approx((counts == x).mean(), abs=0.003)
    assert got["buckets"][9] == pytest.approx((counts >= 10).mean(), abs=0.003)
    assert sum(got["buckets"]) == pytest.approx(got["p_reach"], rel=1e-9)


def test_nbd_tends_to_poisson():
    assert nbd(1.0, 1e6)["p_reach"] == pytest.approx(1 - math.exp(-1), rel=1e-4)


@pytest.mark.parametrize("q,s,n", [(0.2, 0.5, 3), (0.5, 4.0, 9), (0.05, 1.0, 20)])
def test_beta_binomial_matches_a_simulation(q, s, n):
    rng = np.random.default_rng(2)
    counts = rng.binomial(n, rng.beta(q * s, (1 - q) * s, 400_000))
    got = beta_binomial(q * n, s, n)
    assert got["p_reach"] == pytest.approx((counts > 0).mean(), abs=0.003)
    assert got["buckets"][0] == pytest.approx((counts == 1).mean(), abs=0.003)
    assert sum(got["buckets"]) == pytest.approx(got["p_reach"], rel=1e-9)
    assert beta_binomial(n * 1.0, s, n)["p_reach"] == 1.0


def test_shape_fits_recover_the_parameters():
    rng = np.random.default_rng(3)
    counts = rng.poisson(rng.gamma(0.4, 3.0 / 0.4, 1_000_000))
    assert fit_shape(counts.mean(), counts.var()) == pytest.approx(0.4, rel=0.03)
    assert fit_shape_zeros(counts.mean(), (counts == 0).mean()) == pytest.approx(0.4, rel=0.03)
    assert fit_shape(2.0, 1.5) == fit_shape_zeros(2.0, math.exp(-2.5)) == 1e6  # Poisson
    s = fit_concentration_zeros(0.3, 5, _bb_p0(0.3, 2.0, 5))
    assert s == pytest.approx(2.0, rel=1e-6)


def _half(counts: np.ndarray) -> dict[str, float]:
    return {"s": float(counts.sum()), "ss": float((counts * counts).sum()),
            "reach": float((counts > 0).sum()), "max": float(counts.max())}


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_beta_binomial_backtest_does_not_follow_one_heavy_viewer(seed):
    # both halves drawn from one beta-binomial; the second's heaviest viewer then watches 3x
    # more: one profile, so the second half's reach barely moves and neither may the backtest
    # (fitted over one half's maximum, predicted over the other's, it was off by ~56 %). The
    # mean-and-zeros fit, which the forecast picks on simulated worlds, is held to 5 %; the
    # moments fit matches a CV^2 that depends on the opportunities and stays ~28 % off here.
    rng = np.random.default_rng(seed)
    a, b = (rng.binomial(60, rng.beta(0.05, 1.0, 20_000)) for _ in range(2))
    b[np.argmax(b)] *= 3
    ha, hb = _half(a), _half(b)
    h = {"n": 20_000.0, "sa": ha["s"], "saa": ha["ss"], "reach_a": ha["reach"],
         "max_a": ha["max"], "sb": hb["s"], "sbb": hb["ss"], "reach_b": hb["reach"],
         "max_b": hb["max"]}
    assert backtest(h, "beta-binomial", "mean-zeros")["error"] < 0.05
    assert min(backtest(h, "beta-binomial", m)["error"] for m in FIT_METHODS) < 0.05
