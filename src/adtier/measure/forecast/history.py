"""The history SQL: the forecast's window and eligible universe (``scope``), the per-profile
impression counts by 24 h block (``history``) and the campaigns that really ran (``flights``).
Bound parameters only; excluded profiles and holdouts are filtered here."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
from clickhouse_connect.driver.client import Client

from adtier.catalog.holdouts import HOLDOUT_SQL
from adtier.privacy.exclusions import excluded_profile_hashes_sql
from adtier.measure.forecast.backtest import Flight, halves

__all__ = ["HISTORY_DAYS_MAX", "SAMPLE_MAX", "FLIGHTS_MAX", "FLIGHT_MIN_REACH", "tier1", "scope",
           "history", "flights"]


HISTORY_DAYS_MAX = 28


SAMPLE_MAX = 200_000  # eligible profiles read per forecast; above, a stable hash sample


FLIGHTS_MAX = 50  # campaigns backtested per request, the largest: bounds the cost


FLIGHT_MIN_REACH = 50  # sampled profiles: below, one campaign's relative error is mostly noise


# Per profile: impressions by 24 h block (v); of the plan's category over the whole history
# (c); of each flight's category over the backtest's first half (fc); and whether it is in each
# flight's holdout (hf, the catalog's own rule); identical rows counted once. An impression's
# category is its campaign's tier-1 IAB id from the catalog.
_VECTORS = """
WITH universe AS (__UNIVERSE__)
SELECT v, c, fc, hf, count() AS profiles
FROM (
    SELECT arrayMap(d -> toUInt32(countEqual(ds, d)), range(toUInt32({blocks:UInt32}))) AS v,
           toUInt32(countEqual(cs, {category:String})) AS c,
           arrayMap(k -> toUInt32(arrayCount((d, x) -> x = k AND d >= {first_from:UInt32}
                                                      AND d < {first_to:UInt32}, ds, cs)),
                    {flight_categories:Array(String)}) AS fc,
           arrayMap((cid, pct) -> __HOLDOUT__,
                    {holdout_ids:Array(String)}, {holdout_percents:Array(Float64)}) AS hf
    FROM (
        SELECT e.profile_id AS profile_id,
               groupArray(toUInt32(intDiv(toUnixTimestamp64Milli(e.ts) - {start_ms:Int64},
                                          86400000))) AS ds,
               groupArray(__CATEGORY__) AS cs
        FROM ad_events AS e __JOIN__
        WHERE e.type = 'impression' AND e.ts >= {start:DateTime64(3)}
          AND e.ts < {end:DateTime64(3)}
          AND e.profile_id IN (SELECT profile_id FROM universe)
        GROUP BY e.profile_id
    )
)
GROUP BY v, c, fc, hf
"""


_CATEGORY_JOIN = ("LEFT JOIN (SELECT campaign_id, splitByChar('-', ad_category)[1] AS category "
                  "FROM campaigns FINAL) AS k ON e.campaign_id = k.campaign_id")


# the catalog's holdout rule with the campaign and its share as lambda arguments, so one pass
# flags every flight's holdout
_HOLDOUT_LAMBDA = HOLDOUT_SQL.replace("{campaign_id:String}", "cid").replace(
    "{holdout_percent:Float64}", "pct")


_NO_CATEGORY = "-"  # matches no IAB id: the plan names no category


def tier1(category: str | None) -> str:
    """The tier-1 IAB id a category's delivery is learnt from (``IAB19-6`` -> ``IAB19``):
    campaigns are served by interest in the tier-1 category, and it has more history."""
    return category.split("-")[0] if category else ""


def _universe_sql(segment_keys: list[str], sampled: bool = False) -> str:
    excluded = excluded_profile_hashes_sql()
    sample = " AND cityHash64(profile_id) % 1000000 < {ppm:UInt64}" if sampled else ""
    if segment_keys:
        return ("SELECT DISTINCT profile_id FROM segment_members WHERE "
                "concat(segment_id, ':', toString(version)) IN {segments:Array(String)} "
                f"AND profile_hash NOT IN ({excluded}){sample}")
    return ("SELECT profile_id FROM profiles FINAL WHERE kind != 'kids' "
            f"AND cityHash64(profile_id) NOT IN ({excluded}){sample}")


def _window(client: Client, days: int) -> tuple[dt.datetime, int]:
    """The history's end (just after the newest impression) and its whole 24 h blocks: twice
    the plan, at most ``HISTORY_DAYS_MAX``, at most what the data spans (at least 2)."""
    end, first = client.query("SELECT max(ts), min(ts) FROM ad_events").result_rows[0]
    if end is None or end.year <= 1970:
        end = first = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    end = end + dt.timedelta(milliseconds=1)
    span = math.floor((end - first).total_seconds() / 86_400)
    return end, max(2, min(HISTORY_DAYS_MAX, 2 * days, span))


def scope(client: Client, segment_keys: list[str], days: int) -> dict[str, Any]:
    """The history's window and universe: its end and 24 h blocks, the eligible profiles and
    the hash sample read (``ppm``) with the weight that scales it back to the universe."""
    end, blocks = _window(client, days)
    universe = int(client.query(f"SELECT count() FROM ({_universe_sql(segment_keys)})",
                                parameters={"segments": segment_keys}).result_rows[0][0])
    sampled = universe > SAMPLE_MAX
    ppm = max(1, round(1_000_000 * SAMPLE_MAX / universe)) if sampled else 1_000_000
    n = universe
    if sampled:
        n = int(client.query(f"SELECT count() FROM ({_universe_sql(segment_keys, True)})",
                             parameters={"segments": segment_keys, "ppm": ppm}
                             ).result_rows[0][0])
    return {"universe": universe, "sampled": n, "weight": universe / n if n else 0.0,
            "blocks": blocks, "through": end, "ppm": ppm}


def history(client: Client, segment_keys: list[str], s: dict[str, Any], days: int,
            category: str = "", flights: list[Flight] | None = None) -> dict[str, Any]:
    """The universe's per-profile impression counts by 24 h block over the recent history
    (distinct rows with their profile counts, zero profiles as one all-zero row) and, in the
    same pass, what targets a campaign: per row its impressions of the plan's ``category``
    (whole history), of each flight's category (the backtest's first half) and whether it is
    in each flight's holdout."""
    flights = flights or []
    blocks, end = s["blocks"], s["through"]
    start = end - dt.timedelta(days=blocks)
    first, _ = halves(blocks, days)
    flight_categories = sorted({f.category for f in flights if f.category})
    held = [f for f in flights if f.holdout_percent > 0]
    joined = bool(category or flight_categories)
    sql = (_VECTORS.replace("__UNIVERSE__", _universe_sql(segment_keys, s["ppm"] < 1_000_000))
           .replace("__HOLDOUT__", _HOLDOUT_LAMBDA)
           .replace("__JOIN__", _CATEGORY_JOIN if joined else "")
           .replace("__CATEGORY__", "k.category" if joined else "''"))
    epoch = dt.datetime(1970, 1, 1)
    rows = client.query(sql, parameters={
        "segments": segment_keys, "ppm": s["ppm"], "blocks": blocks, "start": start,
        "end": end, "start_ms": int((start - epoch) / dt.timedelta(milliseconds=1)),
        "category": category or _NO_CATEGORY, "first_from": int(first[0]),
        "first_to": int(first[-1]) + 1, "flight_categories": flight_categories,
        "holdout_ids": [f.campaign_id for f in held],
        "holdout_percents": [float(f.holdout_percent) for f in held]}).result_rows
    k, m = len(flight_categories), len(held)
    vectors = np.array([list(r[0]) for r in rows], np.int64).reshape(len(rows), blocks)
    plan_category = np.array([r[1] for r in rows], np.int64)
    flight_counts = np.array([list(r[2]) for r in rows], np.int64).reshape(len(rows), k)
    holdout = np.array([list(r[3]) for r in rows], bool).reshape(len(rows), m)
    counts = np.array([r[4] for r in rows], np.float64)
    zeros = s["sampled"] - counts.sum()
    if zeros > 0:  # no slots: never served, whatever their category or holdout
        vectors = np.vstack([vectors, np.zeros((1, blocks), np.int64)])
        plan_category = np.append(plan_category, 0)
        flight_counts = np.vstack([flight_counts, np.zeros((1, k), np.int64)])
        holdout = np.vstack([holdout, np.zeros((1, m), bool)])
        counts = np.append(counts, zeros)
    return {**s, "vectors": vectors, "counts": counts, "plan_category": plan_category,
            "flight_categories": flight_categories, "flight_category_counts": flight_counts,
            "holdout_ids": [f.campaign_id for f in held], "holdout": holdout}


