"""Batch features: the segment builder's pre-aggregation and kernels, written to
``profile_features`` only for profiles whose features changed (so exports stay incremental).

``compute(client)`` walks the profile-hash space in chunks (``segments.aggregate_arrow.iter_chunks``:
one row per profile x day x key label, from ClickHouse as Arrow, kids / opted-out / erased
profiles excluded in the SQL), derives every feature of ``schema.COLUMNS`` with the Numba kernels
of ``segments.kernels`` (windowed sums, Beta-smoothed rates, decayed key shares), adds two
per-chunk aggregates the segment families do not carry (ratings; the completion-vs-frequency
regression sums for ad fatigue), compares each profile's values with its latest stored row and
inserts only the new or changed ones, stamped with a fresh ``watermark``. Then
``sync_exclusions`` writes tombstones (``deleted = 1``) for stored profiles that became kids,
opted out or erased; an erased profile's earlier rows are deleted outright, and its tombstone
keeps only ``profile_sha256``. Profiles with no event in the window keep their last row.

Stamps come from ``watermark.stamped``: a stamp stays registered as in flight until its insert
committed, so a concurrent export never reads past it (see ``watermark``). With a Redis client
(the server, the CLI) the registry is shared through Valkey and every written row is also
mirrored there for the point look-up (``mirror``); the exclusion mirror is re-derived at the
end of each run, and the whole mirror rebuilt if it is missing (a new or replaced Valkey).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import redis
from clickhouse_connect.driver.client import Client

from adtier.privacy.exclusions import excluded_profile_hashes_sql
from adtier.features import mirror
from adtier.features import schema as S
from adtier.features.live import forget
from adtier.features.watermark import Stamps, stamped, stamps_for
from adtier.segments import kernels as K
from adtier.segments.aggregate import CTR_PRIOR, RATE_PRIOR, Plan, as_of
from adtier.segments.aggregate_arrow import iter_chunks

__all__ = ["ComputeResult", "compute", "sync_exclusions", "TABLE"]

TABLE = "profile_features"
_STORED = [name for name, _, _ in S.COLUMNS] + ["profile_hash"]
# what decides "changed": every value but the bookkeeping ones (a tombstone differs by deleted)
_COMPARED = ["deleted"] + [c for c in S.FEATURE_COLUMNS
                           if c not in ("as_of", "computed_at", "schema_version")]


@dataclass
class ComputeResult:
    as_of: dt.date
    profiles: int = 0
    written: int = 0
    tombstones: int = 0
    watermark: int = 0
    mirrored: int = 0  # rows written to the Valkey mirror (0 without a Redis client)


def _labels(client: Client) -> tuple[list[str], list[str]]:
    cats = [r[0] for r in client.query(
        "SELECT DISTINCT argMax(ad_category, version) AS c FROM campaigns GROUP BY campaign_id "
        "HAVING c != '' ORDER BY c").result_rows]
    genres = [r[0] for r in client.query(
        "SELECT DISTINCT arrayJoin(genres) AS g FROM titles FINAL ORDER BY g").result_rows]
    return [""] + [f"cat:{c}" for c in cats], [""] + [f"genre:{g}" for g in genres]


def _range_where() -> str:
    return ("profile_hash BETWEEN {lo:UInt64} AND {hi:UInt64} "
            "AND toDate(ts) BETWEEN {start:Date} AND {as_of:Date} "
            f"AND profile_hash NOT IN ({excluded_profile_hashes_sql()})")


_RATINGS_SQL = f"""
SELECT profile_hash, toFloat64(count()) AS n, toFloat64(sum(value)) AS total
FROM content_events WHERE {_range_where()} AND type = 'rating' AND value IS NOT NULL
GROUP BY profile_hash"""

# Per ad play (ad_serving_id): its ordinal among the profile's plays of that campaign that day
# (x = 1, 2, ...) and whether it completed (y); per profile the sums of a least-squares fit.
_FATIGUE_SQL = f"""
SELECT profile_hash, toFloat64(count()) AS n, toFloat64(sum(x)) AS sx, toFloat64(sum(y)) AS sy,
       toFloat64(sum(x * x)) AS sxx, toFloat64(sum(x * y)) AS sxy
