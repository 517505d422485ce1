"""Live counters against a real Valkey: hourly buckets, 24 h window, last ad, exclusions."""

from __future__ import annotations

import asyncio
import hashlib
import time

import redis.asyncio as aredis

from adtier.features.live import LiveCounters, _AdRow, read_live

NOW = float(int(time.time()) // 3600 * 3600 + 1800)  # half past the current hour


def row(type_: str, ts: float, profile: str = "p1", campaign: str = "c1", creative: str = "cr1"):
    return _AdRow(type=type_, ts=ts, profile_id=profile, campaign_id=campaign,
                  creative_id=creative)


def read(valkey_url: str, profile: str, now: float = NOW):
    async def go():
        client = aredis.Redis.from_url(valkey_url)
        try:
            return await read_live(client, profile, now=now)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_window_categories_last_ad_and_expiry(rds, valkey):
    counters = LiveCounters(rds, None)
    counters.categories = {"c1": "IAB18"}
    rows = [row("impression", NOW - 60), row("impression", NOW - 3600 * 5, campaign="c2",
                                             creative="old"),
            row("complete", NOW - 50), row("skip", NOW - 40), row("click", NOW - 30),
            row("midpoint", NOW - 20),  # not a counted type
            row("impression", NOW - 3600 * 30)]  # outside the window: not counted
    assert counters.update(rows, now=NOW) == 5
    live = read(valkey.url, "p1")
    assert (live.impressions, live.completes, live.skips, live.clicks) == (2, 1, 1, 1)
    assert live.by_category == {"IAB18": {"impressions": 1, "completes": 1, "skips": 1,
                                          "clicks": 1}}
    assert (live.last_ad.campaign_id, live.last_ad.ts) == ("c1", NOW - 60)
    # an older impression in a later flush does not replace the last ad
    counters.update([row("impression", NOW - 600, campaign="c9")], now=NOW)
    assert read(valkey.url, "p1").last_ad.campaign_id == "c1"
    # every bucket expires 25 h after its hour began
    for key in rds.scan_iter("adtier:fl:*"):
        ttl = rds.ttl(key)
        assert 0 < ttl <= 25 * 3600 + 3600, (key, ttl)
    # 23 hours later only this hour's bucket is still in the window; 24 hours later none
    later = read(valkey.url, "p1", now=NOW + 3600 * 23)
    assert (later.impressions, later.completes) == (2, 1)
    assert read(valkey.url, "p1", now=NOW + 3600 * 24).impressions == 0


def test_excluded_profiles_get_no_counters(rds, valkey):
    counters = LiveCounters(rds, None)
    counters.excluded_ids = frozenset({"kid"})
    counters.erased_sha256 = frozenset({hashlib.sha256(b"gone").hexdigest()})
    n = counters.update([row("impression", NOW, profile=p) for p in ("kid", "gone", "ok")],
                        now=NOW)
    assert n == 1
    assert {k.decode().split("{")[1].split("}")[0] for k in rds.scan_iter("adtier:fl:*")} == {"ok"}
    assert read(valkey.url, "kid").empty and not read(valkey.url, "ok").empty


def test_session_marks_keep_each_sessions_newest_ad_across_flushes(rds, valkey):
    """Marks are applied per profile (one item for many sessions); each session keeps the
    newest ad time over rows and flushes, and a stop counts 0-60 s after that time only."""
    from adtier.features.live import _SESSIONS_PER_MARK, _StopRow

    counters = LiveCounters(rds, None)
    many = _SESSIONS_PER_MARK + 7  # one profile's sessions span two mark items

    def ad(ts: float, session: str) -> _AdRow:
        return _AdRow(type="start", ts=ts, profile_id="p1", session_id=session)

    counters.update([ad(NOW - 300, f"s{i}") for i in range(many)] + [ad(NOW - 200, "s0")],
                    now=NOW)
    # s0: older, kept; s1: newer; a new session beside known ones
    counters.update([ad(NOW - 250, "s0"), ad(NOW - 100, "s1"), ad(NOW - 40, "fresh")], now=NOW)
    marks = {k.decode(): float(v) for k, v in rds.hgetall("adtier:fl:{p1}:ses").items()}
    assert len(marks) == many + 1
    assert marks["fresh"] == NOW - 40
    assert (marks["s0"], marks["s1"], marks[f"s{many - 1}"]) == (NOW - 200, NOW - 100, NOW - 300)
    assert 0 < rds.ttl("adtier:fl:{p1}:ses") <= 6 * 3600 + 3600  # NOW is up to 1 h ahead

    def stop(ts: float, session: str) -> _StopRow:
        return _StopRow(type="content_stop", ts=ts, profile_id="p1", session_id=session)

    # s0: 30 s after its newest ad (counted); s1: 90 s after (not); s2: 10 s after (counted)
    counters.update([], now=NOW, stops=[stop(NOW - 170, "s0"), stop(NOW - 10, "s1"),
                                        stop(NOW - 290, "s2")])
    assert read(valkey.url, "p1").post_ad_abandons == 2
    # a counted break is forgotten: the same stop again counts nothing
    counters.update([], now=NOW, stops=[stop(NOW - 170, "s0")])
    assert read(valkey.url, "p1").post_ad_abandons == 2


def test_last_ad_is_the_first_of_equally_new_impressions(rds, valkey):
    counters = LiveCounters(rds, None)
    counters.update([row("impression", NOW - 10, campaign="first"),
                     row("impression", NOW - 10, campaign="second"),
                     row("impression", NOW - 20, campaign="older")], now=NOW)
    assert read(valkey.url, "p1").last_ad.campaign_id == "first"
