"""Segments on a simulated world (``adtier.simulate``), checked against its ground truth.

The world is generated straight into the test's ClickHouse (``run_direct`` takes the session's
client), then segments are built with the real builder and compared with the latent traits the
simulator planted: a rule segment on ``ad_skip_rate`` must recover the profiles with a high
``skip_propensity``, one on ``genre_share`` those with a strong preference for the genre. Also:
kids' and opted-out profiles never become members, a segment overlaps itself in exactly its
size, the Redis set matches ClickHouse, and a lookalike has the requested share of the eligible
universe within one percentage point.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import numpy as np
import pytest

from adtier.segments import build as B
from adtier.segments import store
from adtier.segments.rules import parse_rule, to_json
from adtier.simulate import params as P
from adtier.simulate.direct import load_catalog_direct, run_direct
from adtier.simulate.world import build_world

PROFILES = 4_000
DAYS = 7
SEED = 7
# planted traits (simulate/world.py): skip propensity ~ Beta(2, 5); genre preferences ~ Dirichlet
HIGH_SKIP = 0.35  # about the top third of adults
MIN_IMPRESSIONS = 10  # below that a rate says little: the planted set is judged on the same
SKIP_RULE = {"all": [{"feature": "ad_skip_rate", "window_days": 30, "op": ">=", "value": 0.36},
                     {"feature": "ad_impressions", "op": ">=", "value": MIN_IMPRESSIONS}]}
GENRE = "drama"
STRONG_GENRE = 0.25  # a quarter of the profile's taste or more
GENRE_RULE = {"feature": "genre_share", "key": GENRE, "op": ">=", "value": 0.35}


@pytest.fixture
def world(ch):
    start = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=DAYS + 1)
    w = build_world(SEED, PROFILES, DAYS, start)
    load_catalog_direct(ch, w)
    run_direct(w, ch, tag=uuid.uuid4().hex[:8])
    return w


def _create(ch, sid: str, kind: str, definition: dict) -> None:
    store.write_state(ch, store.SegmentRow(
        segment_id=sid, name=sid, kind=kind, owner="", definition=json.dumps(definition),
        created_at=dt.datetime.now(dt.timezone.utc)))


def _members(ch, sid: str) -> set[str]:
    row = store.get_segment(ch, sid)
    assert row is not None and row.status == "ready", row
    return set(store.member_ids(ch, sid, row.version))


def _score(name: str, found: set[str], truth: set[str]) -> tuple[float, float]:
    hits = len(found & truth)
    precision = hits / max(len(found), 1)
    recall = hits / max(len(truth), 1)
    print(f"\n{name}: segment {len(found):,}, planted {len(truth):,}, "
          f"precision {precision:.3f}, recall {recall:.3f}")
    return precision, recall


def test_segments_recover_planted_traits(ch, rds, world):
    eligible = ~world.kids & ~world.opted_out
    ids = world.profile_ids()
    _create(ch, "seg_skip", "rule", {"rule": to_json(parse_rule(SKIP_RULE))})
    _create(ch, "seg_genre", "rule", {"rule": to_json(parse_rule(GENRE_RULE))})
    _create(ch, "seg_like", "lookalike", {"seed_segment_id": "seg_skip", "size_percent": 5})
    rows = {r.segment_id: r for r in B.build_many(ch, rds, ["seg_like", "seg_skip", "seg_genre"])}
    assert all(r.status == "ready" for r in rows.values()), rows

    # 1. planted traits recovered (among profiles that saw enough ads / watched anything)
    skip = _members(ch, "seg_skip")
    saw_ads = {r[0] for r in ch.query(
        "SELECT profile_id FROM ad_events WHERE type = 'impression' GROUP BY profile_id "
        "HAVING count() >= {n:UInt32}", parameters={"n": MIN_IMPRESSIONS}).result_rows}
    planted_skip = {p for p in ids[eligible & (world.skip_propensity >= HIGH_SKIP)]
                    if p in saw_ads}
    precision, recall = _score("ad_skip_rate -> skip_propensity", skip, planted_skip)
    assert precision >= 0.65 and recall >= 0.70  # measured: 0.72 / 0.77 (seed 7)

    genre = _members(ch, "seg_genre")
    watched = {r[0] for r in ch.query("SELECT DISTINCT profile_id FROM content_events"
                                      ).result_rows}
    g = list(P.GENRES).index(GENRE)
    planted_genre = {p for p in ids[eligible & (world.genre_pref[:, g] >= STRONG_GENRE)]
                     if p in watched}
    precision, recall = _score(f"genre_share[{GENRE}] -> genre_pref", genre, planted_genre)
    base = len(planted_genre) / max(len(watched - set(ids[~eligible])), 1)
    print(f"  (base rate {base:.3f}: lift {precision / base:.1f}x; a week of viewing is a "
          "noisy sample of a taste)")
    assert precision >= 2.5 * base and recall >= 0.45  # measured: 3.1x, 0.585

    # 2. exclusions: kids' and opted-out profiles are never members of anything
    excluded = set(ids[world.kids | world.opted_out])
    like = _members(ch, "seg_like")
    for members in (skip, genre, like):
        assert not members & excluded

    # 3. overlap of a segment with itself is its size; Redis holds the same set
    current = {sid: rows[sid].version for sid in rows}
    pairs = store.overlap(ch, current)
    for sid, row in rows.items():
        assert pairs[(sid, sid)] == row.size == len(_members(ch, sid))
        key = store.member_key(sid, row.version)
        assert rds.scard(key) == row.size
        sample = sorted(_members(ch, sid))[:: max(1, row.size // 50)]
        assert all(rds.smismember(key, sample))
    assert pairs[("seg_genre", "seg_skip")] == len(genre & skip)

    # 4. lookalike: size_percent of the eligible universe (seed excluded), within 1 point
    universe = {r[0] for r in ch.query(
        "SELECT DISTINCT profile_id FROM (SELECT profile_id FROM ad_events UNION ALL "
        "SELECT profile_id FROM content_events)").result_rows} - excluded
    pool = len(universe - skip)
    share = 100.0 * len(like) / pool
    print(f"lookalike: {len(like):,} of {pool:,} eligible non-seed profiles = {share:.2f} % "
          "(asked 5 %)")
    assert abs(share - 5.0) <= 1.0
    assert not like & skip
