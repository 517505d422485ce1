"""Rank and time-decayed affinity features (``genre_rank``, ``genre_affinity``...) end to end.

A small simulated world goes straight into ClickHouse; rule segments over ``genre_rank`` and
``genre_affinity`` are built by the real builder, and their members (and every profile's
feature values) are checked against an independent computation from the raw viewing events in
ClickHouse SQL: plays (session x title x day, largest ``watched_ms``), the catalog's genres,
``rank()`` over each profile's genre minutes (competition ranking, like the kernel) and
``pow(0.5, day / 14)`` decay. The rollup path and the event path also agree on all six new
features.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from adtier.privacy.exclusions import excluded_profile_hashes_sql
from adtier.segments import build as B
from adtier.segments import aggregate as F
from adtier.segments import aggregate_arrow as FA
from adtier.segments import store
from adtier.segments.rules import NO_RANK, parse_rule, predicates, to_json
from tests.integration.conftest import load_world

PROFILES = 600
DAYS = 9
GENRE = "drama"
RANK_WINDOW = 7
TOP = 2
AFFINITY = 0.2
RULES = {
    "seg_top": {"all": [
        {"feature": "genre_rank", "key": GENRE, "window_days": RANK_WINDOW, "op": "<=",
         "value": TOP},
        {"feature": "genre_affinity", "key": GENRE, "op": ">=", "value": AFFINITY}]},
    "seg_first": {"feature": "genre_rank", "key": GENRE, "window_days": RANK_WINDOW, "op": "==",
                  "value": 1},
    # "not in their top 2" holds for profiles without any drama too (no rank = NO_RANK)
    "seg_not_top": {"feature": "genre_rank", "key": GENRE, "window_days": RANK_WINDOW,
                    "op": ">", "value": TOP},
}
# the other new features, for the rollup path vs the event path
OTHERS = [
    {"feature": "device_rank", "key": "tv", "window_days": 5, "op": "==", "value": 1},
    {"feature": "daypart_rank", "key": "evening", "op": "<=", "value": 2},
    {"feature": "device_affinity", "key": "mobile", "window_days": 3, "op": ">", "value": 0.1},
    {"feature": "daypart_affinity", "key": "late_night", "op": ">", "value": 0.1},
    {"feature": "genre_affinity", "key": "comedy", "window_days": 4, "op": ">", "value": 0.1},
]

_PLAYS = """
WITH plays AS (
    SELECT profile_id, toInt32(dateDiff('day', toDate(ts), {as_of:Date})) AS d,
           session_id, content_id, max(ifNull(watched_ms, 0)) AS ms
    FROM content_events
    WHERE toDate(ts) BETWEEN {as_of:Date} - 89 AND {as_of:Date}
      AND profile_hash NOT IN (@EXCLUDED@)
    GROUP BY profile_id, d, session_id, content_id),
genres AS (SELECT content_id, argMax(genres, version) AS genres FROM titles
           GROUP BY content_id)
"""

RANK_SQL = _PLAYS + """
SELECT profile_id, r FROM (
    SELECT profile_id, g, rank() OVER (PARTITION BY profile_id ORDER BY ms DESC) AS r
    FROM (SELECT profile_id, g, sum(p.ms) AS ms FROM plays AS p
          INNER JOIN genres AS t ON p.content_id = t.content_id ARRAY JOIN t.genres AS g
          WHERE p.d < {window:Int32} GROUP BY profile_id, g HAVING ms > 0))
WHERE g = {genre:String}"""

AFFINITY_SQL = _PLAYS + """
SELECT profile_id,
       sumIf(p.ms * pow(0.5, p.d / 14), has(t.genres, {genre:String}))
       / sum(p.ms * pow(0.5, p.d / 14)) AS affinity
