"""Reports and frequency released to advertiser keys: differentially private counts.

The exact cells come from ``reach.report_cells`` / ``reach.frequency_cells``; every count an
advertiser key sees here is that count plus seeded discrete Laplace noise (``adtier.privacy``),
and every release decision (the k-threshold, the suppressed remainder, the cumulative-reach
points) is taken on noisy counts only.

Contribution bounds and the split of one query's ε (docs/privacy.md has the table):

**Report** (``by`` with at most ``R`` rows: days in the range (at most 402, the cells' TTL),
6 devices, 4 break positions, 250 countries, 20 creatives):

- totals: ε/8 on reach (a profile adds 1), ε/8 on the ten event counters (a profile adds at
  most ``event_bound`` events of each type: L1 ``10 × event_bound``);
- rows and the suppressed remainder: 3ε/8 on reach, where each profile is counted in **one**
  row (``cells.ATTRIBUTION``: by day its first day in the range, otherwise one of its rows by a
  hash), and in the remainder when that row is folded: L1 2, whatever ``R``; 3ε/8 on the
  counters (L1 ``10 × event_bound × (R + 1)``: a profile's events stay in the rows they
  happened in).

A row is released when its noisy reach reaches ``release_threshold`` (k, raised so that a row
of one profile passes with probability at most 1e-6), else folded into the remainder. The
event bound is not enforced (the cells store sums, not per-profile counts): a profile with
``m`` times the bound enjoys ``m`` times the ε (group privacy). Ratios are computed from the
noisy counts.

**Content effects**: a profile is in one arm; its first-moment sums are noised: profiles,
exposed profiles and starters (1 each), window sessions, target sessions and sessions after
exposure (at most ``SESSIONS_PER_DAY × days`` each), target minutes (at most
``TARGET_MINUTES_PER_DAY × days``); ε/7 each. Estimates are taken of the noisy sums and each
standard error is widened by the noise (``lift._widened``), so the CIs keep their coverage.
The bounds are not enforced; the second moments behind the standard errors are exact.
Abandonment is withheld from advertiser keys.

**Forecast**: the predicted counts are sums over the universe's profiles of each one's
predicted part, at most 1 profile each: universe, reach, each candidate's reach and the
distribution (a profile's probabilities over the buckets sum to at most 1) get ε/5 each at
L1 1, deliverable impressions ε/5 at ``impressions_bound``. The noisy answer then goes through
``forecast.release`` (coarse to k, buckets folded) like before. Its data version is a hash of
the exact answer (a forecast reads the recent history of the segments' profiles, which has no
single "newest event"): the same data answers the same.

**Frequency**: buckets 1..9, 10+ are disjoint, so a profile changes one bucket's count by one
(ε/3, L1 1); its first day likewise (ε/3, L1 1: the cumulative curve is the running sum of the
noisy new-profile counts); the 10+ bucket's impressions get ε/3 with a bound of
``impressions_bound`` impressions per profile (not enforced either); a bucket below 10 has
``bucket × profiles`` impressions (no extra noise). Reach is the sum of the noisy buckets.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from adtier.countries import COUNTRY_CODES
from adtier.measure import lift, reach
from adtier.measure.cells import COUNT_METRICS, CellRows
from adtier.privacy.noise import NoiseStream, scale_for, variance
from adtier.privacy.release import Release, noise_note, over_k, release_threshold

__all__ = ["max_rows", "report_scales", "report", "frequency_scales", "frequency",
           "MAX_CREATIVES", "MAX_DAYS", "content_effects_scales", "EffectsPrivatizer",
           "SESSIONS_PER_DAY", "TARGET_MINUTES_PER_DAY", "forecast_scales", "forecast",
           "report_answer", "frequency_answer", "effects_answer"]

MAX_DAYS = 402  # the cells and rollups keep 400 days (TTL): no range has more day rows
MAX_CREATIVES = 20  # the documented bound on a campaign's creatives (not enforced)
_ROWS = {"device": 6, "break_position": 4, "country": len(COUNTRY_CODES),
         "creative": MAX_CREATIVES}
_COUNTERS = len(COUNT_METRICS)
ROW_REACH_L1 = 2  # a profile's one attributed row, and the remainder when that row is folded


def max_rows(by: str, date_from: dt.date, date_to: dt.date) -> int:
    """The most rows one profile can be in: public (the ``by`` and the range), not data."""
    if by == "day":
        return max(1, min((date_to - date_from).days + 1, MAX_DAYS))
    return _ROWS[by]


def report_scales(by: str, date_from: dt.date, date_to: dt.date, epsilon: float,
                  event_bound: int) -> dict[str, float]:
    rows = max_rows(by, date_from, date_to)
    return {
        "totals_reach": scale_for(1, epsilon / 8),
        "totals_events": scale_for(_COUNTERS * event_bound, epsilon / 8),
        "rows_reach": scale_for(ROW_REACH_L1, 3 * epsilon / 8),
        "rows_events": scale_for(_COUNTERS * event_bound * (rows + 1), 3 * epsilon / 8),
    }


def _noisy(values: dict[str, Any], label: str, stream: NoiseStream, reach_scale: float,
           event_scale: float) -> dict[str, int]:
    out = {"reach": max(0, stream.add(f"{label}/reach", values["reach"], reach_scale))}
    for name in COUNT_METRICS:
        out[name] = max(0, stream.add(f"{label}/{name}", values[name], event_scale))
    return out


_RATES = ("vcr", "skip_rate", "ctr", "viewable_rate")


def _metrics(values: dict[str, int]) -> dict[str, Any]:
    """A row's metrics from its noisy counts, rates kept within 0..1: noise on the numerator
    and the denominator can put a ratio outside it, and clamping is post-processing (it costs
    no privacy)."""
    out = reach.metrics(values)
    for name in _RATES:
        if out.get(name) is not None:
            out[name] = min(1.0, max(0.0, out[name]))
    return out


def _row_metrics(values: dict[str, int]) -> dict[str, Any]:
    """A row's metrics, but its average frequency withheld (None): the row's reach counts each
    profile in one row and its impressions stay where they happened, so their ratio is no
    frequency (by day: a day's impressions over its new profiles)."""
    return {**_metrics(values), "avg_frequency": None}


ROW_REACH = {by: ("profiles first reached on the day (each profile counted on one day)"
                  if by == "day" else
                  f"profiles counted in one {by.replace('_', ' ')} each (of several: one, "
                  "fixed per profile)")
             for by in ("day", *_ROWS)}


def report(got: CellRows, campaign_id: str, by: str, date_from: dt.date, date_to: dt.date,
           k: int, stream: NoiseStream, epsilon: float, event_bound: int) -> dict[str, Any]:
    scales = report_scales(by, date_from, date_to, epsilon, event_bound)
    threshold = release_threshold(k, scales["rows_reach"])
    attributed = got.attributed() if got.attributed is not None else {}
    released, folded = [], []
    for cell in got.cells:
        bounded = {**cell, "reach": attributed.get(str(cell["key"]), 0)}
        noisy = _noisy(bounded, f"row/{cell['key']}", stream, scales["rows_reach"],
                       scales["rows_events"])
        (released if over_k(noisy["reach"], threshold) else folded).append((cell["key"], noisy))
    suppressed = None
    if folded:
        keys = sorted(str(key) for key, _ in folded)
        merged = {**got.merge(keys), "reach": sum(attributed.get(key, 0) for key in keys)}
        rest = _noisy(merged, "suppressed/" + ",".join(keys), stream,
                      scales["rows_reach"], scales["rows_events"])
        suppressed = _row_metrics(rest) if over_k(rest["reach"], threshold) else None
    totals = None
    if got.totals is not None:
        noisy_totals = _noisy(got.totals, "totals", stream, scales["totals_reach"],
                              scales["totals_events"])
        totals = _metrics(noisy_totals) if over_k(noisy_totals["reach"], k) else None
    released.sort(key=lambda kv: str(kv[0]))
    return {
        "campaign_id": campaign_id, "by": by, "from": date_from.isoformat(),
        "to": date_to.isoformat(), "k": k,
        "rows": [{by: key, **_row_metrics(values)} for key, values in released],
        "totals": totals,
        "suppressed_rows": len(folded),
        "suppressed": suppressed,
        "data_through": reach.utc_iso(got.through),
        "noise": {**noise_note(epsilon, scales), "rows_sum_to_totals": False,
                  "row_threshold": threshold, "row_reach": ROW_REACH[by]},
    }


def frequency_scales(epsilon: float, impressions_bound: int) -> dict[str, float]:
    return {"buckets": scale_for(1, epsilon / 3), "new_by_day": scale_for(1, epsilon / 3),
            "impressions_10_plus": scale_for(impressions_bound, epsilon / 3)}


def frequency(exact: tuple[Any, dict[int, list[int]], dict[dt.date, int]], campaign_id: str,
              k: int, stream: NoiseStream, epsilon: float, impressions_bound: int
              ) -> dict[str, Any]:
    through, by_bucket, new_by_day = exact
    scales = frequency_scales(epsilon, impressions_bound)
    # every bucket gets a draw, present or not: which buckets exist is itself data. Sums are
    # of the unclamped draws (clamping each at 0 first would bias reach up by ~10 draws' worth
    # on an empty or small campaign); a bucket is released only at >= k, so never negative.
    profiles = {b: stream.add(f"bucket/{b}", by_bucket.get(b, [0, 0])[0], scales["buckets"])
                for b in range(1, 11)}
    imps = {b: b * profiles[b] for b in range(1, 10)}
    imps[10] = max(10 * profiles[10], stream.add("bucket/10/impressions",
                                                 by_bucket.get(10, [0, 0])[1],
                                                 scales["impressions_10_plus"]))
    total_reach, total_imps = max(0, sum(profiles.values())), max(0, sum(imps.values()))
    note = {**noise_note(epsilon, scales), "rows_sum_to_totals": True}
    if not over_k(total_reach, k):
        return {"campaign_id": campaign_id, "k": k, "reach": None, "impressions": None,
                "avg_frequency": None, "distribution": [], "suppressed": None,
                "suppressed_rows": 10, "cumulative_reach": [], "data_through": through,
                "noise": note}
    distribution, folded = [], []
    for b in range(1, 11):
        label = "10+" if b == 10 else str(b)
        if over_k(profiles[b], k):
            distribution.append({"frequency": label, "profiles": profiles[b],
                                 "impressions": imps[b]})
        else:
            folded.append(b)
    suppressed = None
    rest = sum(profiles[b] for b in folded)
    if folded and over_k(rest, k):
        suppressed = {"frequencies": ["10+" if b == 10 else str(b) for b in folded],
                      "profiles": rest, "impressions": sum(imps[b] for b in folded)}
    return {
        "campaign_id": campaign_id, "k": k, "reach": total_reach, "impressions": total_imps,
        "avg_frequency": round(total_imps / total_reach, 6) if total_reach else 0.0,
        "distribution": distribution, "suppressed": suppressed,
        "suppressed_rows": len(folded),
        "cumulative_reach": _cumulative(new_by_day, total_reach, k, stream, scales),
        "data_through": through, "noise": note,
    }


def _cumulative(new_by_day: dict[dt.date, int], total: int, k: int, stream: NoiseStream,
                scales: dict[str, float]) -> list[dict[str, Any]]:
    """Running sum of noisy new profiles per day, a point released when it grew by >= k."""
    if not new_by_day:
        return []
    days = sorted(new_by_day)
    points: list[dict[str, Any]] = []
    cumulative, released_at, day = 0, 0, days[0]
    while day <= days[-1]:
        cumulative += stream.add(f"new/{day.isoformat()}", new_by_day.get(day, 0),
                                 scales["new_by_day"])
        if cumulative - released_at >= k:
            points.append({"day": day.isoformat(), "reach": max(0, cumulative)})
            released_at = cumulative
        day += dt.timedelta(days=1)
    return points


SESSIONS_PER_DAY = 4  # content effects' bound on a profile's window sessions per day
TARGET_MINUTES_PER_DAY = 180  # ... and on its minutes of the promoted title (genre) per day
_EFFECT_SUMS = ("profiles", "exposed_profiles", "starters", "sn", "sy", "sn_after", "sw")


def content_effects_scales(days: int, epsilon: float) -> dict[str, float]:
    sessions = SESSIONS_PER_DAY * days
    bounds = {"profiles": 1, "exposed_profiles": 1, "starters": 1, "sn": sessions,
              "sy": sessions, "sn_after": sessions, "sw": TARGET_MINUTES_PER_DAY * days}
    return {name: scale_for(bounds[name], epsilon / len(_EFFECT_SUMS)) for name in _EFFECT_SUMS}


def _consistent(g: dict[str, Any]) -> None:
    """Post-processing that keeps the noisy sums possible (a share in [0, 1]): starters and
    exposed profiles at most the profiles, target sessions and sessions after exposure at most
    the sessions. Free of ε, and the estimators' square roots stay real."""
    for part, whole in (("starters", "profiles"), ("exposed_profiles", "profiles"),
                        ("sy", "sn"), ("sn_after", "sn")):
        g[part] = min(g[part], g[whole])


class EffectsPrivatizer:
    """``lift.content_effects``' ``privatize``: opens the query's noise on the answer's data
    version (the campaign's and the viewing's newest events; ``Release.open`` charges the
    budget) and noises each arm's sums."""

    def __init__(self, open_stream: Callable[[str], NoiseStream], epsilon: float, days: int):
        self.open_stream = open_stream
        self.epsilon = epsilon
        self.days = days
        self.scales = content_effects_scales(days, epsilon)

    def __call__(self, groups: dict[int, dict[str, Any]], version: Any
                 ) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, float]]]:
        stream = self.open_stream("|".join(str(v) for v in version))
        noisy: dict[int, dict[str, Any]] = {}
        var: dict[int, dict[str, float]] = {}
        for arm, g in groups.items():
            noisy[arm] = dict(g)
            for name, scale in self.scales.items():
                noisy[arm][name] = max(0.0, float(g[name]) + stream.draw(f"arm/{arm}/{name}",
                                                                          scale))
            _consistent(noisy[arm])
            var[arm] = {name: variance(scale) for name, scale in self.scales.items()}
        return noisy, var

    def bounds(self) -> dict[str, float]:
        """Per-profile caps the SQL applies before summing (``lift.content_effects``)."""
        return {"sessions": SESSIONS_PER_DAY * self.days,
                "minutes": TARGET_MINUTES_PER_DAY * self.days}

    def note(self) -> dict[str, Any]:
        return {**noise_note(self.epsilon, self.scales), "rows_sum_to_totals": False,
                "ci_widened_for_noise": True}