FROM (
    SELECT profile_hash, y,
           toFloat64(row_number() OVER (PARTITION BY profile_hash, campaign_id, d ORDER BY t)) AS x
    FROM (
        SELECT profile_hash, campaign_id, ad_serving_id, min(ts) AS t, toDate(min(ts)) AS d,
               toFloat64(countIf(type = 'complete') > 0) AS y
        FROM ad_events
        WHERE {_range_where()} AND type IN ('impression', 'complete')
        GROUP BY profile_hash, campaign_id, ad_serving_id
        HAVING countIf(type = 'impression') > 0
    )
)
GROUP BY profile_hash"""


# Per ad session (profile x session_id with an impression): impressions, watch hours (each
# play's largest watched_ms, summed; at least MIN_SESSION_HOURS) and whether the session's last
# event (ad or viewing) came at most ABANDON_WINDOW_S after its last ad event. Per profile:
# sessions, abandoned ones, and the impression / hour sums over all and over abandoned ones.
_TOLERANCE_SQL = f"""
SELECT profile_hash, toFloat64(count()) AS sessions, toFloat64(countIf(abandoned)) AS abandons,
       sum(s_imps) AS imps, sum(s_hours) AS hours,
       sumIf(s_imps, abandoned) AS a_imps, sumIf(s_hours, abandoned) AS a_hours
FROM (
    SELECT profile_hash, session_id, sum(imps) AS s_imps,
           greatest(sum(ms) / 3600000.0, {{min_hours:Float64}}) AS s_hours,
           max(last_ts) - max(last_ad) <= {{gap_ms:Int64}} AS abandoned
    FROM (
        SELECT profile_hash, session_id, toFloat64(countIf(type = 'impression')) AS imps,
               toFloat64(0) AS ms, max(toUnixTimestamp64Milli(ts)) AS last_ad,
               max(toUnixTimestamp64Milli(ts)) AS last_ts
        FROM ad_events WHERE {_range_where()}
        GROUP BY profile_hash, session_id
        UNION ALL
        SELECT profile_hash, session_id, toFloat64(0), toFloat64(sum(play_ms)), toInt64(0),
               max(play_last)
        FROM (
            SELECT profile_hash, session_id, content_id,
                   max(ifNull(watched_ms, 0)) AS play_ms,
                   max(toUnixTimestamp64Milli(ts)) AS play_last
            FROM content_events WHERE {_range_where()}
            GROUP BY profile_hash, session_id, content_id
        )
        GROUP BY profile_hash, session_id
    )
    GROUP BY profile_hash, session_id
    HAVING s_imps > 0
)
GROUP BY profile_hash"""


def _align(table, hashes: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Columns of a per-profile_hash table, aligned with the chunk's hashes (0 where absent)."""
    out = {name: np.zeros(hashes.shape[0]) for name in names}
    if table.num_rows == 0 or hashes.shape[0] == 0:
        return out
    row_hash = table.column("profile_hash").to_numpy()
    idx = np.minimum(np.searchsorted(hashes, row_hash), hashes.shape[0] - 1)
    hit = hashes[idx] == row_hash
    for name in names:
        out[name][idx[hit]] = table.column(name).to_numpy()[hit]
    return out


def _shares(matrix: np.ndarray, labels: list[str]) -> list[dict[str, float]]:
    names = [label.split(":", 1)[1] for label in labels[1:]]
    m32 = matrix.astype(np.float32)
    out = []
    for row in m32:
        nz = np.flatnonzero(row)
        out.append({names[j]: float(row[j]) for j in nz})
    return out


def _fingerprint(values: dict[str, list], i: int) -> tuple:
    parts = []
    for name in _COMPARED:
        v = values[name][i]
        if isinstance(v, dict):
            v = tuple(sorted(v.items()))
        elif isinstance(v, list):  # a Map read back through Arrow: [(key, value), ...]
            v = tuple(sorted(v))
        parts.append(v)
    return tuple(parts)


def _existing(client: Client, lo: int, hi: int) -> dict[int, tuple]:
    table = client.query_arrow(
        f"SELECT profile_hash, {', '.join(_COMPARED)} FROM {TABLE} FINAL "
        "WHERE profile_hash BETWEEN {lo:UInt64} AND {hi:UInt64}",
        parameters={"lo": lo, "hi": hi})
    if table.num_rows == 0:
        return {}
    values = {name: table.column(name).to_pylist() for name in _COMPARED}
    hashes = table.column("profile_hash").to_pylist()
    return {h: _fingerprint(values, i) for i, h in enumerate(hashes)}


