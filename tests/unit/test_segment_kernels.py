"""The Numba kernels against plain NumPy references: random shapes, empty inputs, NaN-free."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adtier.segments import kernels as K


def _csr(seed: int, n: int, max_rows: int, n_keys: int = 4, max_day: int = 40):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, max_rows + 1, n)
    idx = np.repeat(np.arange(n), counts).astype(np.int64)
    m = idx.shape[0]
    day_off = rng.integers(0, max_day, m).astype(np.int32)
    key = rng.integers(0, n_keys, m).astype(np.int32)
    values = rng.integers(0, 5, m).astype(np.float64)
    return idx, K.csr_offsets(idx, n), day_off, key, values


shapes = st.tuples(st.integers(0, 2**31), st.integers(0, 60), st.integers(0, 6))


@settings(max_examples=60, deadline=None)
@given(shapes, st.integers(0, 3), st.integers(0, 45))
def test_windowed_sum_and_days_match_numpy(shape, want, window) -> None:
    seed, n, max_rows = shape
    idx, offsets, day_off, key, values = _csr(seed, n, max_rows)
    assert offsets.shape == (n + 1,) and offsets[-1] == idx.shape[0]
    hit = (key == want) & (day_off < window)
    ref_sum = np.bincount(idx[hit], weights=values[hit], minlength=n)
    ref_days = np.bincount(idx[hit & (values > 0)], minlength=n).astype(np.float64)
    np.testing.assert_allclose(K.windowed_sum(offsets, day_off, key, values, want, window), ref_sum)
    np.testing.assert_array_equal(
        K.windowed_days(offsets, day_off, key, values, want, window), ref_days)


@settings(max_examples=40, deadline=None)
@given(shapes)
def test_days_since_is_the_smallest_day_offset(shape) -> None:
    seed, n, max_rows = shape
    idx, offsets, day_off, _, _ = _csr(seed, n, max_rows)
    ref = np.full(n, 999.0)
    np.minimum.at(ref, idx, day_off.astype(np.float64))
    np.testing.assert_array_equal(K.days_since(offsets, day_off, 999), ref)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 1000)), max_size=50),
       st.floats(0.01, 10), st.floats(0.01, 100))
def test_beta_rate_is_nan_free_and_shrinks_to_the_prior(pairs, a, b) -> None:
    num = np.array([min(x, y) for x, y in pairs], np.float64)
    den = np.array([max(x, y) for x, y in pairs], np.float64)
    got = K.beta_rate(num, den, a, b)
    assert not np.isnan(got).any()
    np.testing.assert_allclose(got, (num + a) / (den + a + b))
    assert ((got > 0) & (got < 1)).all()
    np.testing.assert_allclose(K.beta_rate(np.zeros(3), np.zeros(3), a, b), a / (a + b))


def test_one_of_one_is_not_certain() -> None:
    assert K.beta_rate(np.ones(1), np.ones(1), 1.0, 1.0)[0] == pytest.approx(2 / 3)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1e6), st.floats(0, 1e6)), max_size=50))
def test_safe_share_has_no_nan(pairs) -> None:
    num = np.array([p[0] for p in pairs], np.float64)
    den = np.array([p[1] for p in pairs], np.float64)
    got = K.safe_share(num, den)
    assert not np.isnan(got).any()
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ref = np.where(den > 0, num / den, 0.0)
    np.testing.assert_allclose(got, ref)


@settings(max_examples=40, deadline=None)
@given(shapes, st.integers(1, 45), st.sampled_from([0.0, 7.0]))
def test_key_shares_match_numpy(shape, window, half_life) -> None:
    seed, n, max_rows = shape
    n_keys = 3
    idx, offsets, day_off, key, values = _csr(seed, n, max_rows, n_keys + 1)
    got = K.key_shares(offsets, day_off, key, values, n_keys, window, half_life)
    w = values * (0.5 ** (day_off / half_life) if half_life > 0 else 1.0)
    ref = np.zeros((n, n_keys))
    hit = (key >= 1) & (day_off < window)
    np.add.at(ref, (idx[hit], key[hit] - 1), w[hit])
    total = ref.sum(axis=1, keepdims=True)
    ref = np.divide(ref, total, out=np.zeros_like(ref), where=total > 0)
    np.testing.assert_allclose(got, ref, atol=1e-12)
    assert not np.isnan(got).any()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-5, 5), max_size=40), st.sampled_from(list(K.OPS)),
       st.lists(st.integers(-5, 5), min_size=1, max_size=4))
def test_compare_matches_numpy(values, op, params) -> None:
    v = np.array(values, np.float64)
    if op == "between":
        params = sorted(params[:2] * (2 if len(params) == 1 else 1))[:2]
    p = np.array(params, np.float64)
    ref = {">": v > p[0], ">=": v >= p[0], "<": v < p[0], "<=": v <= p[0], "==": v == p[0],
           "!=": v != p[0], "between": (v >= p[0]) & (v <= p[-1]), "in": np.isin(v, p)}[op]
    np.testing.assert_array_equal(K.compare(v, K.OPS[op], p), ref)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31), st.integers(0, 30), st.integers(1, 6))
def test_cosine_and_normalize_match_numpy(seed, n, d) -> None:
    rng = np.random.default_rng(seed)
    m = rng.random((n, d)) * (rng.random((n, 1)) > 0.2)  # some zero rows
    c = rng.random(d)
    norms = np.linalg.norm(m, axis=1)
    ref = np.where(norms > 0, m @ c / np.where(norms > 0, norms, 1) / np.linalg.norm(c), 0.0)
    np.testing.assert_allclose(K.cosine_to(m, c), ref, atol=1e-12)
    np.testing.assert_allclose(K.cosine_to(m, np.zeros(d)), np.zeros(n))
    unit = K.normalize_rows(m)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), (norms > 0).astype(float),
                               atol=1e-12)


def test_empty_inputs() -> None:
    e64, e32 = np.zeros(0, np.float64), np.zeros(0, np.int32)
    offsets = K.csr_offsets(np.zeros(0, np.int64), 0)
    assert offsets.tolist() == [0]
    assert K.windowed_sum(offsets, e32, e32, e64, 0, 30).shape == (0,)
    assert K.windowed_days(offsets, e32, e32, e64, 0, 30).shape == (0,)
    assert K.days_since(offsets, e32, 9).shape == (0,)
    assert K.key_shares(offsets, e32, e32, e64, 3, 30, 7.0).shape == (0, 3)
    assert K.compare(e64, 0, np.ones(1)).shape == (0,)
    # profiles without rows: zeros, and "never" for recency
    offsets = K.csr_offsets(np.zeros(0, np.int64), 3)
    assert K.windowed_sum(offsets, e32, e32, e64, 0, 30).tolist() == [0, 0, 0]
    assert K.days_since(offsets, e32, 9).tolist() == [9, 9, 9]


@settings(max_examples=40, deadline=None)
@given(shapes, st.integers(0, 45))
def test_fused_windowed_sums_match_single_sums(shape, window) -> None:
    seed, n, max_rows = shape
    idx, offsets, day_off, key, values = _csr(seed, n, max_rows)
    both = np.ascontiguousarray(np.stack([values, values * 2 + 1], axis=1))
    keys = np.array([0, 2, 3], np.int32)
    got = K.windowed_sums(offsets, day_off, key, both, keys, window)
    assert got.shape == (n, 3, 2)
    for j, k in enumerate(keys):
        for m in range(2):
            np.testing.assert_allclose(
                got[:, j, m], K.windowed_sum(offsets, day_off, key, both[:, m], k, window))


@settings(max_examples=60, deadline=None)
@given(shapes, st.integers(0, 3), st.integers(0, 45),
       st.sampled_from([(np.int32, np.float64), (np.int8, np.float32), (np.int16, np.float32)]))
def test_fused_rate_and_share_match_numpy(shape, want, window, dtypes) -> None:
    seed, n, max_rows = shape
    idx, offsets, day_off, key, den = _csr(seed, n, max_rows)
    num = np.floor(den * np.random.default_rng(seed).random(den.shape[0]))
    small, real = dtypes
    rate, share = K.rate_and_share(offsets, day_off.astype(small), key.astype(small),
                                   num.astype(real), den.astype(real), want, window, 1.0, 1.0)
    w = day_off < window
    hit = w & (key == want)
    d = np.bincount(idx[hit], den[hit], n)
    m = np.bincount(idx[hit], num[hit], n)
    total = np.bincount(idx[w & (key == 0)], den[w & (key == 0)], n)
    assert not np.isnan(rate).any() and not np.isnan(share).any()
    np.testing.assert_allclose(rate, (m + 1) / (d + 2), rtol=1e-6)
    np.testing.assert_allclose(share, np.divide(d, total, out=np.zeros(n), where=total > 0),
                               rtol=1e-6)


@settings(max_examples=40, deadline=None)
@given(shapes, st.integers(0, 3))
def test_key_min_matches_numpy(shape, want) -> None:
    seed, n, max_rows = shape
    idx, offsets, day_off, key, values = _csr(seed, n, max_rows)
    out = K.key_min(offsets, key, values, want, 1e6)
    ref = np.full(n, 1e6)
    hit = key == want
    np.minimum.at(ref, idx[hit], values[hit])
    np.testing.assert_array_equal(out, ref)


_SUM, _TOTAL, _MIN = 0, 1, 2


def _fold_reference(idx, day, keys, metrics, modes, bucket_of, n_labels):
    """fold_rows by dictionary: {(profile, bucket, key): [metrics]} (the label GROUP BY)."""
    out: dict[tuple[int, int, int], list[float]] = {}
    for r in range(idx.shape[0]):
        for k in [0] + [int(x) for x in keys[r] if x > 0]:
            cell = (int(idx[r]), int(bucket_of[day[r]]), k)
            values = [0.0 if (mode == _TOTAL and k) else float(metrics[m, r])
                      for m, mode in enumerate(modes)]
            if cell not in out:
                out[cell] = values
                continue
            for m, mode in enumerate(modes):
                if mode == _MIN:
                    out[cell][m] = min(out[cell][m], values[m])
                else:
                    out[cell][m] += values[m]
    return out


@settings(max_examples=60, deadline=None)
@given(shapes, st.integers(0, 3), st.integers(1, 5), st.booleans())
def test_fold_rows_matches_a_group_by(shape, width, n_labels, daily) -> None:
    """One row per (profile, day bucket, key) with at least one input row, sorted by (bucket,
    key) within a profile; sums, total-only sums and minimums as a GROUP BY would give."""
    seed, n, max_rows = shape
    rng = np.random.default_rng(seed)
    idx, offsets, day, _, _ = _csr(seed, n, max_rows, max_day=30)
    m = idx.shape[0]
    key_table = rng.integers(-1, n_labels, (7, width)).astype(np.int32)  # <= 0: no label
    item = rng.integers(0, 7, m)
    keys = key_table[item]
    metrics = rng.integers(0, 9, (4, m)).astype(np.uint32)
    modes = [_SUM, _TOTAL, _TOTAL, _MIN]
    bucket_of = (np.arange(30, dtype=np.int32) if daily
                 else np.where(np.arange(30) < 7, 0, 7).astype(np.int32))
    got_off, got_day, got_key, got_m = K.fold_rows(offsets, day, item, key_table,
                                                   tuple(metrics), 1, 2, bucket_of, n_labels)
    ref = _fold_reference(idx, day, keys, metrics, modes, bucket_of, n_labels)
    assert got_off.shape == (n + 1,) and got_off[-1] == len(ref) == got_day.shape[0]
    got = {}
    for p in range(n):
        cells = [(int(got_day[r]), int(got_key[r])) for r in range(got_off[p], got_off[p + 1])]
        assert cells == sorted(cells)  # sorted (bucket, key) within a profile
        for r in range(got_off[p], got_off[p + 1]):
            got[(p, int(got_day[r]), int(got_key[r]))] = list(got_m[:, r])
    assert got == ref


def test_fold_rows_empty() -> None:
    off, day, key, values = K.fold_rows(np.zeros(4, np.int64), np.zeros(0, np.int32),
                                        np.zeros(0, np.int64), np.zeros((1, 2), np.int32),
                                        (np.zeros(0), np.zeros(0)), 1, 1,
                                        np.arange(5, dtype=np.int32), 3)
    assert list(off) == [0, 0, 0, 0] and day.shape == key.shape == (0,)
    assert values.shape == (2, 0)


def _rank_reference(idx, day_off, key, values, among, want, window, n, none):
    """Competition rank by sorting each profile's key sums (exact ties share the better rank)."""
    sums = np.zeros((n, among.shape[0]))
    hit = (day_off < window) & (key > 0) & among[key]
    np.add.at(sums, (idx[hit], key[hit]), values[hit])
    out = np.full(n, float(none))
    for p in range(n):
        if sums[p, want] > 0:
            competing = np.sort(sums[p, among])[::-1]
            out[p] = 1 + int(np.searchsorted(-competing, -sums[p, want], side="left"))
    return out


