"""Content effects of a promotional campaign: did it make people start the promoted title?

**With a holdout** (``holdout_percent > 0``): profiles are assigned to the campaign's holdout by
a stable hash of the profile and campaign ids (``adtier.catalog.holdouts``: ``HOLDOUT_SQL`` here,
``bucket`` per profile). Ad decisioning gets the same assignment from the segment look-up,
``GET /v1/profiles/{id}/segments`` (``holdout_campaigns``; OpenRTB segment
``holdout:<campaign_id>``), answered from a Valkey mirror of the campaigns with a holdout that
the campaign upsert writes; an ad server that honours it never serves the holdout, so the two
arms are a randomised experiment. The analysis is *intent-to-treat*:

- **Universe**: every eligible profile (not a kid, not opted out, not erased) with an ad
  impression of any campaign during the flight — an ad opportunity, in which the holdout would
  be served a filler instead. Its **assignment time** is that first in-flight impression (defined
  the same way in both arms: a treated profile counts whether or not it was served the campaign).
- **Outcome window**: the sessions a profile starts from the day after its assignment day, for
  ``days`` days (default 7). A session *starts the target* when any of its ``content_start``
  events is the promoted title (or a title of the promoted genre).
- **Metrics**, per arm: the share of window sessions that start the target (a ratio estimator,
  variance by linearisation clustered by profile), the share of profiles that start it at least
  once (a proportion), and the minutes of the target watched per profile in the window (a mean;
  a play's minutes are its largest ``watched_ms``). **Lift** = treated − holdout, with a 95 %
  normal-approximation confidence interval (``diff ± 1.96 * sqrt(se_t^2 + se_h^2)``), plus the
  relative lift.
- **Exposed share**: the treated arm's profiles that were served the campaign at least once, and
  the share of its window sessions started after the day of the profile's first impression of
  the campaign; ``per_exposed_session`` divides the session lift (and its interval) by the
  latter — the effect on sessions that could have been influenced (an instrumental-variable /
  complier estimate, valid when the holdout is never served: ``holdout_served`` counts the
  holdout profiles that were served the campaign anyway, and should be 0).

**Without a holdout**, the same outcome is compared between profiles of the universe who were
served the campaign and those who were not: ``kind = "observational"``, field ``difference``.
It is never called lift: exposure was targeted, so the groups differ in taste and activity.

**Ad-induced abandonment** (``abandonment``): a break (the ad events of one ``pod_id`` in one
session) is *followed by abandonment* when nothing else happens in that session more than 60 s
after the break's last ad event (the viewer left). The share of the campaign's breaks (breaks
with at least one of its ads) followed by abandonment is compared with the baseline of every
other break in the flight (difference of proportions, breaks as units, normal 95 % CI), and the
rate by pod size (1, 2, 3, 4+ ads, all breaks) shows whether long pods drive viewers away. This is
observational: which break carries the campaign is not randomised.

**Freshness**: ``data_through`` is the report's (the newest stored ad event of the campaign);
the outcome is viewing, which arrives on its own, so the answer also says how far it reaches.
``outcome_data_through`` is the newest stored ``content_events`` time (UTC ISO, None before any
viewing), and ``outcome_window_complete`` is true when it has reached the end of the outcome
window the answer used: midnight UTC after flight end + ``days`` (the last day a session can
count). While false, the latest-assigned profiles' windows are still filling and the answer
may change. (Sessions that run past that midnight add their later minutes from the next day's
events: ``complete`` is about which sessions count, not the last minutes of the last ones.)

Privacy: each compared group must cover at least ``k`` profiles, else nothing is released.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any

from clickhouse_connect.driver.client import Client

from adtier.privacy.exclusions import excluded_profile_hashes_sql
from adtier.measure.privacy import CampaignInfo
from adtier.measure.reach import _utc_iso, data_through
from adtier.catalog.holdouts import HOLDOUT_SQL

__all__ = ["content_effects", "abandonment", "outcome_data_through", "Z95", "ratio_estimate",
           "proportion", "mean_estimate", "arm_stats", "compare"]

Z95 = 1.959963984540054

_SQL = """
WITH
assigned AS (
    SELECT profile_hash, any(profile_id) AS profile_id, min(ts) AS at
    FROM ad_events
    WHERE type = 'impression'
      AND toDate(ts) BETWEEN {flight_start:Date} AND {flight_end:Date}
      AND profile_hash NOT IN (__EXCLUDED__)
    GROUP BY profile_hash
),
exposed AS (
    SELECT profile_hash, min(ts) AS first_seen
    FROM ad_events
    WHERE campaign_id = {campaign_id:String} AND type = 'impression'
    GROUP BY profile_hash
),
plays AS (
    SELECT profile_hash, session_id, content_id, min(ts) AS first_ts,
           max(type = 'content_start') AS started,
           max(ifNull(watched_ms, 0)) AS watched_ms
    FROM content_events
    WHERE type != 'rating'
      AND toDate(ts) BETWEEN {flight_start:Date} AND {window_end:Date}
    GROUP BY profile_hash, session_id, content_id
),
sessions AS (
    SELECT profile_hash, session_id, toDate(minIf(first_ts, started)) AS day,
           max(started AND __HIT__) AS hit,
           sumIf(watched_ms, __HIT__) / 60000 AS target_minutes
    FROM plays
    GROUP BY profile_hash, session_id
    HAVING max(started)
),
per_profile AS (
    SELECT a.profile_hash AS profile_hash,
           any(__ARM__) AS arm,
           any(e.first_seen) > toDateTime64(0, 3) AS was_exposed,
           toFloat64(countIf(s.day > toDate(a.at) AND s.day <= toDate(a.at) + {days:UInt16})) AS n,
           toFloat64(countIf(s.day > toDate(a.at) AND s.day <= toDate(a.at) + {days:UInt16}
                             AND s.hit)) AS y,
           toFloat64(countIf(s.day > toDate(a.at) AND s.day <= toDate(a.at) + {days:UInt16}
                             AND e.first_seen > toDateTime64(0, 3)
                             AND s.day > toDate(e.first_seen))) AS n_after,
           sumIf(s.target_minutes, s.day > toDate(a.at)
                 AND s.day <= toDate(a.at) + {days:UInt16}) AS w
    FROM assigned AS a
    LEFT JOIN exposed AS e ON e.profile_hash = a.profile_hash
    LEFT JOIN sessions AS s ON s.profile_hash = a.profile_hash
    GROUP BY a.profile_hash
)
SELECT arm, count() AS profiles, countIf(was_exposed) AS exposed_profiles,
       sum(cn) AS sn, sum(cy) AS sy, sum(cy * cy) AS syy, sum(cn * cn) AS snn,
       sum(cy * cn) AS syn, countIf(cy > 0) AS starters, sum(cn_after) AS sn_after,
       sum(cw) AS sw, sum(cw * cw) AS sww
