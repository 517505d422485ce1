"""Seeded discrete Laplace noise, calibrated with OpenDP.

**What OpenDP does here.** OpenDP's ``make_laplace`` on an integer domain is the discrete
Laplace (geometric) mechanism; its privacy map is the calibration and the accounting: for a
count of L1 sensitivity ``d`` answered with scale ``s`` it says the ε spent, and ``scale_for``
refuses a scale whose map exceeds the ε asked. ``opendp.accuracy`` turns a scale into the
half-width that holds with a given confidence (the accuracy table, the widened CIs).

**What we do.** OpenDP samples from the operating system's randomness and takes no seed, but an
answer must be a function of (server secret, advertiser, canonical query, data version): the
same question over the same data gets the same answer, so asking again (or 1,000 times) averages
nothing away. So the sample is drawn here, from the same distribution OpenDP's mechanism
samples: a discrete Laplace variable with scale ``s`` (P(x) ∝ exp(-|x|/s) on the integers) is the
difference of two i.i.d. geometric variables with success probability ``1 - exp(-1/s)``; numpy's
``Generator.geometric`` draws them. The generator is seeded per released count with
HMAC-SHA256(query key, count label), where the query key is HMAC-SHA256(server secret, canonical
JSON of [advertiser, query, data version]): without the secret nobody can predict or reproduce
the noise, and each count of an answer has its own stream (a row's noise does not depend on
which other rows exist). Caveat we accept and state: numpy's geometric sampler works in floating
point, so the distribution is the discrete Laplace up to float rounding, not OpenDP's exact
integer sampler (Mironov 2012 describes attacks on *continuous* Laplace floats; a geometric
difference has no low-order-bit pattern of the kind, but the guarantee is not proven to the bit).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
from typing import Any

import msgspec
import numpy as np

__all__ = ["scale_for", "accuracy", "epsilon_of", "seed_key", "NoiseStream",
           "discrete_laplace", "pmf", "variance"]

_CANONICAL = msgspec.json.Encoder(order="sorted")


@functools.cache
def _measurement(scale: float):
    import opendp.prelude as dp  # heavy: loaded on first use

    dp.enable_features("contrib")
    return dp.m.make_laplace(dp.atom_domain(T=int), dp.absolute_distance(T=int), scale=scale)


def epsilon_of(sensitivity: int, scale: float) -> float:
    """The ε OpenDP's privacy map gives the discrete Laplace at ``scale`` for a count whose
    L1 sensitivity is ``sensitivity``."""
    if scale <= 0:
        return math.inf
    return float(_measurement(float(scale)).map(int(sensitivity)))


@functools.cache
def scale_for(sensitivity: int, epsilon: float) -> float:
    """The discrete Laplace scale that spends ``epsilon`` on a count of L1 sensitivity
    ``sensitivity`` (checked against OpenDP's map, so calibration is the library's)."""
    if sensitivity < 1 or epsilon <= 0:
        raise ValueError("sensitivity >= 1 and epsilon > 0")
    scale = sensitivity / epsilon
    spent = epsilon_of(sensitivity, scale)
    if spent > epsilon * (1 + 1e-9):
        raise AssertionError(f"OpenDP charges {spent} > {epsilon} at scale {scale}")
    return scale


def accuracy(scale: float, alpha: float = 0.05) -> float:
    """Half-width ``a`` with P(|noise| >= a) <= alpha (OpenDP's discrete Laplace bound)."""
    if scale <= 0:
        return 0.0
    import opendp.accuracy as acc

    return float(acc.discrete_laplacian_scale_to_accuracy(float(scale), float(alpha)))


def seed_key(secret: bytes, advertiser_id: str, query: Any, data_version: str) -> bytes:
    """The key all of one answer's noise derives from."""
    material = _CANONICAL.encode([advertiser_id, query, data_version])
    return hmac.new(secret, material, hashlib.sha256).digest()


def discrete_laplace(rng: np.random.Generator, scale: float) -> int:
    """One draw of the discrete Laplace with ``scale`` (0 when the scale is 0: exact)."""
    if scale <= 0:
        return 0
    p = -math.expm1(-1.0 / scale)
    return int(rng.geometric(p)) - int(rng.geometric(p))


def variance(scale: float) -> float:
    """Variance of the discrete Laplace with ``scale`` (widens confidence intervals)."""
    if scale <= 0:
        return 0.0
    q = math.exp(-1.0 / scale)
    return 2 * q / (1 - q) ** 2


def pmf(x: np.ndarray, scale: float) -> np.ndarray:
    """P(noise = x) of the discrete Laplace with ``scale`` (for tests and docs)."""
    t = 1.0 / scale
    return np.tanh(t / 2) * np.exp(-t * np.abs(x))


class NoiseStream:
    """The noise of one answer: ``draw(label, scale)`` is a pure function of the query key and
    the label (ask twice, get the same number)."""

    def __init__(self, key: bytes):
        self._key = key

    def draw(self, label: str, scale: float) -> int:
        digest = hmac.new(self._key, label.encode(), hashlib.sha256).digest()
        rng = np.random.Generator(np.random.PCG64(int.from_bytes(digest, "big")))
        return discrete_laplace(rng, scale)

    def fingerprint(self) -> str:
        """A name for this stream that tells nothing of its key (where its answer is kept)."""
        return hashlib.sha256(b"answer:" + self._key).hexdigest()[:32]

    def add(self, label: str, value: int, scale: float) -> int:
        return int(value) + self.draw(label, scale)
