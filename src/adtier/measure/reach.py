"""Campaign reports and frequency distributions: exact, SQL-side, privacy-folded.

Metric definitions (VAST 4 tracking events, IAB/MRC terms). Every count is over the campaign's
stored ``ad_events`` (deduplicated at ingest: one event per ``event_id``, and one per ad play and
event for pixels) whose event time ``ts`` falls on a UTC day in ``[from, to]``:

- ``impressions`` — VAST ``Impression`` events: the ad's first frame was rendered (the MRC
  "served/begun to render" impression).
- ``reach`` — exact number of distinct profiles with at least one impression (``uniqExact``
  over the 64-bit profile hash, no sketch).
- ``avg_frequency`` — impressions / reach.
- ``starts`` — VAST ``start`` (playback began); ``first_quartile``, ``midpoint``,
  ``third_quartile``, ``completes`` — VAST ``firstQuartile``/``midpoint``/``thirdQuartile``/
  ``complete``: playback reached 25/50/75/100 % of the creative's duration.
- ``vcr`` — video completion rate: completes / impressions.
- ``skips`` — VAST ``skip`` (the viewer skipped a skippable ad); ``skip_rate`` = skips / starts.
- ``clicks`` — VAST ``ClickTracking``; ``ctr`` = clicks / impressions.
- ``viewable_impressions`` — VAST ``ViewableImpression/Viewable``: the MRC video
  viewability standard, at least 50 % of the player's pixels in view for 2 consecutive seconds;
  ``not_viewable_impressions`` — ``NotViewable`` (measured, never met the criteria);
  ``undetermined`` — ``ViewUndetermined`` (the player could not measure).
  ``measurable_impressions`` = viewable + not viewable (MRC "measured"), and ``viewable_rate``
  = viewable_impressions / measurable_impressions: undetermined impressions are reported apart,
  never counted as not viewable.
- ``errors`` — VAST ``Error`` events (codes 100–902), before or during play.

Ratios are 0 when their denominator is 0. A row's privacy coverage (``profiles``, not released)
is the number of distinct profiles with any event in the row; see ``privacy.py``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

from adtier.measure.cells import COUNT_METRICS, CellRows, attribution_rank, cell_rows
from adtier.measure.privacy import Folded, fold_small_rows, fold_until_k

__all__ = ["DIMENSIONS", "COUNT_METRICS", "SOURCES", "REPORT_SOURCES", "Source", "report",
           "report_cells", "frequency", "frequency_cells", "data_through", "metrics",
           "MIN_DATE", "MAX_DATE"]

MIN_DATE = dt.date(1970, 1, 1)
MAX_DATE = dt.date(2149, 6, 6)

DIMENSIONS: dict[str, str] = {
    "day": "toString(toDate(ts))",
    "device": "toString(device)",
    "country": "toString(country)",
    "creative": "toString(creative_id)",
    "break_position": "ifNull(toString(break_position), 'unknown')",
}


# Distinct profiles are counted exactly over ``profile_hash`` (cityHash64 of the profile id,
# materialized in ad_events): a 64-bit key is ~3x cheaper to hash-set than the string, and two
# of 10M profiles collide with probability ~3e-6. Per-cell sets are kept as uniqExact states so
# the totals row merges them instead of scanning the events twice.
#
# Three sources answer the same report. ``cells`` (the default, ``cells.py``) reads bitmaps of
# profile ordinals per cell (sql/0011) and is the only one that is fast at 10M+ impressions a
# campaign; the two below count distinct profile hashes. ``rollup`` (frequency's default)
# reads ``ad_campaign_daily`` (sql/0007): one row per (campaign, day, device, country,
# creative, break position, profile) with its counts by event type, filled by a materialized
# view — several times fewer rows than the events and no ``type`` column to read. ``events``
# reads ``ad_events`` directly (what the endpoint did before the rollup; kept as the reference
# the bench and tests compare against). The two per-profile sources leave out erased profiles by hash: the rollup cannot be cleaned by the erasure's
# ``DELETE ... WHERE profile_id``, and late events of an erased profile stay out in both.
_NOT_ERASED = "profile_hash NOT IN (SELECT profile_hash FROM erasures)"


@dataclass(frozen=True)
class Source:
    table: str
    day: str  # the UTC day of a row
    dimensions: dict[str, str]
    counts: dict[str, str]  # metric -> aggregate over the rows
    impression: str  # a row with at least one impression
    through: str  # the newest event time covered

    def range(self) -> str:
        return (f"campaign_id = {{campaign_id:String}} AND {self.day} "
                f"BETWEEN {{date_from:Date}} AND {{date_to:Date}} AND {_NOT_ERASED}")

    def through_sql(self) -> str:
        """The campaign's newest stored event time, any day (the answers' ``data_through``)."""
        return f"SELECT {self.through} FROM {self.table} WHERE campaign_id = {{campaign_id:String}}"

    def cell(self) -> str:
        return ", ".join(
            ["uniqExactState(profile_hash) AS profiles_state",
             f"uniqExactStateIf(profile_hash, {self.impression}) AS reach_state"]
            + [f"{agg} AS n_{name}" for name, agg in self.counts.items()])

    def aggregates(self) -> str:
        """Coverage and metrics of a set of cells; counts are named ``n_<metric>`` (an alias
        named like a rollup column would shadow the column inside the other aggregates)."""
        return ", ".join(
            ["uniqExact(profile_hash) AS profiles",
             f"uniqExactIf(profile_hash, {self.impression}) AS reach"]
            + [f"{agg} AS n_{name}" for name, agg in self.counts.items()])


SOURCES: dict[str, Source] = {
    "events": Source(
        table="ad_events", day="toDate(ts)", dimensions=DIMENSIONS,
        counts={name: f"countIf(type = '{t}')" for name, t in COUNT_METRICS.items()},
        impression="type = 'impression'", through="max(ts)"),
    "rollup": Source(
        table="ad_campaign_daily", day="day",
        dimensions={"day": "toString(day)", "device": "toString(device)",
                    "country": "toString(country)", "creative": "toString(creative_id)",
                    "break_position": "toString(break_position)"},
        counts={name: f"sum({name})" for name in COUNT_METRICS},
        impression="impressions > 0", through="max(max_ts)"),
}

# What ``report`` can read: the bitmaps (default), or one of the per-profile SOURCES.
REPORT_SOURCES = ("cells", *SOURCES)

_MERGED = ", ".join(
    ["uniqExactMerge(profiles_state) AS profiles", "uniqExactMerge(reach_state) AS reach"]
    + [f"sum(n_{name}) AS {name}" for name in COUNT_METRICS]
)
_NAMES = ["profiles", "reach", *COUNT_METRICS]


def _ratio(a: int, b: int) -> float:
    return round(a / b, 6) if b else 0.0


def _metrics(values: dict[str, int]) -> dict[str, Any]:
    """The released metrics of one row (coverage is dropped here)."""
    v = {name: int(values[name]) for name in ("reach", *COUNT_METRICS)}
    return {
        "impressions": v["impressions"],
        "reach": v["reach"],
        "avg_frequency": _ratio(v["impressions"], v["reach"]),
        "starts": v["starts"],
        "first_quartile": v["first_quartile"],
        "midpoint": v["midpoint"],
        "third_quartile": v["third_quartile"],
        "completes": v["completes"],
        "vcr": _ratio(v["completes"], v["impressions"]),
        "skips": v["skips"],
        "skip_rate": _ratio(v["skips"], v["starts"]),
        "clicks": v["clicks"],
        "ctr": _ratio(v["clicks"], v["impressions"]),
        "viewable_impressions": v["viewable_impressions"],
        "not_viewable_impressions": v["not_viewable_impressions"],
        "measurable_impressions": v["viewable_impressions"] + v["not_viewable_impressions"],
        "viewable_rate": _ratio(v["viewable_impressions"],
                                v["viewable_impressions"] + v["not_viewable_impressions"]),
        "undetermined": v["undetermined"],
        "errors": v["errors"],
    }


metrics = _metrics  # the released metrics of a row's counts (``measure.noisy`` too)


def utc_iso(value: Any) -> str | None:
    return _utc_iso(value)


def _utc_iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        if value.year <= 1970:
            return None
        return value.isoformat()
    return str(value)


def report(client: Client, campaign_id: str, by: str, date_from: dt.date, date_to: dt.date,
           k: int, source: str = "cells") -> dict[str, Any]:
    """One campaign's report by ``by``: rows (each covering >= k profiles), the suppressed
    remainder (released only if it reaches k), totals (released only if they reach k).

    ``cells`` (the default) answers from the profile bitmaps (``cells.py``) and falls back to
    ``rollup`` for a range with events that carry no profile ordinal."""
    got = report_cells(client, campaign_id, by, date_from, date_to, source)
    return _release(got, campaign_id, by, date_from, date_to, k)


def report_cells(client: Client, campaign_id: str, by: str, date_from: dt.date,
                 date_to: dt.date, source: str = "cells") -> CellRows:
    """The report's exact cells, before any release rule (``measure.noisy`` releases them to
    advertiser keys)."""
    got = None
    if source == "cells":
        got = cell_rows(client, campaign_id, by, date_from, date_to)
        source = "rollup"
    if got is None:
        got = _profile_rows(client, SOURCES[source], campaign_id, by, date_from, date_to)
    return got


def _profile_rows(client: Client, src: Source, campaign_id: str, by: str, date_from: dt.date,
                  date_to: dt.date) -> CellRows:
    """The report's cells from per-profile rows (the rollup or the events)."""
    dim = src.dimensions[by]
    params = {"campaign_id": campaign_id, "date_from": date_from, "date_to": date_to}
    through_sql = src.through_sql()
    sql = (f"SELECT key, grouping(key) AS is_total, {_MERGED}, ({through_sql}) AS through "
           f"FROM (SELECT {dim} AS key, {src.cell()} FROM {src.table} WHERE {src.range()} "
           "GROUP BY key) GROUP BY GROUPING SETS ((key), ()) ORDER BY is_total, key")
    result = client.query(sql, parameters=params)
    rows = [dict(zip(result.column_names, r)) for r in result.result_rows]

    def merge(keys: list[str]) -> dict[str, int]:
        got = client.query(
            f"SELECT {src.aggregates()} FROM {src.table} WHERE {src.range()} "
            f"AND {dim} IN {{keys:Array(String)}}",
            parameters={**params, "keys": list(keys)})
        return {name.removeprefix("n_"): value
                for name, value in zip(got.column_names, got.result_rows[0])}

    def attributed() -> dict[str, int]:
        got = client.query(
            "SELECT key, count() AS reach FROM ("
            f"SELECT profile_hash, argMin(row_key, {attribution_rank(by, 'profile_hash')}) "
            f"AS key FROM (SELECT profile_hash, {dim} AS row_key FROM {src.table} "
            f"WHERE {src.range()} AND {src.impression}) GROUP BY profile_hash) GROUP BY key",
            parameters=params)
        return {str(k): int(n) for k, n in got.result_rows}

    totals = next((r for r in rows if r["is_total"]), None)
    through = totals["through"] if totals is not None else None
    if through is None:
        through = client.query(through_sql, parameters=params).result_rows[0][0]
    return CellRows([r for r in rows if not r["is_total"]], totals, through, merge, attributed)