@settings(max_examples=60, deadline=None)
@given(shapes, st.integers(1, 5), st.integers(0, 45), st.integers(0, 2**31))
def test_key_rank_matches_numpy(shape, want, window, mask_seed) -> None:
    """Ranks among a subset of the labels (e.g. genres among genres and titles), with many
    ties (small integer sums), empty profiles and rows outside the window or of key 0."""
    seed, n, max_rows = shape
    n_labels = 6
    idx, offsets, day_off, key, values = _csr(seed, n, max_rows, n_labels)
    among = np.random.default_rng(mask_seed).random(n_labels) < 0.7
    among[0] = False  # the total never competes
    among[want] = True
    got = K.key_rank(offsets, day_off, key, values, among, want, window, 1e6)
    ref = _rank_reference(idx, day_off, key, values, among, want, window, n, 1e6)
    np.testing.assert_array_equal(got, ref)
    ranked = got < 1e6
    assert ((got[ranked] >= 1) & (got[ranked] <= among.sum())).all()


def test_key_rank_ties_single_key_and_empties() -> None:
    # profile 0: keys 1, 2 tie on top (3 each), key 3 third; profile 1: only key 2;
    # profile 2: no rows; profile 3: key 1 only outside the window
    idx = np.array([0, 0, 0, 0, 1, 3], np.int64)
    key = np.array([1, 2, 3, 2, 2, 1], np.int32)
    day = np.array([0, 0, 0, 5, 1, 40], np.int32)
    val = np.array([3.0, 1.0, 2.0, 2.0, 7.0, 9.0])
    offsets = K.csr_offsets(idx, 4)
    among = np.array([False, True, True, True])

    def rank(want: int) -> list[float]:
        return K.key_rank(offsets, day, key, val, among, want, 30, 99.0).tolist()

    assert rank(1) == [1, 99, 99, 99]  # tied on top: both rank 1 ("1, 1, 3")
    assert rank(2) == [1, 1, 99, 99]  # the only key of profile 1 is its top
    assert rank(3) == [3, 99, 99, 99]
    # sums equal up to rounding still tie (0.1 + 0.2 != 0.3 in binary)
    off = K.csr_offsets(np.zeros(3, np.int64), 1)
    r = K.key_rank(off, np.zeros(3, np.int32), np.array([1, 1, 2], np.int32),
                   np.array([0.1, 0.2, 0.3]), among, 2, 30, 99.0)
    assert r.tolist() == [1]
    e32 = np.zeros(0, np.int32)
    assert K.key_rank(K.csr_offsets(np.zeros(0, np.int64), 0), e32, e32, np.zeros(0), among, 1,
                      30, 99.0).shape == (0,)


