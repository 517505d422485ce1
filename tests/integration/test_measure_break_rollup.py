"""The break and session rollups (sql/0010_break_rollups.sql) against the event tables.

Ad-induced abandonment reads ``ad_breaks_daily`` and ``session_ends_daily`` (filled by
materialized views at insert time); ``source="events"`` computes the same answer from the raw
ad and viewing events. These tests hold the two to each other on a simulated world (every
campaign, several flights, k small and large), check that the migration's backfill equals
what the views wrote, that a retried flush is not counted twice, and that an erasure takes
the profile's breaks and sessions out.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from adtier.ingest.flusher import insert_settings
from adtier.measure import lift as L
from adtier.measure.privacy import CampaignInfo
from adtier.store.migrate import discover
from tests.integration.conftest import count, load_world

PROFILES = 1_200
DAYS = 6


@pytest.fixture
def world(ch):
    return load_world(ch, 7, PROFILES, DAYS)


def _flight(campaign_id: str, start: dt.date, end: dt.date) -> CampaignInfo:
    return CampaignInfo(campaign_id, "adv", start, end, 0, 0.0, None, None)


def _breaks_sums(ch) -> tuple:
    return (ch.query("SELECT count(), uniqExact(day, session_hash, pod_hash), max(break_end), "
                     "sum(length(campaigns)), uniqUpToMerge(4)(ads), sum(profile_hash % 1000) "
                     "FROM (SELECT day, session_hash, pod_hash, max(break_end) AS break_end, "
                     "uniqUpToMergeState(4)(ads) AS ads, groupUniqArrayArray(campaigns) AS "
                     "campaigns, any(profile_hash) AS profile_hash FROM ad_breaks_daily "
                     "GROUP BY day, session_hash, pod_hash)").result_rows[0],
            ch.query("SELECT uniqExact(day, session_hash), sum(toUnixTimestamp64Milli(t)) "
                     "FROM (SELECT day, session_hash, max(last_ts) AS t FROM session_ends_daily "
                     "GROUP BY day, session_hash)").result_rows[0])


def test_rollup_abandonment_equals_the_event_tables(ch, world):
    days = [r[0] for r in ch.query("SELECT DISTINCT toDate(ts) FROM ad_events ORDER BY 1")
            .result_rows]
    campaigns = [r[0] for r in ch.query("SELECT campaign_id FROM ad_events GROUP BY campaign_id "
                                        "ORDER BY count() DESC LIMIT 3").result_rows]
    released = 0
    for campaign_id in campaigns:
        for lo, hi in ((days[0], days[-1]), (days[1], days[-2]), (days[2], days[2])):
            for k in (1, 50):
                info = _flight(campaign_id, lo, hi)
                old = L.abandonment(ch, info, k, source="events")
                new = L.abandonment(ch, info, k, source="rollup")
                assert new == old, (campaign_id, lo, hi, k)
                released += not new["suppressed"]
    assert released >= 6
    # one row per break and day: several times fewer rows than the ad events they fold
    assert count(ch, "ad_breaks_daily") * 3 < count(ch, "ad_events")


def test_backfill_equals_what_the_views_wrote(ch, world):
    live = _breaks_sums(ch)
    assert live[0][0] > 0 and live[1][0] > 0
    ch.command("TRUNCATE TABLE ad_breaks_daily")
    ch.command("TRUNCATE TABLE session_ends_daily")
    migration = next(m for m in discover() if m.name == "break_rollups")
    backfills = [s for s in migration.statements() if s.startswith("INSERT INTO")]
    assert len(backfills) == 2
    for statement in backfills:
        ch.command(statement)
    assert _breaks_sums(ch) == live


def _row(event_type: str, profile: str, pod: str, serving: str, ts: str) -> str:
    return (f'{{"event_id":"{uuid.uuid4()}","type":"{event_type}","ts":"{ts}","client_ts":"{ts}",'
            f'"received_at":"{ts}","clock_skew_ms":0,"account_id":"acc","profile_id":"{profile}",'
            f'"session_id":"s-{profile}","device":"tv","country":"US","campaign_id":"cmp-b",'
            f'"creative_id":"cr","ad_serving_id":"{serving}","pod_id":"{pod}","content_id":"",'
            f'"source":"batch","batch_id":"b","key_id":"k"}}\n')


def test_retried_flush_is_not_counted_twice_and_erasure_removes_rows(ch):
    ts = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.000")
    block = "".join(_row("impression", f"pf-{i}", f"pod-{i}", f"as-{i}-{j}", ts)
                    for i in range(3) for j in range(i + 1)).encode()
    for _ in range(3):  # the first insert and two retries under the flusher's token
        ch.raw_insert("ad_events", insert_block=block, fmt="JSONEachRow",
                      settings=insert_settings("flush-9-a"))
    sizes = dict(ch.query("SELECT profile_hash, uniqUpToMerge(4)(ads) FROM ad_breaks_daily "
                          "GROUP BY profile_hash").result_rows)
    hashes = dict(ch.query("SELECT cityHash64(p), p FROM (SELECT arrayJoin(['pf-0', 'pf-1', "
                           "'pf-2']) AS p)").result_rows)
    assert {hashes[h]: n for h, n in sizes.items()} == {"pf-0": 1, "pf-1": 2, "pf-2": 3}
    # The rollups' aggregates are idempotent (max, uniqUpTo, groupUniqArray), so a block stored
    # twice could not change an answer; the row counts show the views took the block once (a
    # background merge could only fold rows, never make a doubled block look single).
    assert count(ch, "ad_breaks_daily") == 3
    assert count(ch, "session_ends_daily") == 3

    from adtier.catalog.store import erase_profile

    methods = erase_profile(ch, "pf-1")
    assert {"ad_breaks_daily", "session_ends_daily"} <= methods.keys()
    assert count(ch, "ad_breaks_daily", "profile_hash = cityHash64('pf-1')") == 0
    assert count(ch, "session_ends_daily", "profile_hash = cityHash64('pf-1')") == 0
    assert count(ch, "session_ends_daily") == 2
