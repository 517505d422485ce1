"""Per-profile feature pre-aggregation in ClickHouse, returned as Arrow, in chunks of profiles.

ClickHouse does the heavy part near the data: it reduces raw events to one row per
(profile, day, key label) for the few labels a rule needs, and only for the event families the
rule uses (``ad``, ``content``, ``activity``). The rows come back with ``query_arrow`` and go
straight into NumPy arrays in CSR form (sorted by profile) for the kernels in ``kernels``.

Profiles are processed in chunks: the 64-bit ``profile_hash`` space is cut into equal ranges so
each chunk holds about ``chunk_profiles`` profiles; memory is bounded by one chunk's rows,
however many profiles there are. Every query excludes kids', opted-out and erased profiles
(``excluded_profile_hashes_sql``), so they never reach a kernel, let alone a segment.

Label index 0 of every family is the total over all keys; other labels are ``cat:<IAB id>``,
``cmp:<campaign id>`` (ad), ``genre:<genre>``, ``title:<content id>`` (content), ``dev:<device>``,
``dp:<daypart>`` (activity).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from clickhouse_connect.driver.client import Client

from adtier.catalog import excluded_profile_hashes_sql
from adtier.segments import kernels as K
from adtier.segments.rules import FEATURES, Predicate

__all__ = [
    "UNIVERSE_DAYS",
    "CTR_PRIOR",
    "RATE_PRIOR",
    "Plan",
    "Rows",
    "Chunk",
    "plan_for",
    "as_of",
    "hash_ranges",
    "estimate_profiles",
    "load_chunk",
    "iter_chunks",
    "feature_values",
]

UNIVERSE_DAYS = 90  # the eligible universe: profiles with any event in the last 90 days
RATE_PRIOR = (1.0, 1.0)  # Beta(1, 1) for completion and skip rates: 1 of 1 is 2/3, not 100 %
CTR_PRIOR = (0.5, 49.5)  # Beta(0.5, 49.5): mean 1 %, worth 50 impressions
_FAMILIES = ("ad", "content", "activity")
_DAYPART_SQL = ("multiIf(toHour(ts) < 6, 'late_night', toHour(ts) < 12, 'morning', "
                "toHour(ts) < 18, 'afternoon', 'evening')")


def label_of(feature: str, key: str | None) -> str:
    """The key label a (feature, key) reads: '' (the total) when there is no key."""
    if key is None:
        return ""
    kind = FEATURES[feature].key_kind
    prefix = {"category": "cat:", "campaign": "cmp:", "genre": "genre:", "title": "title:",
              "device": "dev:", "daypart": "dp:"}[kind]
    return prefix + key


@dataclass
class Plan:
    """What to fetch: per family its labels (index 0 = ''), and how many days back."""

    labels: dict[str, list[str]] = field(default_factory=dict)
    lookback_days: int = 1

    def index(self, family: str, label: str) -> int:
        return self.labels[family].index(label)


def plan_for(preds: Iterable[Predicate]) -> Plan:
    plan = Plan()
    lookback = 1
    for p in preds:
        feature = FEATURES[p.feature]
        labels = plan.labels.setdefault(feature.source, [""])
        label = label_of(p.feature, p.key)
        if label not in labels:
            labels.append(label)
        lookback = max(lookback, p.window_days or UNIVERSE_DAYS)
    plan.lookback_days = lookback
    return plan


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
    profile_ids: np.ndarray  # object (str), aligned with hashes
    families: dict[str, Rows]
    plan: Plan
    cache: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.hashes.shape[0])


def as_of(client: Client) -> tuple[dt.date, dt.datetime | None]:
    """The build's as-of day (the day of the latest stored event, at most today) and that time."""
    row = client.query(
        "SELECT max(m) FROM (SELECT max(ts) AS m FROM ad_events "
        "UNION ALL SELECT max(ts) AS m FROM content_events)"
    ).result_rows[0][0]
    now = dt.datetime.now(dt.timezone.utc)
    if row is None or row.year < 2000:  # empty tables answer the epoch
        return now.date(), None
    through = row.replace(tzinfo=dt.timezone.utc) if row.tzinfo is None else row
    through = min(through, now)
    return through.date(), through


