"""The profile-first rollups (sql/0009_profile_rollups.sql) against the raw event tables.

Segment builds read ``profile_ad_daily``, ``profile_content_daily`` and
``profile_activity_daily`` (filled by materialized views at insert time) instead of the event
tables. These tests hold the rollup path to the event path on the same simulated data: the same
universe, the same value of every feature for every profile, the same members for rules over
every feature and for a lookalike. Also: a retried insert (same deduplication token) is not
counted twice in the rollups, the migration's backfill equals what the views wrote, and an
erasure removes the profile from the rollups.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from adtier.catalog.store import erase_profile
from adtier.ingest.flusher import insert_settings
from adtier.segments import aggregate as F
from adtier.segments import aggregate_arrow as FA
from adtier.segments import build as B
from adtier.segments import members as M
from adtier.segments import store
from adtier.segments.lookalike import lookalike_members
from adtier.segments.rules import parse_rule, predicates
from adtier.store.migrate import discover
from tests.helpers import ad_event, batch
from tests.integration.conftest import count, load_world

PROFILES = 1_500
DAYS = 9
ROLLUPS = ("profile_ad_daily", "profile_content_daily", "profile_activity_daily")


@pytest.fixture
def world(ch):
    return load_world(ch, 11, PROFILES, DAYS)


def _keys(ch) -> dict[str, list[str]]:
    """Real keys of the simulated catalog and events, for rules that select something."""
    def col(sql: str) -> list[str]:
        return [r[0] for r in ch.query(sql).result_rows]

    return {
        "category": col("SELECT DISTINCT ad_category FROM campaigns FINAL ORDER BY 1 LIMIT 3"),
        "campaign": col("SELECT campaign_id FROM ad_events GROUP BY 1 ORDER BY count() DESC "
                        "LIMIT 2"),
        "genre": col("SELECT DISTINCT arrayJoin(genres) FROM titles FINAL ORDER BY 1 LIMIT 3"),
        "title": col("SELECT content_id FROM content_events GROUP BY 1 ORDER BY count() DESC "
                     "LIMIT 2"),
    }


def _rules(keys: dict[str, list[str]]) -> dict[str, dict]:
    """Rules over every feature of the catalog, with keys and windows (buckets) mixed."""
    cat, cmp_, genre, title = keys["category"], keys["campaign"], keys["genre"], keys["title"]
    rules = {
        "imp": {"feature": "ad_impressions", "op": ">=", "value": 8},
        "imp_cat": {"feature": "ad_impressions", "key": cat[0], "window_days": 3, "op": ">=",
                    "value": 1},
        "completes": {"feature": "ad_completes", "key": cat[1], "op": ">", "value": 0},
        "skips": {"feature": "ad_skips", "window_days": 5, "op": ">=", "value": 2},
        "clicks": {"feature": "ad_clicks", "op": ">=", "value": 1},
        "vcr": {"feature": "ad_completion_rate", "op": ">=", "value": 0.5},
        "skip_rate_cat": {"feature": "ad_skip_rate", "key": cat[2], "window_days": 7,
                          "op": ">", "value": 0.4},
        "ctr": {"feature": "ad_ctr", "op": ">", "value": 0.012},
        "exposed": {"feature": "campaign_exposures", "key": cmp_[0], "op": ">=", "value": 2},
        "minutes": {"feature": "watch_minutes", "window_days": 3, "op": ">", "value": 30},
        "genre": {"feature": "genre_share", "key": genre[0], "op": ">=", "value": 0.3},
        "genre_wk": {"feature": "genre_share", "key": genre[1], "window_days": 7, "op": "between",
                     "value": [0.1, 0.6]},
        "title": {"feature": "watched_title", "key": title[0], "op": "==", "value": 1},
        "sessions": {"feature": "sessions", "window_days": 7, "op": ">=", "value": 4},
        "days": {"feature": "active_days", "op": "in", "value": [2, 3, 4]},
        "recent": {"feature": "days_since_active", "op": "<=", "value": 1},
        "tv": {"feature": "device_share", "key": "tv", "op": ">", "value": 0.5},
        "evening": {"feature": "daypart_share", "key": "evening", "window_days": 5, "op": ">=",
                    "value": 0.3},
        "mixed": {"all": [{"any": [{"feature": "device_share", "key": "mobile", "op": ">",
                                    "value": 0.2},
                                   {"feature": "watched_title", "key": title[1], "op": "==",
                                    "value": 1}]},
                          {"not": {"feature": "campaign_exposures", "key": cmp_[1], "op": ">",
                                   "value": 3}}]},
    }
    return {name: parse_rule(rule) for name, rule in rules.items()}


def test_rollup_path_equals_event_path(ch, world):
    rules = _rules(_keys(ch))
    day, _ = F.as_of(ch)

    # 1. every feature of every profile: same universe, same values (two chunks of profiles)
    for source_pair in (("events", "rollup"),):
        plans = [F.plan_for((p for r in rules.values() for p in predicates(r)), s)
                 for s in source_pair]
        for lo, hi in F.hash_ranges(2):
            old, new = (FA.load_chunk(ch, plan, day, lo, hi) for plan in plans)
            assert old.size > 100
            np.testing.assert_array_equal(old.hashes, new.hashes)
            np.testing.assert_array_equal(old.profile_ids, new.profile_ids)
            for rule in rules.values():
                for p in predicates(rule):
                    np.testing.assert_allclose(
                        FA.feature_values(new, p.feature, p.key, p.window_days),
                        FA.feature_values(old, p.feature, p.key, p.window_days),
                        rtol=1e-12, atol=0, err_msg=f"{p.feature}[{p.key}] {p.window_days}d")

    # 2. members of every rule, built in one shared pass each way
    old = M.shared_rule_members(ch, rules, day, chunk_profiles=500, source="events")
    new = M.shared_rule_members(ch, rules, day, chunk_profiles=500, source="rollup")
    sizes = {}
    for name in rules:
        assert sorted(new[name].to_pylist()) == sorted(old[name].to_pylist()), name
        sizes[name] = len(new[name])
    print("\nmembers per rule (identical both ways):", sizes)
    assert sum(1 for n in sizes.values() if 0 < n < PROFILES) >= len(rules) - 2  # they select

    # 3. a lookalike (decayed affinity vectors over daily rows) is the same too
    seed = np.asarray(sorted(new["imp"].to_pylist()), dtype=object)
    store.insert_members(ch, "seed", 1, seed)
    like_old = lookalike_members(ch, "seed", 1, 5, day, 700, source="events")
    like_new = lookalike_members(ch, "seed", 1, 5, day, 700, source="rollup")
    assert len(like_new) > 0
    assert list(like_new) == list(like_old)


def _rollup_sums(ch) -> tuple:
    return (
        ch.query("SELECT sum(impressions), sum(completes), sum(skips), sum(clicks) "
                 "FROM profile_ad_daily").result_rows[0],
        ch.query("SELECT sum(ms) FROM (SELECT max(watched_ms) AS ms FROM profile_content_daily "
                 "GROUP BY profile_hash, day, session_hash, content_id)").result_rows[0],
        ch.query("SELECT sum(events), uniqExact(profile_hash, day, session_hash) "
                 "FROM profile_activity_daily").result_rows[0],
    )


def test_retried_insert_is_not_counted_twice_in_rollups(ch):
    """The flusher re-sends an interrupted flush with the same insert_deduplication_token:
    the event table drops it, and so must the views (dependent views of a deduplicated block
    are skipped when ``deduplicate_blocks_in_dependent_materialized_views`` = 1, which the
    flusher's insert settings say on every insert, whatever the server's default)."""
    events = [ad_event(t, profile_id=f"pf-{i % 3}")
              for i, t in enumerate(["impression", "impression", "skip", "complete", "click"])]
    block = "".join(json.dumps(e) + "\n" for e in _rows(events)).encode()
    for _ in range(3):  # the first insert and two retries
        ch.raw_insert("ad_events", insert_block=block, fmt="JSONEachRow",
                      settings=insert_settings("flush-1-a"))
    assert count(ch, "ad_events") == 5
    assert _rollup_sums(ch)[0] == (2, 1, 1, 1)
    assert ch.query("SELECT sum(events) FROM profile_activity_daily").result_rows[0][0] == 5
    # a new token is a new flush: counted
    ch.raw_insert("ad_events", insert_block=block, fmt="JSONEachRow",
                  settings=insert_settings("flush-2-a"))
    assert _rollup_sums(ch)[0] == (4, 2, 2, 2)
    # why the flusher says the setting: without it a retry reaches the views again
    loose = {**insert_settings("flush-3-a"),
             "deduplicate_blocks_in_dependent_materialized_views": 0}
    for _ in range(2):
        ch.raw_insert("ad_events", insert_block=block, fmt="JSONEachRow", settings=loose)
    assert count(ch, "ad_events") == 15
    assert _rollup_sums(ch)[0] == (8, 4, 4, 4)


def _rows(events: list[dict]) -> list[dict]:
    """API events as ad_events rows (the columns the flusher writes)."""
    out = []
    for e in events:
        ts = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.000")
        out.append({
            "event_id": e["event_id"], "type": e["type"], "ts": ts, "client_ts": ts,
            "received_at": ts, "clock_skew_ms": 0, "account_id": e["account_id"],
            "profile_id": e["profile_id"], "session_id": e["session_id"],
            "device": e["device"], "country": e["country"], "campaign_id": e["campaign_id"],
            "creative_id": e["creative_id"], "ad_serving_id": e["ad_serving_id"],
            "pod_id": e.get("pod_id", ""), "content_id": e.get("content_id", ""),
            "source": "batch", "batch_id": "b-1", "key_id": "k-1"})
    return out


def test_backfill_equals_what_the_views_wrote(ch, world):
    """The migration's INSERT ... SELECTs (run on data stored before the views existed) give
    the same rollups as the views filling them at insert time."""
    live = _rollup_sums(ch)
    assert live[0][0] > 0 and live[1][0] > 0 and live[2][0] > 0
    for table in ROLLUPS:
        ch.command(f"TRUNCATE TABLE {table}")
    migration = next(m for m in discover() if m.name == "profile_rollups")
    backfills = [s for s in migration.statements() if s.startswith("INSERT INTO")]
    assert len(backfills) == 3
    for statement in backfills:
        ch.command(statement)
    assert _rollup_sums(ch) == live


def test_erasure_removes_the_profile_from_rollups(ch, api, flush):
    events = [ad_event(profile_id=p) for p in ("pf-keep", "pf-gone", "pf-gone")]
    assert api.post_events(batch(events)).json()["accepted"] == 3
    flush()
    for table in ROLLUPS[::2]:  # ad and activity (these are ad events)
        assert count(ch, table, "profile_id = 'pf-gone'") == 1
    methods = erase_profile(ch, "pf-gone")
    assert set(ROLLUPS) <= set(methods)
    for table in ROLLUPS:
        assert count(ch, table, "profile_id = 'pf-gone'") == 0
    assert count(ch, "profile_activity_daily", "profile_id = 'pf-keep'") == 1
