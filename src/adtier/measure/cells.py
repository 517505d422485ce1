"""Campaign report cells from profile bitmaps (sql/0011): the fast source of ``reach.report``.

``ad_campaign_cells`` holds, per (campaign, dimension, day, value), roaring bitmaps of the dense
ordinals of the profiles seen and reached, and the VAST counters. A report row is an OR of its
days' bitmaps and a sum of their counters; the totals row is an OR of the rows. Erased profiles
leave the bitmaps by ``bitmapAndnot`` with their ordinals and the counters by subtracting their
events, which the erasure copied to ``ad_erased_events`` (no profile in that table).

The answer is the per-profile rollup's, number for number (tests/integration/
test_measure_cells.py). A range with events that came without an ordinal (``unassigned``: a
loader that bypassed the allocator) is not answered here: ``cell_rows`` returns None and the
report reads the rollup.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

__all__ = ["COUNTERS", "COUNT_METRICS", "CellRows", "cell_rows", "ATTRIBUTION"]

# report metric -> VAST event type it counts (reach.py documents each metric)
COUNT_METRICS: dict[str, str] = {
    "impressions": "impression",
    "starts": "start",
    "first_quartile": "first_quartile",
    "midpoint": "midpoint",
    "third_quartile": "third_quartile",
    "completes": "complete",
    "skips": "skip",
    "clicks": "click",
    "viewable_impressions": "viewable_impression",
    "not_viewable_impressions": "not_viewable",
    "undetermined": "view_undetermined",
    "errors": "error",
}
COUNTERS = tuple(COUNT_METRICS)

# The report's `by` -> (the cells' dimension, its key; the erased events' key)
_KEYS: dict[str, tuple[str, str, str]] = {
    "day": ("day", "toString(day)", "toString(day)"),
    "device": ("device", "value", "toString(device)"),
    "country": ("country", "value", "toString(country)"),
    "creative": ("creative", "value", "toString(creative_id)"),
    "break_position": ("break_position", "value", "toString(break_position)"),
}

# Ordinals of erased profiles: erasures keep the hex SHA-256, profile_ordinals its first 16 bytes.
_ERASED = """(SELECT groupBitmapState(ord) FROM profile_ordinals
    WHERE profile_key IN (SELECT toFixedString(unhex(substring(profile_sha256, 1, 32)), 16)
                          FROM erasures))"""
_RANGE = ("campaign_id = {campaign_id:String} AND dim = {dim:String} "
          "AND day BETWEEN {date_from:Date} AND {date_to:Date}")


def _merged(prefix: str) -> str:
    """Released values over rows of ``_PER_KEY`` (named apart: an alias named like the column
    it aggregates would shadow that column)."""
    return ", ".join(
        [(f"bitmapCardinality(bitmapAndnot(groupBitmapMergeState({prefix}profiles), erased)) "
          "AS profiles"),
         (f"bitmapCardinality(bitmapAndnot(groupBitmapMergeState({prefix}reach), erased)) "
          "AS reach"),
         f"sum({prefix}unassigned) AS unassigned"]
        + [f"sum({prefix}{name}) AS {name}" for name in COUNTERS])


_PER_KEY = ", ".join(["groupBitmapMergeState(profiles) AS c_profiles",
                      "groupBitmapMergeState(reach) AS c_reach",
                      "sum(unassigned) AS c_unassigned"]
                     + [f"sum({name}) AS c_{name}" for name in COUNTERS])


# Contribution bound of the noisy report's row reach: every profile is counted in one row.
# ``by=day``: its first day in the range (the row's reach is the day's new profiles);
# otherwise the row with the smallest hash of (profile, key): one of its rows, uniformly, the
# same on every ask. The rank is a function of the profile's own rows only, so adding or
# removing one profile changes one row's count by one.
ATTRIBUTION: dict[str, str] = {"day": "row_key"}
_HASH_RANK = "cityHash64({who}, row_key)"


def attribution_rank(by: str, who: str) -> str:
    return ATTRIBUTION.get(by, _HASH_RANK.format(who=who))


def _first_days(client: Client, params: dict[str, Any]) -> dict[str, int]:
    """``by=day`` attribution with bitmaps alone: each day's reached profiles less those of
    the days before it (one fold over the days in order), no per-profile rows."""
    got = client.query(f"""
        WITH {_ERASED} AS erased
        SELECT arrayFold((acc, d) -> (bitmapOr(acc.1, d.2),
                                      arrayPushBack(acc.2, (d.1, bitmapCardinality(
                                          bitmapAndnot(d.2, acc.1))))),
                         arraySort(x -> x.1, groupArray((row_key, bm))),
                         (bitmapAndnot(erased, erased), [('', toUInt64(0))])).2
        FROM (SELECT toString(day) AS row_key,
                     bitmapAndnot(groupBitmapMergeState(reach), erased) AS bm
              FROM ad_campaign_cells WHERE {_RANGE} GROUP BY row_key)""", parameters=params)
    pairs = got.result_rows[0][0] if got.result_rows else []
    return {str(key): int(n) for key, n in pairs if key and n}


@dataclass
class CellRows:
    """One report's cells (``key`` and values each), its totals, and how to merge a subset;
    ``attributed()``: reach per key with every profile counted in one row (``ATTRIBUTION``)."""

    cells: list[dict[str, Any]]
    totals: dict[str, Any] | None
    through: Any
    merge: Callable[[list[str]], dict[str, int]]
    attributed: Callable[[], dict[str, int]] | None = None


def _rows(client: Client, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    result = client.query(sql, parameters=params)
    return [dict(zip(result.column_names, r)) for r in result.result_rows]


def _erased_counts(client: Client, key: str, params: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Events of erased profiles per key (to subtract from the counters)."""
    counts = ", ".join(f"countIf(type = '{t}') AS {name}"
                       for name, t in COUNT_METRICS.items())
    rows = _rows(client, f"""
        SELECT {key} AS key, {counts} FROM ad_erased_events FINAL
        WHERE campaign_id = {{campaign_id:String}}
          AND day BETWEEN {{date_from:Date}} AND {{date_to:Date}}
        GROUP BY key""", params)
    return {r.pop("key"): r for r in rows}