def _release(got: CellRows, campaign_id: str, by: str, date_from: dt.date, date_to: dt.date,
             k: int) -> dict[str, Any]:
    """Fold rows under k into the remainder and release what reaches k."""
    # A cell whose every profile is erased is no row (the per-profile sources never see it).
    cells = [r for r in got.cells if r["profiles"]]
    remainder_values: dict[str, int] = {}

    def coverage(keys: list) -> int:
        remainder_values.clear()
        remainder_values.update(got.merge(list(keys)))
        return int(remainder_values["profiles"])

    folded: Folded = fold_small_rows(cells, k, "key")
    folded, rest = fold_until_k(folded, k, "key", coverage)
    released = sorted(folded.released, key=lambda r: r["key"])
    suppressed = None
    if folded.folded_keys and rest >= k:
        suppressed = _metrics(remainder_values)
    totals = None
    if got.totals is not None and got.totals["profiles"] >= k:
        totals = _metrics(got.totals)
    return {
        "campaign_id": campaign_id,
        "by": by,
        "from": date_from.isoformat(),
        "to": date_to.isoformat(),
        "k": k,
        "rows": [{by: r["key"], **_metrics(r)} for r in released],
        "totals": totals,
        "suppressed_rows": len(folded.folded_keys),
        "suppressed": suppressed,
        "data_through": _utc_iso(got.through),
    }


