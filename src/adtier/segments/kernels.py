"""Numba kernels of the segment builder (the only Numba code in adtier).

Input layout: the pre-aggregated rows of one chunk of profiles, sorted by profile, in CSR form.
``offsets`` (int64, n_profiles + 1) delimits each profile's rows; per row ``day_off`` (int32,
days before the as-of day: 0 = the as-of day), ``key`` (int32: index of the row's key label,
0 = the "all keys" total) and one or more float64 metric columns. Rows are unique per
(profile, day, key).

Kernels over profiles are ``parallel=True`` (one profile per ``prange`` iteration, no shared
writes); element-wise ones are plain loops, which Numba vectorises. All are ``cache=True`` so a
process compiles them once per machine, not once per start.

Smoothing: ``beta_rate(num, den, a, b) = (num + a) / (den + a + b)`` is the posterior mean of a
rate under a Beta(a, b) prior; with ``den = 0`` it is the prior mean ``a / (a + b)``, never NaN.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = [
    "OPS",
    "csr_offsets",
    "fold_rows",
    "windowed_sum",
    "windowed_sums",
    "windowed_days",
    "days_since",
    "key_min",
    "rate_and_share",
    "beta_rate",
    "safe_share",
    "key_shares",
    "key_rank",
    "decayed_share",
    "compare",
    "normalize_rows",
    "cosine_to",
]

# comparison op codes for ``compare``
OPS = {">": 0, ">=": 1, "<": 2, "<=": 3, "==": 4, "!=": 5, "between": 6, "in": 7}
_BLOCKS = 256  # parallel blocks of profiles in the fused kernels (many per thread: balance)
_EPS = 1e-9  # == and != compare floats with this tolerance (counts are exact, rates are not)
# Ranks: two keys whose window sums differ by at most this fraction tie. The sums are of
# per-bucket minutes (ms / 60000) or event counts added in different orders, so equal totals can
# differ by a few ulps (~1e-14); a real difference (1 ms in a year of non-stop viewing) is 3e-11.
RANK_RTOL = 1e-12


@njit(cache=True)
def csr_offsets(sorted_idx: np.ndarray, n: int) -> np.ndarray:
    """Offsets of each profile's rows in ``sorted_idx`` (profile index per row, ascending)."""
    offsets = np.zeros(n + 1, np.int64)
    for i in range(sorted_idx.shape[0]):
        offsets[sorted_idx[i] + 1] += 1
    for p in range(n):
        offsets[p + 1] += offsets[p]
    return offsets


@njit(cache=True)
def _fold_profile(r0, r1, day, item, key_table, metrics, n_sum, n_total, bucket_of, n_labels,
                  acc, slot, touched, count_only):
    """Accumulate one profile's rows into ``acc`` by code = bucket * n_labels + key; answers
    how many codes it touched (listed in ``touched``; ``slot`` maps a code to its acc row).
    ``count_only``: only find the codes (the counting pass)."""
    n_keys = key_table.shape[1]
    n_m = len(metrics)
    t = 0
    for r in range(r0, r1):
        base = bucket_of[day[r]] * n_labels
        for j in range(n_keys + 1):
            k = 0 if j == 0 else key_table[item[r], j - 1]
            if j > 0 and k <= 0:
                continue
            code = base + k
            s = slot[code]
            fresh = s < 0
            if fresh:
                s = t
                slot[code] = s
                touched[t] = code
                t += 1
            if count_only:
                continue
            for m in range(n_sum):  # summed for every key
                v = np.float64(metrics[m][r])
                acc[s, m] = v if fresh else acc[s, m] + v
            for m in range(n_sum, n_sum + n_total):  # summed for key 0 only
                v = np.float64(metrics[m][r]) if k == 0 else 0.0
                acc[s, m] = v if fresh else acc[s, m] + v
            for m in range(n_sum + n_total, n_m):  # the smallest
                v = np.float64(metrics[m][r])
                if fresh or v < acc[s, m]:
                    acc[s, m] = v
    return t


