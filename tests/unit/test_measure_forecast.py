"""The forecast's closed forms: NBD and beta-binomial probabilities, and both shape fits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adtier.measure.forecast import (
    _bb_p0,
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