FROM (SELECT arm, was_exposed, least(n, {cap_sessions:Float64}) AS cn,
             least(y, {cap_sessions:Float64}) AS cy,
             least(n_after, {cap_sessions:Float64}) AS cn_after,
             least(w, {cap_minutes:Float64}) AS cw
      FROM per_profile)
GROUP BY arm
ORDER BY arm
"""


# Two sources answer the same abandonment numbers. ``rollup`` (the default) reads
# ``ad_breaks_daily`` and ``session_ends_daily`` (sql/0010): one row per break per day and one
# per session per day, filled by materialized views at insert time. ``events`` groups the raw
# ad and viewing events of the flight (the query before the rollup, minutes at 50M
# impressions; kept as the reference the tests and the bench compare against). Sessions and
# pods are keyed by cityHash64 in both, and a pod's size is only used as 1, 2, 3, 4+, so
# uniqUpTo(4) counts its distinct ads exactly that far with a few inline values per pod.
_EVENTS_SQL = """
WITH pods AS (
    SELECT cityHash64(session_id) AS session, max(ts) AS break_end,
           uniqUpTo(4)(ad_serving_id) AS pod_size,
           countIf(campaign_id = {campaign_id:String}) > 0 AS has_campaign,
           any(profile_hash) AS viewer
    FROM ad_events
    WHERE toDate(ts) BETWEEN {flight_start:Date} AND {flight_end:Date} AND pod_id != ''
      AND profile_hash NOT IN (__EXCLUDED__)
    GROUP BY session, cityHash64(pod_id)),