FROM plays AS p LEFT JOIN genres AS t ON p.content_id = t.content_id
WHERE p.d < {window:Int32} GROUP BY profile_id HAVING sum(p.ms) > 0"""


def _sql(ch, sql: str, day: dt.date, window: int, genre: str = GENRE) -> dict[str, float]:
    rows = ch.query(sql.replace("@EXCLUDED@", excluded_profile_hashes_sql()),
                    parameters={"as_of": day, "window": window, "genre": genre}).result_rows
    return {pid: float(v) for pid, v in rows}


@pytest.fixture
def world(ch):
    return load_world(ch, 5, PROFILES, DAYS)


def test_rank_and_affinity_segments_match_sql(ch, rds, world):
    """One world (loading it is most of the time): values, members, and both paths."""
    day, _ = F.as_of(ch)
    rank = _sql(ch, RANK_SQL, day, RANK_WINDOW)
    affinity = _sql(ch, AFFINITY_SQL, day, 30)
    assert len(rank) > 50 and len(affinity) > len(rank) // 2

    # 1. every profile's values (one chunk): NO_RANK / 0 for profiles without drama minutes
    rules = {sid: parse_rule(rule) for sid, rule in RULES.items()}
    plan = F.plan_for(p for r in rules.values() for p in predicates(r))
    assert plan.daily_days == {"content": 30} and plan.bounds == [RANK_WINDOW, 30]
    chunk = FA.load_chunk(ch, plan, day, 0, 2**64 - 1)
    ids = chunk.profile_ids
    got_rank = FA.feature_values(chunk, "genre_rank", GENRE, RANK_WINDOW)
    got_aff = FA.feature_values(chunk, "genre_affinity", GENRE, 30)
    want_rank = np.array([rank.get(pid, NO_RANK) for pid in ids])
    want_aff = np.array([affinity.get(pid, 0.0) for pid in ids])
    np.testing.assert_array_equal(got_rank, want_rank)
    np.testing.assert_allclose(got_aff, want_aff, rtol=1e-9, atol=1e-12)
    assert (got_aff >= 0).all() and (got_aff <= 1).all()
    assert set(ids) >= set(rank)  # every ranked profile is in the universe

    # 2. segments built by the real builder: members as the SQL says
    for sid, rule in rules.items():
        store.write_state(ch, store.SegmentRow(
            segment_id=sid, name=sid, kind="rule", owner="",
            definition=json.dumps({"rule": to_json(rule)}),
            created_at=dt.datetime.now(dt.timezone.utc)))
    built = {r.segment_id: r for r in B.build_many(ch, rds, list(rules))}
    assert all(r.status == "ready" for r in built.values()), built
    members = {sid: set(store.member_ids(ch, sid, row.version)) for sid, row in built.items()}
    universe = set(ids)
    expect = {
        "seg_top": {p for p, r in rank.items()
                    if r <= TOP and affinity.get(p, 0.0) >= AFFINITY},
        "seg_first": {p for p, r in rank.items() if r == 1},
        "seg_not_top": universe - {p for p, r in rank.items() if r <= TOP},
    }
    print("\nmembers:", {sid: len(m) for sid, m in members.items()})
    for sid in rules:
        assert members[sid] == expect[sid], sid
        assert 0 < len(members[sid]) < len(universe), sid
    assert members["seg_top"] < {p for p, r in rank.items() if r <= TOP}  # it selects

    # 3. the rollup path (the builder's) and the event path agree on all six new features
    preds = [p for rule in [*RULES.values(), *OTHERS] for p in predicates(parse_rule(rule))]
    old, new = (FA.load_chunk(ch, F.plan_for(preds, source), day, 0, 2**64 - 1)
                for source in ("events", "rollup"))
    np.testing.assert_array_equal(old.profile_ids, new.profile_ids)
    assert len(new.plan.labels["content"]) > 5  # every genre of the catalog, for the rank
    for p in preds:
        values = FA.feature_values(new, p.feature, p.key, p.window_days)
        np.testing.assert_allclose(values, FA.feature_values(old, p.feature, p.key,
                                                             p.window_days),
                                   rtol=1e-12, atol=0, err_msg=f"{p.feature}[{p.key}]")
        assert 0 < np.count_nonzero((values > 0) & (values < NO_RANK)) < new.size, p.feature


def test_plan_keeps_days_for_decay_and_every_key_for_ranks():
    longer = {"feature": "watch_minutes", "window_days": 60, "op": ">", "value": 0}
    preds = [p for rule in [*RULES.values(), *OTHERS, longer]
             for p in predicates(parse_rule(rule))]
    plan = F.plan_for(preds)
    # per family: genre_affinity (30 days) the content rows, the device / daypart ones
    # (3 and 30 days) the activity rows; the ad rows keep their buckets
    assert plan.daily_days == {"content": 30, "activity": 30}
    assert plan.bounds == [3, 4, 5, RANK_WINDOW, 30, 60]
    assert plan.all_keys == {"genre", "device", "daypart"}
    assert {"dev:tv", "dev:console", "dp:morning", "dp:late_night"} <= set(
        plan.labels["activity"])
    for family in ("content", "activity"):  # days 0-29 stay days; later ones never join
        buckets = FA._bucket_of(plan, family)
        assert list(buckets[:30]) == list(range(30)) and set(buckets[30:]) == {30}
    assert list(FA._bucket_of(plan, "ad")[:8]) == [0, 0, 0, 3, 4, 5, 5, RANK_WINDOW]
    plain = F.plan_for(predicates(parse_rule(
        {"feature": "genre_share", "key": GENRE, "window_days": 7, "op": ">", "value": 0})))
    assert plain.daily_days == {} and not plain.all_keys
    assert list(FA._bucket_of(plain, "content")) == [0] * 7  # no rank, no decay: as before