def _chunk_rows(client: Client, chunk, plan: Plan, day: dt.date) -> dict[str, list]:
    n = chunk.size
    window = S.WINDOW_DAYS
    ad = chunk.families["ad"]
    content = chunk.families["content"]
    sums = K.windowed_sums(ad.offsets, ad.day_off, ad.key,
                           np.column_stack([ad.metrics[m] for m in
                                            ("impressions", "completes", "skips", "clicks")])
                           if ad.day_off.shape[0] else np.zeros((0, 4)),
                           np.zeros(1, np.int32), window)[:, 0, :]
    imp, cmpl, skp, clk = (sums[:, j].copy() for j in range(4))
    ad_labels, genre_labels = plan.labels["ad"], plan.labels["content"]
    cat_shares = K.key_shares(ad.offsets, ad.day_off, ad.key, ad.metrics["impressions"],
                              len(ad_labels) - 1, window, 0.0)
    minutes = K.windowed_sum(content.offsets, content.day_off, content.key,
                             content.metrics["minutes"], 0, window)
    genre_shares = K.key_shares(content.offsets, content.day_off, content.key,
                                content.metrics["minutes"], len(genre_labels) - 1, window,
                                S.GENRE_HALF_LIFE_DAYS)
    lo, hi = int(chunk.hashes[0]), int(chunk.hashes[-1])
    params = {"lo": lo, "hi": hi, "as_of": day,
              "start": day - dt.timedelta(days=window - 1)}
    ratings = _align(client.query_arrow(_RATINGS_SQL, parameters=params), chunk.hashes,
                     ("n", "total"))
    fat = _align(client.query_arrow(_FATIGUE_SQL, parameters=params), chunk.hashes,
                 ("n", "sx", "sy", "sxx", "sxy"))
    denom = fat["n"] * fat["sxx"] - fat["sx"] ** 2
    slope = np.where(denom > 0, (fat["n"] * fat["sxy"] - fat["sx"] * fat["sy"])
                     / np.where(denom > 0, denom, 1.0), 0.0)
    fatigue = slope * fat["n"] / (fat["n"] + S.FATIGUE_SHRINK)
    sentiment = ratings["total"] / (ratings["n"] + S.RATING_PRIOR_WEIGHT)
    tol = _align(client.query_arrow(_TOLERANCE_SQL, parameters={
        **params, "min_hours": S.MIN_SESSION_HOURS, "gap_ms": S.ABANDON_WINDOW_S * 1000}),
        chunk.hashes, ("sessions", "abandons", "imps", "hours", "a_imps", "a_hours"))
    ad_load = np.divide(tol["imps"], tol["hours"], out=np.zeros(n), where=tol["hours"] > 0)
    tolerance = np.where(tol["abandons"] > 0,
                         np.divide(tol["a_imps"], tol["a_hours"], out=np.zeros(n),
                                   where=tol["a_hours"] > 0),
                         ad_load)

    def f32(a: np.ndarray) -> list[float]:
        return a.astype(np.float32).tolist()

    def u32(a: np.ndarray) -> list[int]:
        return np.rint(a).astype(np.uint32).tolist()

    ids = chunk.profile_ids.tolist()
    return {
        "profile_hash": chunk.hashes.tolist(),
        "profile_id": ids,
        "profile_sha256": [mirror.profile_sha256(p) for p in ids],
        "deleted": [0] * n,
        "schema_version": [S.FEATURE_SCHEMA_VERSION] * n,
        "as_of": [day] * n,
        "window_days": [window] * n,
        "impressions": u32(imp),
        "completes": u32(cmpl),
        "skips": u32(skp),
        "clicks": u32(clk),
        "completion_rate": f32(K.beta_rate(cmpl, imp, *RATE_PRIOR)),
        "skip_propensity": f32(K.beta_rate(skp, imp, *RATE_PRIOR)),
        "ctr": f32(K.beta_rate(clk, imp, *CTR_PRIOR)),
        "ad_category_affinity": _shares(cat_shares, ad_labels),
        "watch_minutes": f32(minutes),
        "genre_affinity": _shares(genre_shares, genre_labels),
        "ratings": u32(ratings["n"]),
        "rating_sentiment": f32(sentiment),
        "ad_fatigue": f32(fatigue),
        "ad_sessions": u32(tol["sessions"]),
        "post_ad_abandons": u32(tol["abandons"]),
        "ad_load": f32(ad_load),
        "ad_tolerance": f32(tolerance),
    }


def _insert(client: Client, rows: dict[str, list], keep: list[int], watermark: int,
            computed_at: dt.datetime) -> None:
    columns = []
    for name in _STORED:
        if name == "computed_at":
            columns.append([computed_at] * len(keep))
        elif name == "watermark":
            columns.append([watermark] * len(keep))
        else:
            src = rows[name]
            columns.append([src[i] for i in keep])
    client.insert(TABLE, columns, column_names=_STORED, column_oriented=True)


def _mirror(redis_client: redis.Redis, rows: Iterable[tuple[str, bytes]]) -> int:
    """Copy written rows to the look-up mirror. If that fails the rows are in ClickHouse but
    the next compute skips them (unchanged), so the mirror is marked not ready: look-ups then
    read ClickHouse and the scheduler rebuilds it."""
    try:
        return mirror.put_rows(redis_client, rows)
    except redis.RedisError:
        try:
            redis_client.delete(mirror.READY_KEY)
        except redis.RedisError:
            pass  # Valkey is down: a replaced Valkey has no ready mark anyway
        raise