@njit(parallel=True, cache=True)
def _fold_pass(offsets, day, item, key_table, metrics, n_sum, n_total, bucket_of, n_labels,
               counts, fill, out_day, out_key, out_m):
    """One pass of ``fold_rows`` over blocks of profiles in parallel: ``fill`` False writes each
    profile's row count to ``counts[p + 1]``; True writes its rows from ``counts[p]`` on."""
    n = offsets.shape[0] - 1
    n_m = len(metrics)
    n_codes = bucket_of.shape[0] * n_labels
    blocks = min(_BLOCKS, max(n, 1))
    for blk in prange(blocks):
        lo = (n * blk) // blocks
        hi = (n * (blk + 1)) // blocks
        acc = np.empty((n_codes, n_m), np.float64)
        slot = np.full(n_codes, -1, np.int64)
        touched = np.empty(n_codes, np.int64)
        for p in range(lo, hi):
            t = _fold_profile(offsets[p], offsets[p + 1], day, item, key_table, metrics, n_sum,
                              n_total, bucket_of, n_labels, acc, slot, touched, not fill)
            if not fill:
                counts[p + 1] = t
            else:
                order = np.sort(touched[:t])
                w = counts[p]
                for i in range(t):
                    code = order[i]
                    out_day[w + i] = code // n_labels
                    out_key[w + i] = code % n_labels
                    for m in range(n_m):
                        out_m[m, w + i] = acc[slot[code], m]
            for i in range(t):
                slot[touched[i]] = -1


@njit(cache=True)
def fold_rows(offsets, day, item, key_table, metrics, n_sum, n_total, bucket_of, n_labels):
    """Fold raw per-(profile, day, id) rollup rows into one row per (profile, day bucket, key
    label): what ClickHouse's label ``GROUP BY`` answered before, computed here in two cheap
    passes instead (the rows arrive sorted by profile: no hash table over all of them).

    ``offsets`` (int64, profiles + 1) delimits each profile's input rows; per row ``day``
    (int32, days before the as-of day, < len(bucket_of)) and ``item`` (its id's row of
    ``key_table``, int32 ids x L: the label indexes >= 1 the row also counts for, <= 0 = none;
    every row counts for key 0, the total), and ``metrics``, a tuple of M columns of one
    numeric dtype (e.g. the UInt32 columns of the Arrow answer, not copied): the first ``n_sum``
    columns are summed for every key, the next ``n_total`` summed for key 0 and 0 for the
    other keys (distinct counts flagged per row), the rest folded with min (e.g. the most
    recent day). ``bucket_of[d]`` is the first day of day d's bucket (the identity keeps one
    row per day).

    Answers the kernels' CSR layout (offsets, day_off, key, metrics M x rows): each
    profile's rows sorted by (bucket, key), one per (bucket, key) that at least one input row
    counts for. Sums of whole numbers are exact in any order, so the values equal the SQL
    ones."""
    n = offsets.shape[0] - 1
    n_m = len(metrics)
    counts = np.zeros(n + 1, np.int64)
    _fold_pass(offsets, day, item, key_table, metrics, n_sum, n_total, bucket_of, n_labels,
               counts, False, np.empty(0, np.int32), np.empty(0, np.int32),
               np.empty((n_m, 0), np.float64))
    for p in range(n):
        counts[p + 1] += counts[p]
    out_day = np.empty(counts[n], np.int32)
    out_key = np.empty(counts[n], np.int32)
    out_m = np.empty((n_m, counts[n]), np.float64)
    _fold_pass(offsets, day, item, key_table, metrics, n_sum, n_total, bucket_of, n_labels,
               counts, True, out_day, out_key, out_m)
    return counts, out_day, out_key, out_m


@njit(parallel=True, cache=True)
def windowed_sum(offsets, day_off, key, values, want_key, window):
    """Per profile: sum of ``values`` over rows with ``key == want_key`` and ``day_off < window``."""
    n = offsets.shape[0] - 1
    out = np.zeros(n, np.float64)
    for p in prange(n):
        acc = 0.0
        for r in range(offsets[p], offsets[p + 1]):
            if key[r] == want_key and day_off[r] < window:
                acc += values[r]
        out[p] = acc
    return out