def data_through(client: Client, campaign_id: str, source: str = "rollup") -> str | None:
    """The report's ``data_through`` for answers that are not the report: the newest stored
    event time of the campaign (any day, not only the range asked), None before any event."""
    src = SOURCES[source]
    value = client.query(src.through_sql(),
                         parameters={"campaign_id": campaign_id}).result_rows[0][0]
    return _utc_iso(value)


def frequency_cells(client: Client, campaign_id: str, date_from: dt.date, date_to: dt.date,
                    source: str = "rollup"
                    ) -> tuple[str | None, dict[int, list[int]], dict[dt.date, int]]:
    """The frequency's exact inputs: ``data_through``, [profiles, impressions] by bucket
    (1..9, 10 = 10+) and new profiles by their first day."""
    src = SOURCES[source]
    params = {"campaign_id": campaign_id, "date_from": date_from, "date_to": date_to}
    count = "count()" if source == "events" else "sum(impressions)"
    sql = ("SELECT least(n, 10) AS bucket, first_day, count() AS profiles, sum(n) AS imps "
           f"FROM (SELECT profile_hash, {count} AS n, min({src.day}) AS first_day "
           f"FROM {src.table} WHERE {src.range()} AND {src.impression} GROUP BY profile_hash) "
           "GROUP BY bucket, first_day ORDER BY bucket, first_day")
    # read before the rows: an event stored between the two reads is then in the rows but not
    # claimed (read after, data_through could claim an event the rows lack)
    through = data_through(client, campaign_id, source)
    rows = client.query(sql, parameters=params).result_rows
    by_bucket: dict[int, list[int]] = {}
    new_by_day: dict[dt.date, int] = {}
    for bucket, day, profiles, imps in rows:
        b = by_bucket.setdefault(int(bucket), [0, 0])
        b[0] += int(profiles)
        b[1] += int(imps)
        new_by_day[day] = new_by_day.get(day, 0) + int(profiles)
    return through, by_bucket, new_by_day