def _mirror_rows(rows: dict[str, list], keep: list[int], watermark: int,
                 computed_at: dt.datetime):
    names = mirror.BATCH_NAMES
    for i in keep:
        yield rows["profile_id"][i], mirror.encode_row(
            watermark, computed_at, [rows[name][i] for name in names])


def compute(client: Client, day: dt.date | None = None, chunk_profiles: int = 200_000,
            progress: Callable[[int, int], None] | None = None,
            redis_client: redis.Redis | None = None) -> ComputeResult:
    """Compute every eligible profile's features; write the changed ones; write tombstones.
    Pass ``redis_client`` whenever a server serves look-ups from the same Valkey (it mirrors
    the written rows there, and shares the in-flight stamps with exports)."""
    stamps = stamps_for(redis_client)
    if day is None:
        day, _ = as_of(client)
    ad_labels, genre_labels = _labels(client)
    plan = Plan(labels={"ad": ad_labels, "content": genre_labels}, lookback_days=S.WINDOW_DAYS)
    result = ComputeResult(as_of=day)
    computed_at = dt.datetime.now(dt.timezone.utc)
    for done, total, chunk in iter_chunks(client, plan, day, chunk_profiles,
                                   universe_days=S.WINDOW_DAYS):
        if chunk.size:
            rows = _chunk_rows(client, chunk, plan, day)
            old = _existing(client, int(chunk.hashes[0]), int(chunk.hashes[-1]))
            keep = [j for j, h in enumerate(rows["profile_hash"])
                    if old.get(h) != _fingerprint(rows, j)]
            if keep:
                with stamped(stamps) as mark:
                    _insert(client, rows, keep, mark, computed_at)
                result.watermark = mark
                if redis_client is not None:
                    result.mirrored += _mirror(redis_client,
                                               _mirror_rows(rows, keep, mark, computed_at))
            result.profiles += chunk.size
            result.written += len(keep)
        if progress is not None:
            progress(done + 1, total)
    tombstones, mark = sync_exclusions(client, redis_client, stamps)
    result.tombstones = tombstones
    result.watermark = max(result.watermark, mark)
    if redis_client is not None:
        if mirror.is_ready(redis_client):
            mirror.sync_excluded(client, redis_client)
        else:  # a new or replaced Valkey: the rows written above are not all there is
            mirror.rebuild(client, redis_client)
    return result


def sync_exclusions(client: Client, redis_client: redis.Redis | None = None,
                    stamps: Stamps | None = None) -> tuple[int, int]:
    """Tombstones for stored live profiles now excluded; answers (tombstones, watermark).
    With ``redis_client``, their live counters and mirrored rows are deleted too, and they
    join the exclusion mirror."""
    rows = client.query(
        f"SELECT profile_hash, profile_id, profile_sha256, "
        f"profile_hash IN (SELECT profile_hash FROM erasures) AS erased "
        f"FROM {TABLE} FINAL WHERE deleted = 0 "
        f"AND profile_hash IN ({excluded_profile_hashes_sql()})").result_rows
    if not rows:
        return 0, 0
    now = dt.datetime.now(dt.timezone.utc)
    data = []
    for h, pid, sha, erased in rows:
        values = {"profile_hash": h, "profile_id": "" if erased else pid, "profile_sha256": sha,
                  "deleted": 1, "schema_version": S.FEATURE_SCHEMA_VERSION,
                  "as_of": now.date(), "window_days": S.WINDOW_DAYS,
                  "ad_category_affinity": {}, "genre_affinity": {},
                  "computed_at": now}
        data.append([values.get(c, 0) for c in _STORED])
    watermark_at = _STORED.index("watermark")
    with stamped(stamps or stamps_for(redis_client)) as mark:
        for row in data:
            row[watermark_at] = mark
        client.insert(TABLE, data, column_names=_STORED)
    if redis_client is not None:
        pids = [pid for _, pid, _, _ in rows]
        redis_client.sadd(mirror.EXCLUDED_KEY, *(sha for _, _, sha, _ in rows))
        mirror.drop_rows(redis_client, pids)
        forget(redis_client, pids)
    erased = [h for h, _, _, e in rows if e]
    if erased:  # the erased profile's earlier rows still hold its id: remove them now
        client.command(f"ALTER TABLE {TABLE} DELETE WHERE deleted = 0 AND profile_hash IN "
                       "{h:Array(UInt64)} SETTINGS mutations_sync = 2", parameters={"h": erased})
    return len(rows), mark