ends AS (
    SELECT session, max(ts) AS last_ts FROM (
        SELECT cityHash64(session_id) AS session, ts FROM content_events
        WHERE toDate(ts) BETWEEN {flight_start:Date} AND {window_end:Date}
        UNION ALL
        SELECT cityHash64(session_id) AS session, ts FROM ad_events
        WHERE toDate(ts) BETWEEN {flight_start:Date} AND {window_end:Date}
    ) GROUP BY session)
SELECT has_campaign, least(pod_size, 4) AS size, grouping(size) AS all_sizes,
       grouping(has_campaign) AS all_breaks,
       count() AS breaks,
       countIf(dateDiff('millisecond', p.break_end, e.last_ts) <= 60000) AS abandoned,
       uniqExact(p.viewer) AS profiles
FROM pods AS p INNER JOIN ends AS e ON e.session = p.session
GROUP BY GROUPING SETS ((has_campaign), (size))
ORDER BY all_breaks, has_campaign, size
"""
# The rollup query runs once per range of session hashes (``lo``..``hi``): a session's breaks
# and ends are in one range, so the ranges' counts add up, and each range's hash tables (its
# breaks, its sessions, the join) hold only its share of the flight. (day, session_hash) is
# the tables' key prefix, so a range reads only its granules of each day. The profiles of a
# cell are only compared with k, so each range returns at most k of them (groupUniqArray(k)
# keeps the first k it sees) and the caller unions them: the union reaches k exactly when the
# distinct profiles over all ranges do, and is their exact count below k. That also spares the
# uniqExact hash sets (hundreds of thousands of profiles per cell at 5M impressions).
_ROLLUP_SQL = """
WITH pods AS (
    SELECT session_hash AS session, max(break_end) AS break_end,
           uniqUpToMerge(4)(ads) AS pod_size,
           max(has(campaigns, {campaign_id:String})) AS has_campaign,
           any(profile_hash) AS viewer
    FROM ad_breaks_daily
    WHERE day BETWEEN {flight_start:Date} AND {flight_end:Date}
      AND session_hash BETWEEN {lo:UInt64} AND {hi:UInt64}
      AND profile_hash NOT IN (__EXCLUDED__)
    GROUP BY session, pod_hash),
ends AS (
    SELECT session_hash AS session, max(last_ts) AS last_ts FROM session_ends_daily
    WHERE day BETWEEN {flight_start:Date} AND {window_end:Date}
      AND session_hash BETWEEN {lo:UInt64} AND {hi:UInt64}
    GROUP BY session)
SELECT has_campaign, least(pod_size, 4) AS size, grouping(size) AS all_sizes,
       grouping(has_campaign) AS all_breaks,
       count() AS breaks,
       countIf(dateDiff('millisecond', p.break_end, e.last_ts) <= 60000) AS abandoned,
       groupUniqArray({k:UInt32})(p.viewer) AS viewers