@njit(parallel=True, cache=True)
def windowed_sums(offsets, day_off, key, values, want_keys, window):
    """Fused form of ``windowed_sum``: one pass over the rows for many keys and metrics.

    ``values`` is (rows, metrics); answers (profiles, len(want_keys), metrics) sums of rows with
    ``key == want_keys[j]`` and ``day_off < window``."""
    n = offsets.shape[0] - 1
    nk = want_keys.shape[0]
    nm = values.shape[1]
    out = np.zeros((n, nk, nm), np.float64)
    for p in prange(n):
        for r in range(offsets[p], offsets[p + 1]):
            if day_off[r] >= window:
                continue
            k = key[r]
            for j in range(nk):
                if want_keys[j] == k:
                    for m in range(nm):
                        out[p, j, m] += values[r, m]
    return out


@njit(parallel=True, cache=True)
def windowed_days(offsets, day_off, key, values, want_key, window):
    """Per profile: distinct days with ``key == want_key``, ``values > 0``, ``day_off < window``
    (rows are unique per (profile, day, key), so a count of rows is a count of days)."""
    n = offsets.shape[0] - 1
    out = np.zeros(n, np.float64)
    for p in prange(n):
        acc = 0
        for r in range(offsets[p], offsets[p + 1]):
            if key[r] == want_key and day_off[r] < window and values[r] > 0:
                acc += 1
        out[p] = acc
    return out


@njit(parallel=True, cache=True)
def days_since(offsets, day_off, empty):
    """Per profile: the smallest ``day_off`` (days since last active); ``empty`` if no rows."""
    n = offsets.shape[0] - 1
    out = np.empty(n, np.float64)
    for p in prange(n):
        best = empty
        for r in range(offsets[p], offsets[p + 1]):
            if day_off[r] < best:
                best = day_off[r]
        out[p] = best
    return out


@njit(parallel=True, cache=True, fastmath=True)
def rate_and_share(offsets, day_off, key, num, den, want_key, window, a, b):
    """One pass over the rows, per profile: the Beta(a, b)-smoothed rate ``num / den`` of key
    ``want_key`` and that key's share of the total (key 0) ``den``, both in the window.

    The fused form of ``windowed_sum`` x 3 + ``beta_rate`` + ``safe_share``. The profiles are
    cut into ``_BLOCKS`` contiguous blocks run in parallel (``prange``); within a block the
    rows are read once in order, first into branch-free masked contributions (a flat loop that
    vectorises: the window and key tests are random per row, so branches would mispredict),
    then summed per profile over the CSR ``offsets`` (computed once per chunk). Inputs may be
    small dtypes (int8/int16 day and key, float32 metrics). Answers (rate, share) float64."""
    n = offsets.shape[0] - 1
    rate = np.empty(n, np.float64)
    share = np.empty(n, np.float64)
    for blk in prange(_BLOCKS):
        lo = (n * blk) // _BLOCKS
        hi = (n * (blk + 1)) // _BLOCKS
        r0 = offsets[lo]
        m_rows = offsets[hi] - r0
        tot = np.empty(m_rows, den.dtype)  # float32 inputs stay float32, float64 exact
        hit_den = np.empty(m_rows, den.dtype)
        hit_num = np.empty(m_rows, num.dtype)
        for i in range(m_rows):
            r = r0 + i
            inw = day_off[r] < window
            k = key[r]
            f0 = np.float32(1.0) if (inw and k == 0) else np.float32(0.0)
            f1 = np.float32(1.0) if (inw and k == want_key) else np.float32(0.0)
            tot[i] = den[r] * f0
            hit_den[i] = den[r] * f1
            hit_num[i] = num[r] * f1
        for p in range(lo, hi):
            total = 0.0
            d = 0.0
            m = 0.0
            for i in range(offsets[p] - r0, offsets[p + 1] - r0):
                total += tot[i]
                d += hit_den[i]
                m += hit_num[i]
            rate[p] = (m + a) / (d + a + b)
            share[p] = d / total if total > 0 else 0.0
    return rate, share


