"""A chunk of profiles in NumPy: the rows ClickHouse answers for a plan (``aggregate``) folded
into per-family CSR arrays (sorted by profile) for the Numba kernels, and the per-profile
feature values read from them. Rollup rows are folded by ``kernels.fold_rows``; rows of
profiles outside the chunk's universe are dropped before any kernel."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from clickhouse_connect.driver.client import Client

from adtier.segments import kernels as K
from adtier.segments.aggregate import (
    CTR_PRIOR,
    RATE_PRIOR,
    UNIVERSE_DAYS,
    _FAMILIES,
    _PREFIX,
    _ROLLUP_SQL,
    _SQL,
    Plan,
    _rollup_universe_sql,
    _universe_sql,
    estimate_profiles,
    hash_ranges,
    key_params,
    label_of,
)
from adtier.segments.rules import AFFINITY_HALF_LIFE_DAYS, FEATURES, NO_RANK

__all__ = ["Rows", "Chunk", "load_chunk", "iter_chunks", "feature_values"]


@dataclass
class Rows:
    """One family's rows of a chunk in CSR form."""

    offsets: np.ndarray
    day_off: np.ndarray
    key: np.ndarray
    metrics: dict[str, np.ndarray]


@dataclass
class Chunk:
    hashes: np.ndarray  # uint64, ascending
    ids: pa.Array  # the profile ids (string), aligned with hashes
    families: dict[str, Rows]
    plan: Plan
    cache: dict = field(default_factory=dict)
    _objects: np.ndarray | None = None

    @property
    def profile_ids(self) -> np.ndarray:
        """The ids as a NumPy object array (made on first use: a build filters ``ids`` in
        Arrow instead, with no Python object per member)."""
        if self._objects is None:
            self._objects = np.asarray(self.ids.to_pylist(), dtype=object)
        return self._objects

    @property
    def size(self) -> int:
        return int(self.hashes.shape[0])


# The rollup queries hand over the rollup rows as they are stored (no GROUP BY: a chunk's rows
# are one contiguous, sorted slice of each table). In NumPy each campaign / title becomes its
# row of the id -> labels table (``key_params``), device / daypart their label index; then
# ``fold_rows`` (Numba) does in two passes over the sorted rows what a label GROUP BY over all
# of them did in ClickHouse: count every row for key 0 and for its id's labels (a campaign's
# own and its category's; a title's own and its genres'), per day bucket. Rows of one
# (profile, day, key) that merges have not folded yet are summed / maxed there too.

# Narrow types (UInt16 day, UInt32 counts: per-day counts of one profile) halve the bytes
# ClickHouse hands over. Campaign, device and daypart are LowCardinality columns and come as
# Arrow dictionaries (``_ARROW_DICT``), mapped to labels through their few distinct values in
# NumPy (``_codes``): an ``indexOf`` per row in the query cost more than the rest of it. Titles
# (a plain String column) are made LowCardinality per block for the same reason.
_ARROW_DICT = {"output_format_arrow_low_cardinality_as_dictionary": 1}
_METRICS = {"ad": ("impressions", "completes", "skips", "clicks"),
            "content": ("minutes", "plays"),
            "activity": ("events", "sessions", "days", "recent")}


def _rows(table, hashes: np.ndarray, metrics: tuple[str, ...]) -> Rows:
    row_hash = table.column("profile_hash").to_numpy()
    n = hashes.shape[0]
    reordered = False
    if n == 0 or row_hash.shape[0] == 0:
        pick = idx = np.zeros(0, np.int64)
    else:
        idx = np.minimum(np.searchsorted(hashes, row_hash), n - 1)
        pick = np.flatnonzero(hashes[idx] == row_hash)  # rows of profiles in the universe
        idx = idx[pick]
        if idx.shape[0] > 1 and np.any(idx[1:] < idx[:-1]):  # ClickHouse sorted them already
            order = np.argsort(idx, kind="stable")
            idx, pick = idx[order], pick[order]
            reordered = True
    # every row kept, in order (pick is ascending as long as nothing was re-sorted)
    every = pick.shape[0] == row_hash.shape[0] and not reordered

    def col(name: str, dtype) -> np.ndarray:
        values = table.column(name).to_numpy()
        if not every:  # some rows belong to no profile of the universe: drop them
            values = values[pick]
        return values.astype(dtype, copy=False)

    return Rows(
        offsets=K.csr_offsets(idx.astype(np.int64), n),
        day_off=col("day_off", np.int32),
        key=col("key", np.int32),
        metrics={m: col(m, np.float64) for m in metrics},
    )