def frequency(client: Client, campaign_id: str, date_from: dt.date, date_to: dt.date,
              k: int, source: str = "rollup") -> dict[str, Any]:
    """Profiles by impression count (1..9, 10+) and cumulative reach by day, from one query
    (plus the report's ``data_through``).

    Buckets are disjoint sets of profiles, so the folded remainder's size is their sum; the
    distribution plus the remainder sums to reach. Cumulative reach is released at a day only
    when it grew by at least ``k`` profiles since the previous released day (so no difference of
    two released points describes fewer than ``k`` profiles); the last point is the total.
    """
    through, by_bucket, new_by_day = frequency_cells(client, campaign_id, date_from, date_to,
                                                     source)
    reach = sum(b[0] for b in by_bucket.values())
    impressions = sum(b[1] for b in by_bucket.values())
    if reach < k:
        return {"campaign_id": campaign_id, "k": k, "reach": None, "impressions": None,
                "avg_frequency": None, "distribution": [], "suppressed": None,
                "suppressed_rows": len(by_bucket), "cumulative_reach": [],
                "data_through": through}
    cells = [{"key": b, "profiles": v[0], "impressions": v[1]} for b, v in by_bucket.items()]
    folded = fold_small_rows(cells, k, "key")
    folded, rest = fold_until_k(
        folded, k, "key", lambda keys: sum(by_bucket[x][0] for x in keys))
    released = {r["key"]: r for r in folded.released}
    distribution = []
    for b in range(1, 11):
        label = "10+" if b == 10 else str(b)
        r = released.get(b)
        if r is not None:
            distribution.append({"frequency": label, "profiles": r["profiles"],
                                 "impressions": r["impressions"]})
        elif b not in by_bucket:
            distribution.append({"frequency": label, "profiles": 0, "impressions": 0})
    suppressed = None
    if folded.folded_keys and rest >= k:
        suppressed = {"frequencies": sorted("10+" if x == 10 else str(x)
                                            for x in folded.folded_keys),
                      "profiles": rest,
                      "impressions": sum(by_bucket[x][1] for x in folded.folded_keys)}
    # cumulative reach by day, every day from the first to the last day with new reach
    days = sorted(new_by_day)
    points: list[dict[str, Any]] = []
    cumulative, released_at = 0, 0
    day = days[0]
    while day <= days[-1]:
        cumulative += new_by_day.get(day, 0)
        if cumulative - released_at >= k:
            points.append({"day": day.isoformat(), "reach": cumulative})
            released_at = cumulative
        day += dt.timedelta(days=1)
    if points and points[-1]["reach"] != reach:
        # the tail grew by fewer than k: the last released point becomes the total
        points[-1] = {"day": days[-1].isoformat(), "reach": reach}
    return {
        "campaign_id": campaign_id,
        "k": k,
        "reach": reach,
        "impressions": impressions,
        "avg_frequency": _ratio(impressions, reach),
        "distribution": distribution,
        "suppressed": suppressed,
        "suppressed_rows": len(folded.folded_keys),
        "cumulative_reach": points,
        "data_through": through,
    }