@njit(parallel=True, cache=True)
def key_min(offsets, key, values, want_key, empty):
    """Per profile: the smallest ``values`` over rows with ``key == want_key``; ``empty`` if
    none (days since last active, from each bucket's most recent day)."""
    n = offsets.shape[0] - 1
    out = np.empty(n, np.float64)
    for p in prange(n):
        best = empty
        for r in range(offsets[p], offsets[p + 1]):
            if key[r] == want_key and values[r] < best:
                best = values[r]
        out[p] = best
    return out


@njit(cache=True)
def beta_rate(num, den, a, b):
    """Posterior mean of a rate under a Beta(a, b) prior: (num + a) / (den + a + b)."""
    out = np.empty(num.shape[0], np.float64)
    for i in range(num.shape[0]):
        out[i] = (num[i] + a) / (den[i] + a + b)
    return out


@njit(cache=True)
def safe_share(num, den):
    """num / den, and 0 where den is 0 (a profile with no activity has no share of anything)."""
    out = np.zeros(num.shape[0], np.float64)
    for i in range(num.shape[0]):
        if den[i] > 0:
            out[i] = num[i] / den[i]
    return out


@njit(parallel=True, cache=True)
def key_shares(offsets, day_off, key, values, n_keys, window, half_life):
    """Per profile, a row of time-decayed shares over keys 1..n_keys (column k-1 for key k).

    Each row of the profile adds ``values * 0.5 ** (day_off / half_life)`` to its key's weight
    (``half_life <= 0``: no decay); rows with key 0 (the total) and rows outside the window are
    ignored. The row is then divided by its sum (all zeros when the profile has no weight).
    """
    n = offsets.shape[0] - 1
    out = np.zeros((n, n_keys), np.float64)
    for p in prange(n):
        total = 0.0
        for r in range(offsets[p], offsets[p + 1]):
            k = key[r]
            if k >= 1 and k <= n_keys and day_off[r] < window:
                w = values[r]
                if half_life > 0:
                    w = w * 0.5 ** (day_off[r] / half_life)
                out[p, k - 1] += w
                total += w
        if total > 0:
            for k in range(n_keys):
                out[p, k] /= total
    return out


@njit(parallel=True, cache=True)
def key_rank(offsets, day_off, key, values, among, want_key, window, none):
    """Per profile: the rank (1 = largest) of key ``want_key``'s window sum of ``values``
    among the keys flagged in ``among`` (bool per key label, e.g. every genre label).

    Competition ranking: rank = 1 + the number of competing keys with a strictly larger sum
    (sums within ``RANK_RTOL`` of each other tie), so keys with equal shares share the better
    rank ("1, 2, 2, 4"), whatever the label order. A profile with no positive sum of
    ``want_key`` in the window has no rank: ``none`` (a large number, so ``rank <= n`` never
    holds for a key the profile did not touch). Rows outside the window, of keys not in
    ``among`` or of key 0 (the total) are ignored; rows are in CSR form (``offsets``)."""
    n = offsets.shape[0] - 1
    n_labels = among.shape[0]
    out = np.empty(n, np.float64)
    blocks = min(_BLOCKS, max(n, 1))
    for blk in prange(blocks):
        lo = (n * blk) // blocks
        hi = (n * (blk + 1)) // blocks
        acc = np.zeros(n_labels, np.float64)  # per-block scratch, reset after each profile
        for p in range(lo, hi):
            for r in range(offsets[p], offsets[p + 1]):
                k = key[r]
                if day_off[r] < window and k > 0 and k < n_labels and among[k]:
                    acc[k] += values[r]
            own = acc[want_key] if want_key < n_labels else 0.0
            if own > 0:
                bar = own * (1.0 + RANK_RTOL)
                rank = 1
                for k in range(n_labels):
                    if k != want_key and acc[k] > bar:
                        rank += 1
                out[p] = rank
            else:
                out[p] = none
            for r in range(offsets[p], offsets[p + 1]):
                k = key[r]
                if k >= 0 and k < n_labels:
                    acc[k] = 0.0
    return out