_FORECAST_FAMILIES = 5


def forecast_scales(epsilon: float, impressions_bound: int) -> dict[str, float]:
    share = epsilon / _FORECAST_FAMILIES
    return {"universe": scale_for(1, share), "reach": scale_for(1, share),
            "candidates_reach": scale_for(1, share), "distribution": scale_for(1, share),
            "deliverable_impressions": scale_for(impressions_bound, share)}


def forecast(answer: dict[str, Any], stream: NoiseStream, epsilon: float,
             impressions_bound: int) -> tuple[dict[str, Any], dict[str, float]]:
    """The exact forecast with its counts noised (then ``forecast.release`` applies); and the
    scales. Ratios are recomputed from the noisy counts."""
    scales = forecast_scales(epsilon, impressions_bound)
    out = dict(answer)
    out["universe"] = max(0, stream.add("universe", answer["universe"], scales["universe"]))
    out["reach"] = max(0.0, float(answer["reach"]) + stream.draw("reach", scales["reach"]))
    out["deliverable_impressions"] = max(0, stream.add(
        "deliverable", answer["deliverable_impressions"], scales["deliverable_impressions"]))
    out["distribution"] = [
        {**d, "profiles": max(0, round(d["profiles"] + stream.draw(f"bucket/{d['frequency']}",
                                                                   scales["distribution"])))}
        for d in answer["distribution"]]
    candidates = {}
    for name, c in answer["parameters"]["candidates"].items():
        candidates[name] = {**c, "reach": max(0.0, float(c["reach"]) + stream.draw(
            f"candidate/{name}/reach", scales["candidates_reach"])),
            "deliverable_impressions": max(0, stream.add(
                f"candidate/{name}/deliverable", c["deliverable_impressions"],
                scales["deliverable_impressions"]))}
    out["parameters"] = {**answer["parameters"], "candidates": candidates}
    return out, scales