def _profile_index(row_hash: np.ndarray, hashes: np.ndarray
                   ) -> tuple[np.ndarray | None, np.ndarray]:
    """(rows kept, or None for all of them; their profile index): the rows of profiles in the
    universe (not kids', opted-out or erased: the universe left those out). Rows arrive
    sorted by profile, so the indexes are ascending."""
    n = hashes.shape[0]
    if n == 0 or row_hash.shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    idx = np.minimum(np.searchsorted(hashes, row_hash), n - 1)
    keep = hashes[idx] == row_hash
    if keep.all():
        return None, idx
    pick = np.flatnonzero(keep)
    return pick, idx[pick]


def _column(table, name: str, pick: np.ndarray | None, dtype=None) -> np.ndarray:
    """A column of the kept rows (as its own dtype unless ``dtype`` is given)."""
    values = table.column(name).to_numpy()
    if pick is not None:
        values = values[pick]
    return values if dtype is None else values.astype(dtype, copy=False)


def _key_table(ids_keys: list[list[int]]) -> np.ndarray:
    """Row i + 1: the label indexes id i of the plan's id list counts for (0-padded); row 0
    (an id no label wants) counts for none."""
    width = max((len(k) for k in ids_keys), default=0)
    table = np.zeros((len(ids_keys) + 1, width), np.int32)
    for i, keys in enumerate(ids_keys):
        table[i + 1, :len(keys)] = keys
    return table


def _codes(column, code_of: dict[str, int], pick: np.ndarray | None,
           default: int | None = 0) -> np.ndarray:
    """Per row, ``code_of[value]`` of a string column, looked up once per distinct value of
    each Arrow chunk (dictionary-encoded, or encoded here). ``default=None``: a value not in
    ``code_of`` gets the next free code (``code_of`` grows: a global id per value)."""
    parts = []
    for chunk in column.chunks:
        if not isinstance(chunk.type, pa.DictionaryType):
            chunk = chunk.dictionary_encode()
        values = chunk.dictionary.to_pylist()
        if default is None:
            lut = [code_of.setdefault(v, len(code_of) + 1) for v in values]
        else:
            lut = [code_of.get(v, default) for v in values]
        parts.append(np.asarray(lut, np.int64)[chunk.indices.to_numpy(zero_copy_only=False)])
    out = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return out if pick is None else out[pick]


def _id_codes(plan: Plan, ids_param: str) -> dict[str, int]:
    """id -> its position + 1 in the plan's id list (``key_params``): a row of the key table."""
    return {v: i + 1 for i, v in enumerate((plan.key_params or {}).get(ids_param, []))}


def _bucket_of(plan: Plan, family: str) -> np.ndarray:
    """Per day before the as-of day, the first day of its bucket in ``family``'s rows
    (``_bucket_sql`` in NumPy)."""
    days = np.arange(plan.lookback_days, dtype=np.int32)
    if not plan.bounds:
        return days
    lower = np.asarray([0] + [int(b) for b in plan.bounds[:-1]], np.int32)
    bucket = lower[np.searchsorted(lower, days, side="right") - 1]
    return np.where(days < plan.daily_days.get(family, 0), days, bucket).astype(np.int32)


def _changes(*columns: np.ndarray) -> np.ndarray:
    """Bool per row: the first row, or any of ``columns`` differs from the previous row."""
    n = columns[0].shape[0]
    out = np.zeros(n, bool)
    if n:
        out[0] = True
        for col in columns:
            out[1:] |= col[1:] != col[:-1]
    return out


def _folded(plan: Plan, family: str, n: int, idx: np.ndarray, day: np.ndarray,
            item: np.ndarray, key_table: np.ndarray, metrics: list[np.ndarray], n_sum: int,
            n_total: int = 0) -> Rows:
    """``fold_rows`` over a family's rows; ``metrics`` in ``_METRICS[family]`` order (summed,
    then summed for the total only, then folded with min), handed over as they are (no
    float64 copy: on this VM touching fresh memory costs ~3 ms per MB)."""
    dtype = np.result_type(*metrics)
    columns = tuple(np.asarray(m, dtype) for m in metrics)
    for column in columns:  # one Numba type for the tuple, whatever Arrow gave
        column.setflags(write=False)
    offsets, day_off, key, out = K.fold_rows(
        K.csr_offsets(idx, n), day, item, key_table, columns, n_sum, n_total,
        _bucket_of(plan, family), len(plan.labels[family]))
    return Rows(offsets, day_off, key, dict(zip(_METRICS[family], out, strict=True)))


