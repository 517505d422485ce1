"""The content-effects lift CIs released to advertiser keys, widened for the noise, still cover
the planted effect in at least 95 % of simulated worlds, and how wide they are by world size.

Each world is a randomised promotion at the level the SQL hands over: per arm, every profile's
window sessions (Poisson), its sessions starting the target (binomial at the arm's rate) and
its target minutes; the arms' sums go through the advertiser's noise (``EffectsPrivatizer``,
the endpoint's code, a fixed noise secret per world) and the estimates through ``lift``. The
planted effects are known in closed form. Fixed seeds: the same worlds on every run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adtier.measure import lift
from adtier.measure.noisy import EffectsPrivatizer
from adtier.privacy.noise import NoiseStream, seed_key

WORLDS = 600
SESSIONS = 3.0  # mean window sessions per profile
P_CONTROL, P_TREATED = 0.10, 0.14  # share of sessions starting the target, per arm
MINUTES = 20.0  # minutes of the target per session that starts it
EXPOSED = 0.6  # treated profiles served the campaign


def _arm(rng: np.random.Generator, m: int, p: float, exposed: float) -> dict[str, float]:
    n = rng.poisson(SESSIONS, m).astype(float)
    y = rng.binomial(n.astype(int), p).astype(float)
    w = y * MINUTES
    served = rng.random(m) < exposed
    return {"profiles": m, "exposed_profiles": int(served.sum()), "starters": int((y > 0).sum()),
            "sn": n.sum(), "sy": y.sum(), "syy": (y * y).sum(), "snn": (n * n).sum(),
            "syn": (y * n).sum(), "sn_after": n[served].sum(), "sw": w.sum(),
            "sww": (w * w).sum()}


PLANTED = {  # treated - control, in closed form (n ~ Poisson: P(y > 0) = 1 - exp(-λ p))
    "share_of_sessions_starting_target": P_TREATED - P_CONTROL,
    "share_of_profiles_starting_target":
        math.exp(-SESSIONS * P_CONTROL) - math.exp(-SESSIONS * P_TREATED),
    "target_minutes_watched_per_profile": SESSIONS * MINUTES * (P_TREATED - P_CONTROL),
}


def _simulate(profiles_per_arm: int, epsilon: float | None) -> dict[str, tuple[float, float]]:
    """Coverage and median CI width of each lift over WORLDS worlds (epsilon None: exact)."""
    covered = {name: 0 for name in PLANTED}
    widths: dict[str, list[float]] = {name: [] for name in PLANTED}
    for world in range(WORLDS):
        rng = np.random.default_rng([profiles_per_arm, world])
        groups = {0: _arm(rng, profiles_per_arm, P_TREATED, EXPOSED),
                  1: _arm(rng, profiles_per_arm, P_CONTROL, 0.0)}
        var: dict[int, dict[str, float]] = {}
        if epsilon is not None:
            stream = NoiseStream(seed_key(b"lift-worlds", "adv", profiles_per_arm, str(world)))
            groups, var = EffectsPrivatizer(lambda _v: stream, epsilon, 7)(groups, "v")
        t = lift.arm_stats(groups[0], "treated", var.get(0, {}))
        c = lift.arm_stats(groups[1], "holdout", var.get(1, {}))
        for comparison in lift.compare(t, c):
            lo, hi = comparison["ci95"]
            covered[comparison["metric"]] += lo <= PLANTED[comparison["metric"]] <= hi
            widths[comparison["metric"]].append(hi - lo)
    return {name: (covered[name] / WORLDS, float(np.median(widths[name]))) for name in PLANTED}


@pytest.mark.parametrize("profiles_per_arm", [2_000, 20_000])
def test_noisy_lift_cis_cover_the_planted_effect(profiles_per_arm):
    noisy = _simulate(profiles_per_arm, 0.5)
    exact = _simulate(profiles_per_arm, None)
    for name, (coverage, width) in noisy.items():
        print(f"{profiles_per_arm:>7,d} per arm  {name:<38s} coverage {coverage:.3f} "
              f"(exact {exact[name][0]:.3f})  median width {width:.4g} "
              f"(exact {exact[name][1]:.4g}, {width / exact[name][1]:.1f}x)")
        assert coverage >= 0.95, (name, coverage)
        assert width >= exact[name][1]  # widened, never narrowed