def hash_ranges(n_chunks: int) -> list[tuple[int, int]]:
    """``n_chunks`` contiguous inclusive ranges covering the whole UInt64 space."""
    n_chunks = max(1, n_chunks)
    bounds = [(i * 2**64) // n_chunks for i in range(n_chunks + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(n_chunks)]


def _range_sql(extra_where: str = "") -> str:
    extra = f" AND {extra_where}" if extra_where else ""
    return ("profile_hash BETWEEN {lo:UInt64} AND {hi:UInt64} "
            "AND toDate(ts) BETWEEN {start:Date} AND {as_of:Date} "
            f"AND profile_hash NOT IN ({excluded_profile_hashes_sql()}){extra}")


def estimate_profiles(client: Client, day: dt.date, days: int) -> int:
    start = day - dt.timedelta(days=days - 1)
    row = client.query(
        "SELECT uniq(profile_hash) FROM (SELECT profile_hash FROM ad_events "
        "WHERE toDate(ts) BETWEEN {start:Date} AND {as_of:Date} UNION ALL "
        "SELECT profile_hash FROM content_events WHERE toDate(ts) BETWEEN {start:Date} AND "
        "{as_of:Date})", parameters={"start": start, "as_of": day}).result_rows[0][0]
    return int(row)


def _universe_sql(extra: str = "") -> str:
    return (
        "SELECT profile_hash, any(profile_id) AS profile_id FROM ("
        f"SELECT profile_hash, profile_id FROM ad_events WHERE {_range_sql(extra)} "
        f"UNION ALL SELECT profile_hash, profile_id FROM content_events WHERE {_range_sql(extra)}"
        ") GROUP BY profile_hash ORDER BY profile_hash"
    )


def _key_expr(labels_param: str, parts: list[str]) -> str:
    """arrayJoin of key 0 (the total) and the indexes of the row's labels that are wanted."""
    found = ", ".join(f"toInt32(indexOf({{{labels_param}:Array(String)}}, {p}) - 1)"
                      for p in parts)
    if not found:
        return "toInt32(0)"
    return f"arrayJoin(arrayConcat([toInt32(0)], arrayFilter(x -> x > 0, [{found}])))"


def _ad_sql(labels: list[str], extra: str = "") -> str:
    with_cat = any(label.startswith("cat:") for label in labels)
    parts = ["concat('cmp:', campaign_id)"]
    join = ""
    if with_cat:
        parts.append("concat('cat:', category)")
        join = ("LEFT JOIN (SELECT campaign_id, argMax(ad_category, version) AS category "
                "FROM campaigns GROUP BY campaign_id) AS c USING campaign_id")
    return f"""
SELECT profile_hash, day_off, {_key_expr('labels', parts)} AS key,
       sum(imp) AS impressions, sum(cmpl) AS completes, sum(skp) AS skips, sum(clk) AS clicks
FROM (
    SELECT profile_hash, toInt32(dateDiff('day', toDate(ts), {{as_of:Date}})) AS day_off,
           campaign_id,
           toFloat64(countIf(type = 'impression')) AS imp,
           toFloat64(countIf(type = 'complete')) AS cmpl,
           toFloat64(countIf(type = 'skip')) AS skp,
           toFloat64(countIf(type = 'click')) AS clk
    FROM ad_events
    WHERE {_range_sql(extra)} AND type IN ('impression', 'complete', 'skip', 'click')
    GROUP BY profile_hash, day_off, campaign_id
) AS a {join}
GROUP BY profile_hash, day_off, key
ORDER BY profile_hash"""


def _content_sql(labels: list[str], extra: str = "") -> str:
    with_genre = any(label.startswith("genre:") for label in labels)
    parts = ["concat('title:', content_id)"]
    join = ""
    key = _key_expr("labels", parts)
    if with_genre:
        join = ("LEFT JOIN (SELECT content_id, argMax(genres, version) AS genres "
                "FROM titles GROUP BY content_id) AS t USING content_id")
        key = ("arrayJoin(arrayConcat([toInt32(0)], arrayFilter(x -> x > 0, arrayConcat("
               "[toInt32(indexOf({labels:Array(String)}, concat('title:', content_id)) - 1)], "
               "arrayMap(g -> toInt32(indexOf({labels:Array(String)}, concat('genre:', g)) - 1), "
               "genres)))))")
    return f"""
SELECT profile_hash, day_off, {key} AS key,
       sum(ms) / 60000.0 AS minutes, toFloat64(count()) AS plays
FROM (
    SELECT profile_hash, toInt32(dateDiff('day', toDate(ts), {{as_of:Date}})) AS day_off,
           session_id, content_id, toFloat64(max(ifNull(watched_ms, 0))) AS ms
    FROM content_events
    WHERE {_range_sql(extra)}
    GROUP BY profile_hash, day_off, session_id, content_id
) AS p {join}
GROUP BY profile_hash, day_off, key
ORDER BY profile_hash"""


def _activity_sql(labels: list[str], extra: str = "") -> str:
    key = _key_expr("labels", ["concat('dev:', device)", f"concat('dp:', {_DAYPART_SQL})"])
    return f"""
SELECT profile_hash, toInt32(dateDiff('day', toDate(ts), {{as_of:Date}})) AS day_off,
       {key} AS key, toFloat64(count()) AS events, toFloat64(uniqExact(session_id)) AS sessions
FROM (
    SELECT profile_hash, ts, device, session_id FROM ad_events WHERE {_range_sql(extra)}
    UNION ALL
    SELECT profile_hash, ts, device, session_id FROM content_events WHERE {_range_sql(extra)}
)
GROUP BY profile_hash, day_off, key
ORDER BY profile_hash"""


_SQL = {"ad": _ad_sql, "content": _content_sql, "activity": _activity_sql}
_METRICS = {"ad": ("impressions", "completes", "skips", "clicks"),
            "content": ("minutes", "plays"), "activity": ("events", "sessions")}


def _rows(table, hashes: np.ndarray, metrics: tuple[str, ...]) -> Rows:
    row_hash = table.column("profile_hash").to_numpy()
    n = hashes.shape[0]
    if n == 0 or row_hash.shape[0] == 0:
        pick = idx = np.zeros(0, np.int64)
    else:
        idx = np.minimum(np.searchsorted(hashes, row_hash), n - 1)
        pick = np.flatnonzero(hashes[idx] == row_hash)  # rows of profiles in the universe
        idx = idx[pick]
        if idx.shape[0] > 1 and np.any(idx[1:] < idx[:-1]):  # ClickHouse sorted them already
            order = np.argsort(idx, kind="stable")
            idx, pick = idx[order], pick[order]
    return Rows(
        offsets=K.csr_offsets(idx.astype(np.int64), n),
        day_off=table.column("day_off").to_numpy()[pick].astype(np.int32),
        key=table.column("key").to_numpy()[pick].astype(np.int32),
        metrics={m: table.column(m).to_numpy()[pick].astype(np.float64) for m in metrics},
    )


def load_chunk(client: Client, plan: Plan, day: dt.date, lo: int, hi: int,
               universe_days: int = UNIVERSE_DAYS, extra_where: str = "",
               extra_params: dict | None = None) -> Chunk:
    """The universe of one hash range and the rows of each family the plan needs.

    ``extra_where`` (with its bound ``extra_params``) narrows every query further, e.g. to the
    members of a seed segment."""
    base = {"lo": lo, "hi": hi, "as_of": day, **(extra_params or {})}
    universe = client.query_arrow(
        _universe_sql(extra_where),
        parameters={**base, "start": day - dt.timedelta(days=max(universe_days,
                                                                 plan.lookback_days) - 1)},
    )
    hashes = universe.column("profile_hash").to_numpy()
    ids = np.asarray(universe.column("profile_id").to_pylist(), dtype=object)
    families: dict[str, Rows] = {}
    start = day - dt.timedelta(days=plan.lookback_days - 1)
    for family in _FAMILIES:
        labels = plan.labels.get(family)
        if labels is None:
            continue
        table = client.query_arrow(_SQL[family](labels, extra_where),
                                   parameters={**base, "start": start, "labels": labels})
        families[family] = _rows(table, hashes, _METRICS[family])
    return Chunk(hashes, ids, families, plan)


def iter_chunks(client: Client, plan: Plan, day: dt.date, chunk_profiles: int = 200_000,
                universe_days: int = UNIVERSE_DAYS) -> Iterator[tuple[int, int, Chunk]]:
    """(chunk number, chunk count, chunk) over the whole profile-hash space."""
    estimate = estimate_profiles(client, day, max(universe_days, plan.lookback_days))
    n = max(1, math.ceil(estimate / max(1, chunk_profiles)))
    for i, (lo, hi) in enumerate(hash_ranges(n)):
        yield i, n, load_chunk(client, plan, day, lo, hi, universe_days)


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

    if feature in ("ad_impressions", "campaign_exposures"):
        out = wsum("impressions")
    elif feature == "ad_completes":
        out = wsum("completes")
    elif feature == "ad_skips":
        out = wsum("skips")
    elif feature == "ad_clicks":
        out = wsum("clicks")
    elif feature == "ad_completion_rate":
        out = K.beta_rate(wsum("completes"), wsum("impressions"), *RATE_PRIOR)
    elif feature == "ad_skip_rate":
        out = K.beta_rate(wsum("skips"), wsum("impressions"), *RATE_PRIOR)
    elif feature == "ad_ctr":
        out = K.beta_rate(wsum("clicks"), wsum("impressions"), *CTR_PRIOR)
    elif feature == "watch_minutes":
        out = wsum("minutes")
    elif feature == "genre_share":
        out = K.safe_share(wsum("minutes"), wsum("minutes", 0))
    elif feature == "watched_title":
        out = (wsum("plays") > 0).astype(np.float64)
    elif feature == "sessions":
        out = wsum("sessions")
    elif feature == "active_days":
        out = K.windowed_days(rows.offsets, rows.day_off, rows.key, rows.metrics["events"], 0,
                              window)
    elif feature == "days_since_active":
        out = K.days_since(rows.offsets, rows.day_off, 1_000_000)
    elif feature in ("device_share", "daypart_share"):
        out = K.safe_share(wsum("events"), wsum("events", 0))
    else:  # pragma: no cover - rules.parse_rule admits only catalog features
        raise KeyError(feature)
    chunk.cache[spec] = out
    return out