def _subtract(values: dict[str, Any], erased: list[dict[str, int]]) -> dict[str, Any]:
    out = dict(values)
    for name in COUNTERS:
        out[name] = int(values[name]) - sum(e[name] for e in erased)
    return out


# The report's data_through: the newest stored event of the campaign, any day.
_THROUGH = ("SELECT max(max_ts) FROM ad_campaign_cells "
            "WHERE campaign_id = {campaign_id:String} AND dim = 'day'")


def cell_rows(client: Client, campaign_id: str, by: str, date_from: dt.date,
              date_to: dt.date) -> CellRows | None:
    """The report's cells from the bitmaps, or None if the range has unassigned events."""
    dim, key, erased_key = _KEYS[by]
    params = {"campaign_id": campaign_id, "dim": dim, "date_from": date_from,
              "date_to": date_to}
    rows = _rows(client, f"""
        WITH {_ERASED} AS erased
        SELECT key, grouping(key) AS is_total, {_merged("c_")},
               ({_THROUGH}) AS through,
               (SELECT count() FROM ad_erased_events
                WHERE campaign_id = {{campaign_id:String}}
                  AND day BETWEEN {{date_from:Date}} AND {{date_to:Date}}) AS erased_events
        FROM (SELECT {key} AS key, {_PER_KEY} FROM ad_campaign_cells WHERE {_RANGE}
              GROUP BY key)
        GROUP BY GROUPING SETS ((key), ())
        ORDER BY is_total, key""", params)
    total = next((r for r in rows if r["is_total"]), None)
    if total is not None and total["unassigned"]:
        return None
    # Most ranges have no erased events: then the second query is not needed.
    erased = _erased_counts(client, erased_key, params) if total and total["erased_events"] else {}
    cells = [_subtract(r, [erased[r["key"]]] if r["key"] in erased else [])
             for r in rows if not r["is_total"]]
    totals = _subtract(total, list(erased.values())) if total is not None else None
    # A range without cells has no rows to carry it, but the campaign may have data elsewhere.
    through = (rows[0]["through"] if rows
               else client.query(_THROUGH, parameters=params).result_rows[0][0])

    def merge(keys: list[str]) -> dict[str, int]:
        got = _rows(client, f"""
            WITH {_ERASED} AS erased
            SELECT {_merged("c_")} FROM (
                SELECT {_PER_KEY} FROM ad_campaign_cells
                WHERE {_RANGE} AND {key} IN {{keys:Array(String)}})""",
                    {**params, "keys": keys})[0]
        return _subtract(got, [erased[k] for k in keys if k in erased])

    def attributed() -> dict[str, int]:
        if by == "day":
            return _first_days(client, params)
        got = client.query(f"""
            SELECT key, count() AS reach FROM (
                SELECT ord, argMin(row_key, {attribution_rank(by, "ord")}) AS key FROM (
                    SELECT row_key, arrayJoin(bitmapToArray(bm)) AS ord FROM (
                        WITH {_ERASED} AS erased
                        SELECT {key} AS row_key,
                               bitmapAndnot(groupBitmapMergeState(reach), erased) AS bm
                        FROM ad_campaign_cells WHERE {_RANGE} GROUP BY row_key))
                GROUP BY ord)
            GROUP BY key""", parameters=params)
        return {str(k): int(n) for k, n in got.result_rows}

    return CellRows(cells, totals, through, merge, attributed)
