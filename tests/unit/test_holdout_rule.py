"""The holdout assignment rule (``adtier.catalog.holdouts``): the one-profile pure-Python form,
the simulator's vectorised NumPy form and ClickHouse's ``HOLDOUT_SQL`` agree exactly."""

from __future__ import annotations

import subprocess
import sys
import zlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from adtier.catalog import holdouts as H
from adtier.simulate import ids

ID = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
             max_size=64)
PERCENT = st.one_of(st.floats(0, 50, allow_nan=False),
                    st.sampled_from([0.0, 0.005, 0.015, 0.125, 12.345, 20.0, 50.0]))


def test_the_rule_imports_without_the_web_stack():
    """``catalog.holdouts`` is pure Python: importing it (the simulator does) must not run the
    catalog routes and pull in Litestar, Redis and ClickHouse clients."""
    probe = ("import sys, adtier.simulate.ids; "
             "print(sorted(m for m in sys.modules if m == 'adtier.catalog.routes' or "
             "m.split('.')[0] in ('litestar', 'redis', 'clickhouse_connect')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


@given(st.integers(0, 2**64 - 1))
def test_int_hash64_matches_the_vectorised_one(x):
    assert H.int_hash64(x) == int(ids.int_hash64(np.array([x], np.uint64))[0])


@settings(max_examples=300)
@given(st.lists(ID, min_size=1, max_size=20), ID, PERCENT)
def test_pure_and_vectorised_rules_agree(profile_ids, campaign_id, percent):
    crc = np.array([zlib.crc32(p.encode()) for p in profile_ids], np.uint32)
    buckets = ids.holdout_bucket(crc, campaign_id)
    mask = ids.holdout_mask(crc, campaign_id, percent)
    for i, profile_id in enumerate(profile_ids):
        assert H.bucket(profile_id, campaign_id) == int(buckets[i])
        assert H.in_holdout(profile_id, campaign_id, percent) == bool(mask[i])
        assert ids.in_holdout(profile_id, campaign_id, percent) == bool(mask[i])


def test_buckets_are_uniform_and_campaigns_independent():
    profiles = [f"pf-{i:06d}" for i in range(20_000)]
    a = np.array([H.in_holdout(p, "cmp-a", 20.0) for p in profiles])
    b = np.array([H.in_holdout(p, "cmp-b", 20.0) for p in profiles])
    assert abs(a.mean() - 0.20) < 0.01
    assert abs((a & b).mean() - 0.04) < 0.006
    assert not any(H.in_holdout(p, "cmp-a", 0.0) for p in profiles[:1000])


def test_the_rule_is_clickhouses(ch):
    """ClickHouse itself (chdb, or the server the suite runs on) computes the same buckets and
    the same assignment, thresholds with halves included."""
    rng = np.random.default_rng(7)
    profiles = [f"pf-{i}" for i in range(2_000)] + [
        "".join(chr(c) for c in rng.integers(33, 0x2FFF, rng.integers(1, 40)))
        for _ in range(500)]
    for campaign_id, percent in (("cmp-x", 20.0), ("🎬 promo", 12.345), ("c", 0.125),
                                 ("cmp-y", 0.015), ("cmp-z", 50.0)):
        rows = ch.query(
            f"SELECT profile_id, {H.HOLDOUT_BUCKET_SQL}, {H.HOLDOUT_SQL} "
            "FROM (SELECT arrayJoin({ids:Array(String)}) AS profile_id)",
            parameters={"ids": profiles, "campaign_id": campaign_id,
                        "holdout_percent": percent}).result_rows
        assert len(rows) == len(profiles)
        for profile_id, sql_bucket, sql_in in rows:
            assert H.bucket(profile_id, campaign_id) == sql_bucket, (profile_id, campaign_id)
            assert H.in_holdout(profile_id, campaign_id, percent) == bool(sql_in)
    thresholds = ch.query(
        "SELECT round(p * 100) FROM (SELECT arrayJoin({ps:Array(Float64)}) AS p)",
        parameters={"ps": [0.005, 0.015, 0.125, 0.135, 12.345, 12.5, 33.335]}).result_rows
    assert [H.threshold(p) for p in (0.005, 0.015, 0.125, 0.135, 12.345, 12.5, 33.335)] == [
        int(t[0]) for t in thresholds]