@njit(parallel=True, cache=True)
def decayed_share(offsets, day_off, key, values, want_key, window, half_life):
    """Per profile: the time-decayed share of key ``want_key`` in the total (key 0) over the
    window, ``sum(w * v | key) / sum(w * v | key 0)`` with ``w = 0.5 ** (day_off /
    half_life)`` (``half_life <= 0``: no decay, the plain share). 0 when the profile has no
    weight in the window, never NaN; clipped to 1 (a key's rows are a subset of the total's,
    so only rounding could pass it). ``day_off`` must be days, not buckets of days."""
    n = offsets.shape[0] - 1
    span = max(window, 0)
    # one power per day, not one per row; the extra last weight (0) is every row outside the
    # window, so the row loop selects instead of branching (random keys and days mispredict:
    # 2.8x faster on 10M rows)
    decay = np.zeros(span + 1, np.float64)
    for d in range(span):
        decay[d] = 0.5 ** (d / half_life) if half_life > 0 else 1.0
    out = np.zeros(n, np.float64)
    blocks = min(_BLOCKS, max(n, 1))
    for blk in prange(blocks):
        for p in range((n * blk) // blocks, (n * (blk + 1)) // blocks):
            num = 0.0
            den = 0.0
            for r in range(offsets[p], offsets[p + 1]):
                d = day_off[r]
                w = values[r] * decay[d if (d >= 0 and d < span) else span]
                k = key[r]
                den += w if k == 0 else 0.0
                num += w if k == want_key else 0.0
            if den > 0:
                out[p] = min(num / den, 1.0)
    return out


@njit(parallel=True, cache=True)
def compare(values, op, params):
    """Evaluate one predicate over a feature array: ``values <op> params`` -> bool array.

    ``params``: one number for the comparisons, [low, high] for between (inclusive), the
    candidate numbers for in. == / != / in compare with a tolerance of 1e-9.
    """
    n = values.shape[0]
    out = np.zeros(n, np.bool_)
    a = params[0]
    b = params[params.shape[0] - 1]
    for i in prange(n):
        v = values[i]
        if op == 0:
            out[i] = v > a
        elif op == 1:
            out[i] = v >= a
        elif op == 2:
            out[i] = v < a
        elif op == 3:
            out[i] = v <= a
        elif op == 4:
            out[i] = abs(v - a) <= _EPS
        elif op == 5:
            out[i] = abs(v - a) > _EPS
        elif op == 6:
            out[i] = v >= a and v <= b
        else:
            hit = False
            for j in range(params.shape[0]):
                if abs(v - params[j]) <= _EPS:
                    hit = True
                    break
            out[i] = hit
    return out


@njit(parallel=True, cache=True)
def normalize_rows(matrix):
    """Each row scaled to unit L2 norm (zero rows stay zero)."""
    out = np.zeros_like(matrix)
    for i in prange(matrix.shape[0]):
        s = 0.0
        for j in range(matrix.shape[1]):
            s += matrix[i, j] * matrix[i, j]
        if s > 0:
            s = np.sqrt(s)
            for j in range(matrix.shape[1]):
                out[i, j] = matrix[i, j] / s
    return out


@njit(parallel=True, cache=True)
def cosine_to(matrix, centroid):
    """Cosine similarity of each row with ``centroid`` (0 for zero rows or a zero centroid)."""
    n = matrix.shape[0]
    out = np.zeros(n, np.float64)
    cn = 0.0
    for j in range(centroid.shape[0]):
        cn += centroid[j] * centroid[j]
    if cn == 0:
        return out
    cn = np.sqrt(cn)
    for i in prange(n):
        dot = 0.0
        rn = 0.0
        for j in range(centroid.shape[0]):
            dot += matrix[i, j] * centroid[j]
            rn += matrix[i, j] * matrix[i, j]
        if rn > 0:
            out[i] = dot / (np.sqrt(rn) * cn)
    return out