@settings(max_examples=60, deadline=None)
@given(shapes, st.integers(0, 3), st.integers(0, 45), st.sampled_from([0.0, 1.0, 14.0]))
def test_decayed_share_matches_numpy(shape, want, window, half_life) -> None:
    seed, n, max_rows = shape
    idx, offsets, day_off, key, values = _csr(seed, n, max_rows)
    got = K.decayed_share(offsets, day_off, key, values, want, window, half_life)
    w = values * (0.5 ** (day_off / half_life) if half_life > 0 else 1.0)
    inw = day_off < window
    num = np.bincount(idx[inw & (key == want)], w[inw & (key == want)], n)
    den = np.bincount(idx[inw & (key == 0)], w[inw & (key == 0)], n)
    ref = np.divide(num, den, out=np.zeros(n), where=den > 0)
    assert not np.isnan(got).any()
    np.testing.assert_allclose(got, np.minimum(ref, 1.0), rtol=1e-12, atol=1e-15)
    if half_life == 0:  # no decay: the plain share of rate_and_share
        share = K.rate_and_share(offsets, day_off, key, values, values, want, window, 1.0,
                                 1.0)[1]
        np.testing.assert_allclose(got, np.minimum(share, 1.0), rtol=1e-12)


def test_decayed_share_weighs_recent_days_more() -> None:
    # one profile: key 1 watched today (10), key 2 fourteen days ago (10); total 20
    idx = np.zeros(4, np.int64)
    key = np.array([0, 1, 0, 2], np.int32)
    day = np.array([0, 0, 14, 14], np.int32)
    val = np.array([10.0, 10.0, 10.0, 10.0])
    offsets = K.csr_offsets(idx, 1)
    one = K.decayed_share(offsets, day, key, val, 1, 30, 14.0)[0]
    two = K.decayed_share(offsets, day, key, val, 2, 30, 14.0)[0]
    assert one == pytest.approx(1 / 1.5) and two == pytest.approx(0.5 / 1.5)
    assert K.decayed_share(offsets, day, key, val, 2, 14, 14.0)[0] == 0.0  # out of window
    empty = K.csr_offsets(np.zeros(0, np.int64), 2)
    e32 = np.zeros(0, np.int32)
    assert K.decayed_share(empty, e32, e32, np.zeros(0), 1, 30, 14.0).tolist() == [0, 0]
