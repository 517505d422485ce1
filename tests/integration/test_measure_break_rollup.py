"""The break and session rollups (sql/0010_break_rollups.sql) against the event tables.

Ad-induced abandonment reads ``ad_breaks_daily`` and ``session_ends_daily`` (filled by
materialized views at insert time); ``source="events"`` computes the same answer from the raw
ad and viewing events. These tests hold the two to each other on a simulated world (every
campaign, several flights, k small and large, the flight read whole and in session ranges)
and on hand-made sessions at the edges of the daily rows (a break across midnight, a session
whose next event falls after the window, one profile in two ranges), check that the
migration's backfill equals what the views wrote, that a retried flush is not counted twice,
and that an erasure takes the profile's breaks and sessions out.
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
    breaks = count(ch, "ad_breaks_daily")
    released = 0
    for campaign_id in campaigns:
        for lo, hi in ((days[0], days[-1]), (days[1], days[-2]), (days[2], days[2])):
            for k in (1, 50):
                info = _flight(campaign_id, lo, hi)
                old = L.abandonment(ch, info, k, source="events")
                new = L.abandonment(ch, info, k, source="rollup")
                assert new == old, (campaign_id, lo, hi, k)
                if lo == days[0]:  # the same flight split into ~5 session ranges
                    split = L.abandonment(ch, info, k, range_rows=max(1, breaks // 5))
                    assert split == old, (campaign_id, k)
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


def _ad(profile: str, session: str, pod: str, serving: str, campaign: str, ts: dt.datetime,
        event_type: str = "impression") -> str:
    t = ts.strftime("%Y-%m-%d %H:%M:%S.000")
    return (f'{{"event_id":"{uuid.uuid4()}","type":"{event_type}","ts":"{t}","client_ts":"{t}",'
            f'"received_at":"{t}","clock_skew_ms":0,"account_id":"acc","profile_id":"{profile}",'
            f'"session_id":"{session}","device":"tv","country":"US","campaign_id":"{campaign}",'
            f'"creative_id":"cr","ad_serving_id":"{serving}","pod_id":"{pod}","content_id":"",'
            f'"source":"batch","batch_id":"b","key_id":"k"}}\n')


def _play(profile: str, session: str, ts: dt.datetime) -> str:
    t = ts.strftime("%Y-%m-%d %H:%M:%S.000")
    return (f'{{"event_id":"{uuid.uuid4()}","type":"heartbeat","ts":"{t}","client_ts":"{t}",'
            f'"received_at":"{t}","clock_skew_ms":0,"account_id":"acc","profile_id":"{profile}",'
            f'"session_id":"{session}","device":"tv","country":"US","content_id":"t-1",'
            f'"source":"batch","batch_id":"b","key_id":"k"}}\n')


def test_breaks_across_midnight_and_ends_after_the_window(ch):
    """Hand-made sessions at the edges the rollup cuts by day, summed over session ranges."""
    d1 = dt.datetime.combine(dt.date.today() - dt.timedelta(days=6), dt.time(),
                             tzinfo=dt.timezone.utc)
    d2, d3, d4 = (d1 + dt.timedelta(days=n) for n in (1, 2, 3))
    sec = dt.timedelta(seconds=1)
    ads = [
        # a break spanning midnight: one ad on each day plus the first ad's completion after
        # midnight (2 distinct ads); viewing goes on 10 min later: not abandoned
        _ad("pf-a", "s-a", "p-a", "as-a1", "cmp-t", d2 - 10 * sec),
        _ad("pf-a", "s-a", "p-a", "as-a1", "cmp-t", d2 + 10 * sec, "complete"),
        _ad("pf-a", "s-a", "p-a", "as-a2", "cmp-t", d2 + 20 * sec),
        # the flight's last minute; the session's next event is two days later, after the
        # window: abandoned
        _ad("pf-b", "s-b", "p-b", "as-b", "cmp-o", d3 - 60 * sec),
        # the flight's last seconds; the last event is 50 s later, on the next day: abandoned
        _ad("pf-c", "s-c", "p-c", "as-c", "cmp-t", d3 - 30 * sec),
        # one profile, two sessions (likely in two session ranges): one profile per group
        _ad("pf-d", "s-d1", "p-d1", "as-d1", "cmp-t", d1 + 3600 * sec),
        _ad("pf-d", "s-d2", "p-d2", "as-d2", "cmp-o", d1 + 7200 * sec),
        _ad("pf-e", "s-e", "p-e", "as-e", "cmp-o", d2 + 7200 * sec),
    ]
    plays = [_play("pf-a", "s-a", d2 + 600 * sec), _play("pf-b", "s-b", d4 + 3600 * sec),
             _play("pf-c", "s-c", d3 + 20 * sec), _play("pf-d", "s-d2", d1 + 7800 * sec),
             _play("pf-e", "s-e", d2 + 7800 * sec)]
    ch.raw_insert("ad_events", insert_block="".join(ads).encode(), fmt="JSONEachRow")
    ch.raw_insert("content_events", insert_block="".join(plays).encode(), fmt="JSONEachRow")
    info = _flight("cmp-t", d1.date(), d2.date())
    for k in (1, 2, 3, 4):
        old = L.abandonment(ch, info, k, source="events")
        for range_rows in (1, 3, L.RANGE_BREAK_ROWS):  # 1: one range per break row
            assert L.abandonment(ch, info, k, range_rows=range_rows) == old, (k, range_rows)
    got = L.abandonment(ch, info, 1, range_rows=1)
    assert (got["campaign_breaks"], got["campaign_rate"]) == (3, round(2 / 3, 6))
    assert (got["baseline_breaks"], got["baseline_rate"]) == (3, round(1 / 3, 6))
    assert [(s["pod_size"], s["breaks"]) for s in got["by_pod_size"]] == [("1", 5), ("2", 1)]
    # each group covers 3 profiles (pf-d once in both): released at k = 3, not at 4
    assert not L.abandonment(ch, info, 3, range_rows=1)["suppressed"]
    assert L.abandonment(ch, info, 4, range_rows=1)["suppressed"]