def _fold_ad(table, hashes: np.ndarray, plan: Plan, key_table: np.ndarray) -> Rows:
    pick, idx = _profile_index(table.column("profile_hash").to_numpy(), hashes)
    item = _codes(table.column("campaign_id"), _id_codes(plan, "ad_ids"), pick)
    return _folded(plan, "ad", hashes.shape[0], idx, _column(table, "d", pick), item,
                   key_table, [_column(table, m, pick) for m in _METRICS["ad"]], n_sum=4)


def _fold_content(table, hashes: np.ndarray, plan: Plan, key_table: np.ndarray) -> Rows:
    """Plays first (a new play where profile, day, session or title changes; its watched
    time is the largest of its rows), then minutes and plays per bucket and label."""
    pick, idx = _profile_index(table.column("profile_hash").to_numpy(), hashes)
    day = _column(table, "d", pick)
    wanted = _id_codes(plan, "content_ids")
    title = _codes(table.column("title"), dict(wanted), pick, default=None)  # a code per title
    starts = np.flatnonzero(_changes(idx, day, _column(table, "session_hash", pick), title))
    ms = _column(table, "watched_ms", pick)
    ms = np.maximum.reduceat(ms, starts) if starts.shape[0] else ms[:0]
    item = title[starts]
    item[item > len(wanted)] = 0  # titles no label wants
    rows = _folded(plan, "content", hashes.shape[0], idx[starts], day[starts], item,
                   key_table, [ms, np.ones(starts.shape[0], ms.dtype)], n_sum=2)
    rows.metrics["minutes"] = rows.metrics["minutes"] / 60000.0  # sum(ms) / 60000.0, as SQL did
    return rows


