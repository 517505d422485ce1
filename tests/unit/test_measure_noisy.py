"""adtier.measure.noisy: the content effects' noisy sums stay possible, whatever the draw."""

from __future__ import annotations

import math

from adtier.measure import lift
from adtier.measure.noisy import EffectsPrivatizer
from adtier.privacy.noise import NoiseStream, seed_key

# an arm where every profile starts the target in every session: the noise would push the
# starters above the profiles (a share above 1: sqrt of a negative variance) half the time
ARM = {"profiles": 60.0, "exposed_profiles": 60.0, "starters": 60.0, "sn": 120.0, "sy": 120.0,
       "syy": 240.0, "snn": 240.0, "syn": 240.0, "sn_after": 120.0, "sw": 600.0, "sww": 6000.0}


def test_noisy_sums_keep_shares_within_0_and_1():
    for seed in range(300):
        privatize = EffectsPrivatizer(
            lambda v, s=seed: NoiseStream(seed_key(b"t", "adv", s, v)), 0.5, 7)
        groups, var = privatize({0: dict(ARM), 1: dict(ARM)}, ("through", "outcome"))
        for g in groups.values():
            assert 0 <= g["starters"] <= g["profiles"] and 0 <= g["sy"] <= g["sn"]
            assert g["exposed_profiles"] <= g["profiles"] and g["sn_after"] <= g["sn"]
            p, se = lift.proportion(g["starters"], g["profiles"])
            assert 0 <= p <= 1 and not math.isnan(se)
        assert var[0]["sn"] > 0