FROM pods AS p INNER JOIN ends AS e ON e.session = p.session
GROUP BY GROUPING SETS ((has_campaign), (size))
"""
# Break rows per session range: the 5M-impression bench world (5M break rows) is one range;
# each range's query peaks near 1.5 GB of memory there, so larger flights split.
RANGE_BREAK_ROWS = 8_000_000
_MAX_HASH = 2**64 - 1


def _session_ranges(n: int) -> list[tuple[int, int]]:
    """``n`` contiguous ranges of UInt64 session hashes covering all of them."""
    step = (_MAX_HASH + 1) // n
    return [(i * step, _MAX_HASH if i == n - 1 else (i + 1) * step - 1) for i in range(n)]


def _flight_params(campaign: CampaignInfo) -> dict[str, Any]:
    return {"campaign_id": campaign.campaign_id, "flight_start": campaign.start_date,
            "flight_end": campaign.end_date,
            "window_end": campaign.end_date + dt.timedelta(days=1)}


def _events_rows(client: Client, params: dict[str, Any]) -> list[dict[str, Any]]:
    sql = _EVENTS_SQL.replace("__EXCLUDED__", excluded_profile_hashes_sql())
    result = client.query(sql, parameters=params)
    return [dict(zip(result.column_names, r)) for r in result.result_rows]


def _rollup_rows(client: Client, params: dict[str, Any], k: int,
                 range_rows: int) -> list[dict[str, Any]]:
    """The events query's rows (``profiles`` counted up to k), summed over session ranges."""
    rows = client.query("SELECT count() FROM ad_breaks_daily WHERE day BETWEEN "
                        "{flight_start:Date} AND {flight_end:Date}",
                        parameters=params).result_rows[0][0]
    sql = _ROLLUP_SQL.replace("__EXCLUDED__", excluded_profile_hashes_sql())
    cells: dict[tuple[int, int, int, int], dict[str, Any]] = {}
    for lo, hi in _session_ranges(max(1, -(-rows // range_rows))):
        result = client.query(sql, parameters={**params, "lo": lo, "hi": hi, "k": max(k, 1)})
        for values in result.result_rows:
            _add_cell(cells, dict(zip(result.column_names, values)))
    return [{**{n: v for n, v in cell.items() if n != "viewers"},
             "profiles": len(cell["viewers"])} for _, cell in sorted(cells.items())]


def _add_cell(cells: dict[tuple[int, int, int, int], dict[str, Any]],
              row: dict[str, Any]) -> None:
    """Add one range's row to its cell: counts add, profiles union (a profile's sessions can
    fall in several ranges)."""
    key = (row["all_breaks"], row["has_campaign"], row["size"], row["all_sizes"])
    cell = cells.setdefault(key, {**row, "breaks": 0, "abandoned": 0, "viewers": set()})
    cell["breaks"] += row["breaks"]
    cell["abandoned"] += row["abandoned"]
    cell["viewers"].update(row["viewers"])


def abandonment(client: Client, campaign: CampaignInfo, k: int, source: str = "rollup",
                range_rows: int = RANGE_BREAK_ROWS) -> dict[str, Any]:
    """Abandonment after the campaign's breaks vs other breaks, and by pod size."""
    params = _flight_params(campaign)
    rows = (_events_rows(client, params) if source == "events"
            else _rollup_rows(client, params, k, range_rows))
    whole = {int(r["has_campaign"]): r for r in rows if r["all_sizes"]}
    per_size = [r for r in rows if r["all_breaks"]]
    out: dict[str, Any] = {"window_seconds": 60, "kind": "observational"}
    mine, other = whole.get(1), whole.get(0)
    if mine is None or other is None or min(mine["profiles"], other["profiles"]) < k:
        return {**out, "suppressed": True}
    a = proportion(mine["abandoned"], mine["breaks"])
    b = proportion(other["abandoned"], other["breaks"])
    sizes = []
    for r in per_size:
        size, breaks, abandoned = int(r["size"]), int(r["breaks"]), int(r["abandoned"])
        if r["profiles"] < k:
            continue  # a pod size seen by fewer than k profiles is not shown
        rate, se = proportion(abandoned, breaks)
        sizes.append({"pod_size": f"{size}+" if size == 4 else str(size), "breaks": breaks,
                      "abandonment_rate": round(rate, 6),
                      "ci95": [round(rate - Z95 * se, 6), round(rate + Z95 * se, 6)]})
    return {**out, "suppressed": False,
            "campaign_breaks": int(mine["breaks"]), "campaign_rate": round(a[0], 6),
            "baseline_breaks": int(other["breaks"]), "baseline_rate": round(b[0], 6),
            "difference": _diff(a, b), "by_pod_size": sizes}


def ratio_estimate(m: float, sy: float, sn: float, syy: float, snn: float,
                   syn: float) -> tuple[float, float]:
    """Ratio of sums sy/sn over m clusters and its linearised standard error."""
    if sn <= 0 or m < 2:
        return 0.0, math.inf
    r = sy / sn
    resid = max(0.0, syy - 2 * r * syn + r * r * snn)
    return r, math.sqrt(resid * m / (m - 1)) / sn


def mean_estimate(m: float, sw: float, sww: float) -> tuple[float, float]:
    """Mean over m profiles and its standard error."""
    if m < 2:
        return 0.0, math.inf
    mean = sw / m
    return mean, math.sqrt(max(0.0, (sww / m - mean * mean) * m / (m - 1)) / m)


def proportion(x: float, m: float) -> tuple[float, float]:
    if m <= 0:
        return 0.0, math.inf
    p = x / m
    return p, math.sqrt(p * (1 - p) / m)


_UNBOUNDED = {"sessions": 1e18, "minutes": 1e18}

# A normal interval of the noise's own variance covers a Laplace error only 93.7 % of the time
# (P(|L| > 1.96 sd) = exp(-1.96 sqrt 2)): the Laplace's 95 % point is ln(20)/sqrt(2) = 2.118
# sd. The noise's variance enters the standard error times (2.118 / 1.96)^2, so that the
# interval covers 95 % even when one Laplace term dominates the error (the worst case: sums of
# several, and the normal sampling error beside them, have lighter tails).
LAPLACE_WIDENING = (math.log(20) / math.sqrt(2) / 1.959963984540054) ** 2


def _widened(estimate: tuple[float, float], var_num: float, var_den: float,
             den: float) -> tuple[float, float]:
    """An estimate num/den whose num and den carry independent noise of variances var_num and
    var_den: its standard error widened by the noise's (delta method,
    (var_num + r^2 var_den) / den^2, times ``LAPLACE_WIDENING``)."""
    r, se = estimate
    if not (var_num or var_den) or den <= 0:
        return r, se
    noise = LAPLACE_WIDENING * (var_num + r * r * var_den) / (den * den)
    return r, math.sqrt(se * se + noise)


def arm_stats(g: dict[str, Any], name: str, var: dict[str, float]) -> dict[str, Any]:
    """One arm's estimates from its sums ``g``; ``var``: the noise variance of each sum
    (advertiser keys), which widens each standard error."""
    m = float(g["profiles"])
    sess = _widened(ratio_estimate(m, g["sy"], g["sn"], g["syy"], g["snn"], g["syn"]),
                    var.get("sy", 0.0), var.get("sn", 0.0), g["sn"])
    prof = _widened(proportion(g["starters"], m), var.get("starters", 0.0),
                    var.get("profiles", 0.0), m)
    watch = _widened(mean_estimate(m, g["sw"], g["sww"]), var.get("sw", 0.0),
                     var.get("profiles", 0.0), m)
    return {"arm": name, "profiles": int(g["profiles"]),
            "exposed_profiles": int(g["exposed_profiles"]), "sessions": int(g["sn"]),
            "session_start_rate": round(sess[0], 8),
            "profile_start_rate": round(prof[0], 8),
            "target_minutes_per_profile": round(watch[0], 6),
            "_sess": sess, "_prof": prof, "_watch": watch}


def compare(t: dict[str, Any], c: dict[str, Any]) -> list[dict[str, Any]]:
    """The three comparisons of two arms' ``arm_stats``: difference, 95 % CI, relative."""
    return [
        {"metric": "share_of_sessions_starting_target", **_diff(t["_sess"], c["_sess"])},
        {"metric": "share_of_profiles_starting_target", **_diff(t["_prof"], c["_prof"])},
        {"metric": "target_minutes_watched_per_profile", **_diff(t["_watch"], c["_watch"])},
    ]


def _diff(a: tuple[float, float], b: tuple[float, float]) -> dict[str, Any]:
    d = a[0] - b[0]
    se = math.sqrt(a[1] ** 2 + b[1] ** 2)
    return {"estimate": round(d, 8), "ci95": [round(d - Z95 * se, 8), round(d + Z95 * se, 8)],
            "std_error": round(se, 8),
            "relative": round(d / b[0], 6) if b[0] else None}


def outcome_data_through(client: Client) -> dt.datetime | None:
    """The newest stored viewing event time (UTC), None before any. ``ts`` is the partition
    key's column, so ClickHouse answers ``max(ts)`` from each part's min/max index (the
    implicit ``_minmax_count_projection``) without reading a row."""
    value = client.query("SELECT max(ts) FROM content_events").result_rows[0][0]
    if value is None:
        return None
    value = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    return None if value.year <= 1970 else value  # an empty table answers the epoch


def _outcome_freshness(client: Client, window_end: dt.date) -> dict[str, Any]:
    """``outcome_data_through`` and whether it covers the outcome window, which ends at the
    start (midnight UTC) of ``window_end``: the last session counted starts the day before."""
    through = outcome_data_through(client)
    end = dt.datetime.combine(window_end, dt.time(), dt.timezone.utc)
    return {"outcome_data_through": _utc_iso(through),
            "outcome_window_complete": through is not None and through >= end}


def content_effects(client: Client, campaign: CampaignInfo, days: int, k: int,
                    privatize: Callable[[dict[int, dict[str, Any]], Any], tuple[
                        dict[int, dict[str, Any]], dict[int, dict[str, float]]]] | None = None,
                    bounds: dict[str, float] | None = None) -> dict[str, Any]:
    """The content effects; ``privatize`` (advertiser keys: ``measure.noisy``) replaces each
    arm's first-moment sums by noisy ones, given the data version (data_through, outcome),
    and answers the noise variances, which widen each standard error. ``bounds`` caps each
    profile's window ``sessions`` (and of them, target sessions and sessions after exposure)
    and target ``minutes`` before they are summed: the contribution bounds the noise is
    calibrated to (none: exact)."""
    has_holdout = campaign.holdout_percent > 0
    if campaign.promoted_title_id:
        hit = "content_id = {target:String}"
        target = {"promoted_title_id": campaign.promoted_title_id}
        bound = campaign.promoted_title_id
    else:
        hit = ("content_id IN (SELECT content_id FROM titles FINAL "
               "WHERE has(genres, {target:String}))")
        target = {"promoted_genre": campaign.promoted_genre}
        bound = campaign.promoted_genre
    # arm 1 = the comparison group: the holdout, or (observational) the never-served
    arm = f"({HOLDOUT_SQL})" if has_holdout else "NOT (e.first_seen > toDateTime64(0, 3))"
    sql = (_SQL.replace("__EXCLUDED__", excluded_profile_hashes_sql())
           .replace("__HIT__", hit).replace("__ARM__", arm))
    window_end = campaign.end_date + dt.timedelta(days=days + 1)
    # the report's definition (newest stored event of the campaign), read before the answer's
    # rows so that it never claims an event they lack; the outcome's freshness likewise
    through = data_through(client, campaign.campaign_id)
    outcome = _outcome_freshness(client, window_end)
    result = client.query(sql, parameters={
        "campaign_id": campaign.campaign_id, "holdout_percent": float(campaign.holdout_percent),
        "flight_start": campaign.start_date, "flight_end": campaign.end_date,
        "window_end": window_end, "days": days, "target": bound,
        **{f"cap_{name}": float(cap) for name, cap in (bounds or _UNBOUNDED).items()}})
    groups = {int(row[0]): dict(zip(result.column_names, row)) for row in result.result_rows}
    noise_var: dict[int, dict[str, float]] = {}
    if privatize is not None:
        groups, noise_var = privatize(groups, (through, outcome["outcome_data_through"]))
    base = {
        "campaign_id": campaign.campaign_id,
        "kind": "holdout_lift" if has_holdout else "observational",
        "target": target,
        "holdout_percent": float(campaign.holdout_percent),
        "window_days": days,
        "flight": {"start": campaign.start_date.isoformat(), "end": campaign.end_date.isoformat()},
        "k": k,
        "data_through": through,
        **outcome,
    }
    treated, control = groups.get(0), groups.get(1)
    if treated is None or control is None or min(treated["profiles"], control["profiles"]) < k:
        return {**base, "suppressed": True, "comparisons": [],
                "detail": f"each compared group must cover at least {k} profiles"}

    names = ("treated", "holdout") if has_holdout else ("exposed", "not_exposed")
    t = arm_stats(treated, names[0], noise_var.get(0, {}))
    c = arm_stats(control, names[1], noise_var.get(1, {}))
    arms = [{key: v for key, v in a.items() if not key.startswith("_")} for a in (t, c)]
    comparisons = compare(t, c)
    session_diff = comparisons[0]
    answer: dict[str, Any] = {**base, "suppressed": False, "arms": arms,
                              "abandonment": abandonment(client, campaign, k)
                              if privatize is None else None}
    if has_holdout:
        exposed_share = t["exposed_profiles"] / t["profiles"]
        session_share = treated["sn_after"] / treated["sn"] if treated["sn"] else 0.0
        answer["lift"] = comparisons
        answer["exposed_share"] = round(exposed_share, 6)
        answer["exposed_session_share"] = round(session_share, 6)
        answer["holdout_served"] = c["exposed_profiles"]  # should be 0: holdouts are not served
        if session_share > 0:
            lo, hi = session_diff["ci95"]
            answer["per_exposed_session"] = {
                "estimate": round(session_diff["estimate"] / session_share, 8),
                "ci95": [round(lo / session_share, 8), round(hi / session_share, 8)]}
    else:
        answer["difference"] = comparisons
        answer["caveat"] = ("observational: served and not-served profiles differ (targeting, "
                            "activity); this difference is not a causal lift")
    return answer
