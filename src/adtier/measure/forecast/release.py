"""What an advertiser may see of a forecast (docs/privacy.md): counts coarsened to steps of
``k``, frequency buckets folded under ``k``, the backtest only when it rests on enough
campaigns; and one kept answer per data version (``kept_answer``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from adtier.measure.privacy import fold_small_rows, fold_until_k

__all__ = ["BACKTEST_MIN_CAMPAIGNS", "coarse", "release", "data_version", "kept_answer"]


# campaigns an advertiser's flight backtest must rest on (other advertisers' campaigns on its
# own list): fewer, and its errors describe a handful of identifiable competitor campaigns
BACKTEST_MIN_CAMPAIGNS = 5


def coarse(value: float, k: int) -> int:
    """``value`` rounded to a step of ``k`` or its second significant figure, the coarser.

    Why both: the forecast of a saturated plan is the universe's own data (exact reach,
    slots), and an advertiser can ask it of any list it uploads, so two lists one profile
    apart could tell that profile's activity by difference. A step of at least ``k`` makes
    one answer never resolve fewer than ``k`` profiles (the §5 row rule); two significant
    figures keep large answers from claiming precision no forecast has. Half up."""
    if value <= 0:
        return 0
    step = max(k, 10 ** max(0, math.floor(math.log10(value)) - 1))
    return int(step * math.floor(value / step + 0.5))


def _released_count(value: float, k: int) -> int | None:
    """A profile count as released: None below ``k`` (as the frequency endpoint's reach),
    else ``coarse``."""
    return None if value < k else coarse(value, k)


def _released_distribution(distribution: list[dict[str, Any]], k: int
                           ) -> tuple[list[dict[str, Any]], dict[str, Any] | None, int]:
    """Frequency buckets with the frequency endpoint's semantics: buckets under ``k`` folded
    (complementary suppression until the remainder reaches ``k``), the remainder released
    only at ``k`` or more, empty buckets shown as 0; counts ``coarse``. Buckets are disjoint,
    so the remainder covers the sum of its buckets. Answers the rows, the remainder and the
    number of buckets folded."""
    cells = [{"key": d["frequency"], "profiles": d["profiles"]}
             for d in distribution if d["profiles"] > 0]
    profiles = {c["key"]: c["profiles"] for c in cells}
    folded, rest = fold_until_k(fold_small_rows(cells, k, "key"), k, "key",
                                lambda keys: sum(profiles[x] for x in keys))
    released = {r["key"]: coarse(r["profiles"], k) for r in folded.released}
    rows = [{"frequency": d["frequency"], "profiles": released.get(d["frequency"], 0)}
            for d in distribution if d["frequency"] in released or d["profiles"] <= 0]
    suppressed = None
    if folded.folded_keys and rest >= k:
        order = [d["frequency"] for d in distribution]
        suppressed = {"frequencies": sorted(folded.folded_keys, key=order.index),
                      "profiles": coarse(rest, k)}
    return rows, suppressed, len(folded.folded_keys)


def _released_backtest(test: dict[str, Any] | None) -> dict[str, Any] | None:
    """The backtest an advertiser sees. The flight backtest runs on every advertiser's
    campaigns among the asker's universe, which may be a list it chose: released only when it
    rests on ``BACKTEST_MIN_CAMPAIGNS`` or more, and then each candidate's error to 0.1 %
    only (a count, a median or a signed error narrows it to single competitor campaigns);
    else ``withheld``. The ad-stream backtest keeps its errors, not the stream's impressions,
    reach or the predicted reach they were measured against."""
    if test is None:
        return None
    if test["method"] == "flights" and test["campaigns"] < BACKTEST_MIN_CAMPAIGNS:
        return {"method": "withheld", "days": test["days"], "candidates": None}
    return {"method": test["method"], "days": test["days"],
            "candidates": {c: {"error": round(v["error"], 3)}
                           for c, v in test["candidates"].items()}}


def release(answer: dict[str, Any], k: int) -> dict[str, Any]:
    """A forecast as an advertiser key may see it (admin keys get ``forecast`` as is).

    Every profile count (universe, reach, each bucket, each candidate's reach) and every
    impression count derived from the universe's slots (deliverable impressions) is
    ``coarse``, a reach under ``k`` is None; buckets are folded as the frequency endpoint
    folds them; ratios are taken of the released numbers; the models' fitted parameters
    (win rate, history moments, shapes) are dropped: each inverts to the universe's exact
    slots (impressions / win rate) or moments; the backtest per ``_released_backtest``."""
    universe = coarse(answer["universe"], k)
    reach = _released_count(answer["reach"], k)
    deliverable = coarse(answer["deliverable_impressions"], k) if reach is not None else None
    rows, suppressed, folded = ([], None, 0) if reach is None else \
        _released_distribution(answer["distribution"], k)
    test = _released_backtest(answer["backtest"])
    error = None  # the chosen candidate's error, as released (to 0.1 %)
    if test is not None and test["candidates"] is not None:
        error = round(answer["backtest_error"], 3)
    parameters = answer["parameters"]
    candidates = {}
    for name, c in parameters["candidates"].items():
        c_reach = _released_count(c["reach"], k)
        candidates[name] = {
            "model": c["model"], "reach": c_reach,
            "deliverable_impressions": None if c_reach is None
            else coarse(c["deliverable_impressions"], k),
            **({"opportunities": c["opportunities"]} if "opportunities" in c else {})}
    sampled = parameters["sampled_profiles"]
    return {
        **answer,
        "k": k,
        "universe": universe,
        "deliverable_impressions": deliverable,
        "reach": reach,
        "reach_share": round(reach / universe, 4) if reach is not None and universe else None,
        "avg_frequency": (round(deliverable / reach, 2) if reach and deliverable is not None
                          else None),
        "distribution": rows,
        "suppressed": suppressed,
        "suppressed_rows": folded,
        "backtest_error": error,
        "backtest": test,
        "parameters": {**parameters, "candidates": candidates,
                       "sampled_profiles": None if sampled is None else coarse(sampled, k)},
    }


# the end of the forecast's history window (``history._window``): newer events move the answer
_NEWEST_SQL = "SELECT max(ts) FROM ad_events"


def data_version(client: Any, rel: Any, segment_keys: list[str]) -> str:
    """The forecast's data version: the newest ad event, floored to the release's version
    period (``ADTIER_PRIVACY_VERSION_PERIOD_S``), and the segments' built versions
    (``segment:version`` keys). Not the exact answer's hash: that re-spent ε whenever any
    count moved and told, by whether a repeat was charged, whether the exact answer changed."""
    newest = client.query(_NEWEST_SQL).result_rows[0][0]
    return rel.version(newest, ",".join(sorted(segment_keys)))


def kept_answer(client: Any, rel: Any, segment_keys: list[str],
                compute: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """An advertiser's forecast: ``compute`` (the noisy, coarse release of the exact answer,
    given the query's noise stream) runs once per data version; every ask within the period
    answers the kept first answer (``Release.answered``), so two forecasts over different data
    never share a noise draw and a refresh does not re-spend."""
    return rel.answered(data_version(client, rel, segment_keys), compute)
