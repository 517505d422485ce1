"""k-anonymity folding: primary suppression, then complementary suppression until the
remainder reaches k (or nothing is left to fold)."""

from __future__ import annotations

import pytest

from adtier.measure.lift import proportion, ratio_estimate
from adtier.measure.privacy import fold_small_rows, fold_until_k


def rows(**sizes: int) -> list[dict]:
    return [{"key": k, "profiles": v} for k, v in sizes.items()]


@pytest.mark.parametrize("sizes,released,folded,coverage", [
    ({"a": 100, "b": 60}, ["a", "b"], [], 0),                 # nothing small
    ({"a": 100, "b": 60, "c": 50}, ["a", "b", "c"], [], 0),   # exactly k is released
    ({"a": 100, "b": 60, "c": 70}, ["a", "b", "c"], [], 0),
    ({"a": 100, "b": 60, "c": 10}, ["a"], ["c", "b"], 70),    # c alone < k: b folded too
    ({"a": 100, "b": 30, "c": 25}, ["a"], ["c", "b"], 55),    # two small cells reach k
    ({"a": 20, "b": 10}, [], ["b", "a"], 30),                 # nothing reaches k
])
def test_fold(sizes, released, folded, coverage):
    by_key = dict(sizes)
    split = fold_small_rows(rows(**sizes), 50, "key")
    split, got = fold_until_k(split, 50, "key", lambda keys: sum(by_key[k] for k in keys))
    assert [r["key"] for r in split.released] == released
    assert split.folded_keys == folded
    assert got == coverage


def test_estimators():
    r, se = ratio_estimate(4, sy=2, sn=8, syy=2, snn=16, syn=4)  # y=(1,1,0,0), n=(2,2,2,2)
    assert r == 0.25 and se == pytest.approx(((2 * 0.5 ** 2 + 2 * 0.5 ** 2) * 4 / 3) ** 0.5 / 8)
    p, se = proportion(30, 100)
    assert p == 0.3 and se == pytest.approx((0.3 * 0.7 / 100) ** 0.5)


def test_mean_estimate():
    from adtier.measure.lift import mean_estimate

    mean, se = mean_estimate(4, sw=8.0, sww=20.0)  # values 1, 1, 3, 3
    assert mean == 2.0 and se == pytest.approx((4 / 3) ** 0.5 / 2)