def _fold_activity(table, hashes: np.ndarray, plan: Plan) -> Rows:
    """Events per bucket and label; for key 0 also sessions (rows that start a new (day,
    session): distinct sessions per day, summed), active days (rows that start a new day) and
    the most recent day. A row's device and daypart labels are one item (dev * labels + dp)
    of a small table of every pair."""
    pick, idx = _profile_index(table.column("profile_hash").to_numpy(), hashes)
    day = _column(table, "d", pick)
    new_day = _changes(idx, day)
    new_session = new_day | _changes(_column(table, "session_hash", pick))
    labels = plan.labels["activity"]
    n_labels = len(labels)
    if "device" in table.column_names:
        dev, dp = (_codes(table.column(name), {label[len(prefix):]: i
                                               for i, label in enumerate(labels)
                                               if label.startswith(prefix)}, pick)
                   for name, prefix in (("device", "dev:"), ("daypart", "dp:")))
        item = dev * n_labels + dp
        pairs = np.arange(n_labels * n_labels, dtype=np.int32)
        key_table = np.column_stack([pairs // n_labels, pairs % n_labels]).astype(np.int32)
    else:
        item = np.zeros(idx.shape[0], np.int64)
        key_table = np.zeros((1, 0), np.int32)
    metrics = [_column(table, "events", pick), new_session, new_day, day]
    return _folded(plan, "activity", hashes.shape[0], idx, day, item, key_table, metrics,
                   n_sum=1, n_total=2)


def _fold(family: str, table, hashes: np.ndarray, plan: Plan) -> Rows:
    keys = plan.key_params or {}
    if family == "ad":
        return _fold_ad(table, hashes, plan, _key_table(keys.get("ad_keys", [])))
    if family == "content":
        return _fold_content(table, hashes, plan, _key_table(keys.get("content_keys", [])))
    return _fold_activity(table, hashes, plan)


def load_chunk(client: Client, plan: Plan, day: dt.date, lo: int, hi: int,
               universe_days: int = UNIVERSE_DAYS, extra_where: str = "",
               extra_params: dict | None = None) -> Chunk:
    """The universe of one hash range and the rows of each family the plan needs.

    ``extra_where`` (with its bound ``extra_params``) narrows every query further, e.g. to the
    members of a seed segment."""
    base = {"lo": lo, "hi": hi, "as_of": day, **(extra_params or {})}
    rollup = plan.source == "rollup"
    universe = client.query_arrow(
        (_rollup_universe_sql if rollup else _universe_sql)(extra_where),
        parameters={**base, "start": day - dt.timedelta(days=max(universe_days,
                                                                 plan.lookback_days) - 1)},
    )
    hashes = universe.column("profile_hash").to_numpy()
    ids = universe.column("profile_id").combine_chunks()
    if hashes.shape[0] > 1 and not np.all(hashes[1:] != hashes[:-1]):
        # two ids with one 64-bit hash (not seen in practice): one of them, as any() kept
        first = _changes(hashes)
        hashes, ids = hashes[first], ids.filter(pa.array(first))
    families: dict[str, Rows] = {}
    start = day - dt.timedelta(days=plan.lookback_days - 1)
    keys = key_params(client, plan)
    for family in _FAMILIES:
        if family not in plan.labels:
            continue
        table = client.query_arrow((_ROLLUP_SQL if rollup else _SQL)[family](plan, extra_where),
                                   parameters={**base, **keys, "start": start},
                                   settings=_ARROW_DICT if rollup else None)
        families[family] = (_fold(family, table, hashes, plan) if rollup
                            else _rows(table, hashes, _METRICS[family]))
    return Chunk(hashes, ids, families, plan)


def iter_chunks(client: Client, plan: Plan, day: dt.date, chunk_profiles: int = 200_000,
                universe_days: int = UNIVERSE_DAYS) -> Iterator[tuple[int, int, Chunk]]:
    """(chunk number, chunk count, chunk) over the whole profile-hash space."""
    estimate = estimate_profiles(client, day, max(universe_days, plan.lookback_days),
                                 plan.source)
    n = max(1, math.ceil(estimate / max(1, chunk_profiles)))
    for i, (lo, hi) in enumerate(hash_ranges(n)):
        yield i, n, load_chunk(client, plan, day, lo, hi, universe_days)


# what shares, ranks and affinities of a family weigh: watch minutes, or events
_AMOUNT = {"content": "minutes", "activity": "events"}


def _empty_rows(n: int) -> Rows:
    return Rows(np.zeros(n + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int32),
                {m: np.zeros(0) for fam in _METRICS.values() for m in fam})


def feature_values(chunk: Chunk, feature: str, key: str | None, window: int) -> np.ndarray:
    """One feature for every profile of the chunk (float64), computed by the kernels; cached."""
    spec = (feature, key, window)
    if spec in chunk.cache:
        return chunk.cache[spec]
    f = FEATURES[feature]
    rows = chunk.families.get(f.source) or _empty_rows(chunk.size)
    k = chunk.plan.index(f.source, label_of(feature, key)) if f.source in chunk.plan.labels \
        else 0

    def wsum(metric: str, key_index: int = k) -> np.ndarray:
        return K.windowed_sum(rows.offsets, rows.day_off, rows.key, rows.metrics[metric],
                              key_index, window)

    def fused(num: str, den: str, prior: tuple[float, float] = RATE_PRIOR):
        """(smoothed rate num/den of the key, the key's share of the total den): one pass."""
        return K.rate_and_share(rows.offsets, rows.day_off, rows.key, rows.metrics[num],
                                rows.metrics[den], k, window, *prior)

    if feature in ("ad_impressions", "campaign_exposures"):
        out = wsum("impressions")
    elif feature == "ad_completes":
        out = wsum("completes")
    elif feature == "ad_skips":
        out = wsum("skips")
    elif feature == "ad_clicks":
        out = wsum("clicks")
    elif feature in ("ad_completion_rate", "ad_skip_rate", "ad_ctr"):
        metric = {"ad_completion_rate": "completes", "ad_skip_rate": "skips",
                  "ad_ctr": "clicks"}[feature]
        prior = CTR_PRIOR if feature == "ad_ctr" else RATE_PRIOR
        out = fused(metric, "impressions", prior)[0]
    elif feature == "watch_minutes":
        out = wsum("minutes")
    elif feature == "genre_share":
        out = fused("minutes", "minutes")[1]
    elif feature == "watched_title":
        out = (wsum("plays") > 0).astype(np.float64)
    elif feature == "sessions":
        out = wsum("sessions")
    elif feature == "active_days":
        out = wsum("days", 0)
    elif feature == "days_since_active":
        out = K.key_min(rows.offsets, rows.key, rows.metrics["recent"], 0, 1_000_000.0)
    elif feature in ("device_share", "daypart_share"):
        out = fused("events", "events")[1]
    elif f.all_keys:  # genre_rank, device_rank, daypart_rank: among every key of the kind
        prefix = _PREFIX[f.key_kind]
        among = np.asarray([label.startswith(prefix)
                            for label in chunk.plan.labels.get(f.source, [""])], np.bool_)
        out = K.key_rank(rows.offsets, rows.day_off, rows.key, rows.metrics[_AMOUNT[f.source]],
                         among, k, window, float(NO_RANK))
    elif f.daily:  # genre_affinity, device_affinity, daypart_affinity
        out = K.decayed_share(rows.offsets, rows.day_off, rows.key,
                              rows.metrics[_AMOUNT[f.source]], k, window,
                              AFFINITY_HALF_LIFE_DAYS)
    else:  # pragma: no cover - rules.parse_rule admits only catalog features
        raise KeyError(feature)
    chunk.cache[spec] = out
    return out