def report_answer(client: Any, rel: Release, campaign_id: str, by: str, lo: dt.date,
                  hi: dt.date, k: int) -> dict[str, Any]:
    """The advertiser's report: one answer per (query, period of the campaign's newest event)."""
    got = reach.report_cells(client, campaign_id, by, lo, hi)
    return rel.answered(rel.version(got.through), lambda stream: report(
        got, campaign_id, by, lo, hi, k, stream, rel.epsilon, rel.policy.event_bound))


def frequency_answer(client: Any, rel: Release, campaign_id: str, lo: dt.date, hi: dt.date,
                     k: int) -> dict[str, Any]:
    """The advertiser's frequency: one answer per (query, period of the newest event)."""
    exact = reach.frequency_cells(client, campaign_id, lo, hi)
    return rel.answered(rel.version(exact[0]), lambda stream: frequency(
        exact, campaign_id, k, stream, rel.epsilon, rel.policy.impressions_bound))


def effects_answer(client: Any, rel: Release, info: Any, days: int, k: int) -> dict[str, Any]:
    """The advertiser's content effects: one answer per (query, period of the campaign's and
    of the viewing's newest events)."""
    version = rel.version(reach.data_through(client, info.campaign_id),
                          lift.outcome_data_through(client))

    def compute(stream: NoiseStream) -> dict[str, Any]:
        privatize = EffectsPrivatizer(lambda _version: stream, rel.epsilon, days)
        return {**lift.content_effects(client, info, days, k, privatize, privatize.bounds()),
                "noise": privatize.note()}

    return rel.answered(version, compute)