def plan_days(vectors: np.ndarray, columns: np.ndarray, multipliers: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """The plan's day columns of every row, sorted within the row (a profile's day order
    does not change its count), and the rows' delivery weights: identical (days, weight)
    rows are computed once. Returns the distinct days, their weights and the inverse."""
    picked = np.sort(vectors[:, columns], axis=1)
    if multipliers is None:
        rows, inverse = np.unique(picked, axis=0, return_inverse=True)
        return rows, None, inverse.reshape(-1)
    keys = np.hstack([picked.astype(np.float64), multipliers[:, None]])
    rows, inverse = np.unique(keys, axis=0, return_inverse=True)
    return rows[:, :-1].astype(np.int64), rows[:, -1], inverse.reshape(-1)


_FLIGHTS = """
WITH universe AS (__UNIVERSE__)
SELECT campaign_id, count() AS impressions, uniqExact(profile_id) AS reach
FROM ad_events
WHERE type = 'impression' AND ts >= {start:DateTime64(3)} AND ts < {end:DateTime64(3)}
  AND profile_id IN (SELECT profile_id FROM universe)
GROUP BY campaign_id
HAVING reach >= {min_reach:UInt64}
ORDER BY impressions DESC, campaign_id
LIMIT {limit:UInt32}
"""


def flights(client: Client, segment_keys: list[str], h: dict[str, Any], days: int
            ) -> list[Flight]:
    """The campaigns of the backtest's second half: their impressions and distinct profiles
    among the universe (the history's sample when it is sampled) and their catalog caps,
    categories and holdouts. A campaign missing from the catalog is left out: its cap is
    unknown."""
    _, second = halves(h["blocks"], days)
    end = h["through"]
    params = {"segments": segment_keys, "ppm": h["ppm"], "end": end,
              "start": end - dt.timedelta(days=len(second)), "min_reach": FLIGHT_MIN_REACH,
              "limit": FLIGHTS_MAX}
    sql = _FLIGHTS.replace("__UNIVERSE__", _universe_sql(segment_keys, h["ppm"] < 1_000_000))
    served = client.query(sql, parameters=params).result_rows
    if not served:
        return []
    catalog = {c: rest for c, *rest in client.query(
        "SELECT campaign_id, frequency_cap, ad_category, holdout_percent FROM campaigns FINAL "
        "WHERE campaign_id IN {ids:Array(String)}",
        parameters={"ids": [c for c, _, _ in served]}).result_rows}
    return [Flight(int(i), int(r), int(catalog[c][0]), c, tier1(catalog[c][1]),
                   float(catalog[c][2])) for c, i, r in served if c in catalog]
