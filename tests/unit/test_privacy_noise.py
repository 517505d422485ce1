"""adtier.privacy.noise: seeded discrete Laplace, calibrated by OpenDP's privacy map."""

from __future__ import annotations

import numpy as np
import pytest

from adtier.privacy.noise import (NoiseStream, accuracy, discrete_laplace, epsilon_of, pmf,
                                  scale_for, seed_key)


def test_same_secret_advertiser_query_and_version_give_the_same_noise():
    key = seed_key(b"secret", "adv-a", {"by": "day", "from": "2026-01-01"}, "v1")
    assert NoiseStream(key).draw("totals/reach", 16) == NoiseStream(key).draw("totals/reach", 16)
    # the dict's key order does not matter: the query is canonical JSON
    assert key == seed_key(b"secret", "adv-a", {"from": "2026-01-01", "by": "day"}, "v1")
    others = [seed_key(b"other", "adv-a", {"by": "day", "from": "2026-01-01"}, "v1"),
              seed_key(b"secret", "adv-b", {"by": "day", "from": "2026-01-01"}, "v1"),
              seed_key(b"secret", "adv-a", {"by": "device", "from": "2026-01-01"}, "v1"),
              seed_key(b"secret", "adv-a", {"by": "day", "from": "2026-01-01"}, "v2")]
    assert len({key, *others}) == 5


@pytest.mark.parametrize("sensitivity,epsilon", [(1, 0.0625), (3, 0.5), (33, 0.1875), (500, 2)])
def test_scale_is_what_opendps_map_charges(sensitivity, epsilon):
    scale = scale_for(sensitivity, epsilon)
    assert epsilon_of(sensitivity, scale) <= epsilon * (1 + 1e-9)
    # a smaller scale would spend more than asked
    assert epsilon_of(sensitivity, scale * 0.9) > epsilon


@pytest.mark.parametrize("scale", [2.0, 16.0])
def test_draws_follow_the_discrete_laplace(scale):
    """20,000 draws of fixed seeds against the pmf (deterministic: the seeds are fixed)."""
    draws = np.array([NoiseStream(seed_key(b"s", "a", i, "v")).draw("x", scale)
                      for i in range(20_000)])
    edge = int(3 * scale)
    for x in range(-edge, edge + 1, max(1, edge // 6)):
        expected = pmf(np.array([x]), scale)[0]
        got = float(np.mean(draws == x))
        assert abs(got - expected) <= 5 * np.sqrt(expected / 20_000) + 1e-4, (x, got, expected)
    assert 0.93 <= float(np.mean(np.abs(draws) < accuracy(scale, 0.05))) <= 0.97


def test_scale_zero_is_exact():
    assert discrete_laplace(np.random.default_rng(0), 0) == 0


def test_live_data_versions_are_floored_to_the_period():
    import datetime as dt

    from adtier.privacy.release import snapped_version

    utc = dt.timezone.utc
    hour = {"period_s": 3600}
    a = snapped_version(dt.datetime(2026, 12, 7, 12, 1, 5, tzinfo=utc), **hour)
    b = snapped_version("2026-12-07T12:59:59.999+00:00", **hour)
    assert a == b == "2026-12-07T12:00:00+00:00"
    assert snapped_version(dt.datetime(2026, 12, 7, 13, 0, tzinfo=utc), **hour) != a
    # naive times are UTC (ClickHouse answers them so); several parts, and no data yet
    assert snapped_version(dt.datetime(2026, 12, 7, 12, 30), None, **hour) == a + "|None"
    # a day: the whole UTC day is one version, the next day another
    day = {"period_s": 86_400}
    first = snapped_version(dt.datetime(2026, 12, 7, 0, 0, tzinfo=utc), **day)
    assert first == snapped_version("2026-12-07T23:59:59.999+00:00", **day)
    assert first == "2026-12-07T00:00:00+00:00"
    assert snapped_version(dt.datetime(2026, 12, 8, 0, 0, tzinfo=utc), **day) != first


def test_a_release_snaps_with_the_policys_period():
    import datetime as dt

    from adtier.privacy.release import Policy, Release
    from adtier.settings import load_settings

    when = dt.datetime(2026, 12, 7, 12, 30, tzinfo=dt.timezone.utc)
    hourly = Policy.of(load_settings({"ADTIER_PRIVACY_VERSION_PERIOD_S": "3600"}))
    daily = Policy.of(load_settings({}))
    versions = {p.version_period_s: Release(p, None, b"s", "adv", "report", {}).version(when)
                for p in (hourly, daily)}
    assert versions == {3600: "2026-12-07T12:00:00+00:00", 86_400: "2026-12-07T00:00:00+00:00"}
