"""Ad tolerance (batch) and post-ad abandonment (batch and live), on the real stores."""

from __future__ import annotations

import pytest

from adtier.features import batch as features_batch
from tests.helpers import ad_event, content_event, now_ms
from tests.integration.test_features_http import recs, seed, send  # noqa: F401

MIN = 60_000


def test_ad_tolerance_counts_ads_per_watch_hour_of_abandoned_sessions(api, flush, ch, rds):
    seed(api)
    t0 = now_ms() - 3 * 3600_000
    t1 = t0 + 3600_000
    events = [
        # s1: an ad, 30 min watched, then gone 15 s after the ad completed: abandoned
        ad_event("impression", profile_id="pf-t", session_id="s1", ad_serving_id="a1", ts=t0),
        ad_event("complete", profile_id="pf-t", session_id="s1", ad_serving_id="a1",
                 ts=t0 + 15_000),
        content_event("content_heartbeat", profile_id="pf-t", session_id="s1",
                      watched_ms=30 * MIN, ts=t0 + 20_000),
        content_event("content_stop", profile_id="pf-t", session_id="s1", watched_ms=30 * MIN,
                      ts=t0 + 30_000),
        # s2: an ad, then 60 min of viewing for 20 min more: not abandoned
        ad_event("impression", profile_id="pf-t", session_id="s2", ad_serving_id="a2", ts=t1),
        content_event("content_heartbeat", profile_id="pf-t", session_id="s2",
                      watched_ms=60 * MIN, ts=t1 + 20 * MIN),
        # s3: viewing only (no ad): not an ad session
        content_event("content_heartbeat", profile_id="pf-t", session_id="s3",
                      watched_ms=90 * MIN, ts=t1 + 30 * MIN),
        # pf-n never abandons: its tolerance is its ad load
        ad_event("impression", profile_id="pf-n", session_id="n1", ad_serving_id="n1", ts=t0),
        ad_event("impression", profile_id="pf-n", session_id="n1", ad_serving_id="n2", ts=t0),
        content_event("content_heartbeat", profile_id="pf-n", session_id="n1",
                      watched_ms=30 * MIN, ts=t0 + 40 * MIN),
    ]
    send(api, events)
    flush()
    features_batch.compute(ch, redis_client=rds)
    rows = {r[0]: r[1:] for r in ch.query(
        "SELECT profile_id, ad_sessions, post_ad_abandons, ad_load, ad_tolerance "
        "FROM profile_features FINAL").result_rows}
    sessions, abandons, load, tolerance = rows["pf-t"]
    assert (sessions, abandons) == (2, 1)
    assert load == pytest.approx(2 / 1.5, rel=1e-6)  # 2 impressions in 0.5 h + 1 h
    assert tolerance == pytest.approx(1 / 0.5, rel=1e-6)  # 1 impression in the 0.5 h left
    assert rows["pf-n"] == (1, 0, pytest.approx(4.0), pytest.approx(4.0))


def test_post_ad_abandonment_shows_in_the_live_counters(api, flush, ch, rds, recs):
    seed(api)
    t = now_ms() - 10 * MIN

    def lookup(profile: str) -> dict:
        answer = api.client.get(f"/v1/features/profiles/{profile}", headers=recs)
        assert answer.status_code == 200, answer.text
        return answer.json()["live"]

    # the same flush: an ad, then a stop 40 s after it (counted) ...
    send(api, [ad_event("impression", profile_id="pf-1", session_id="s1", ts=t),
               ad_event("skip", profile_id="pf-1", session_id="s1", ts=t + 5_000),
               content_event("content_stop", profile_id="pf-1", session_id="s1",
                             ts=t + 45_000),
               # ... a stop 2 min after the ad (not counted) ...
               ad_event("impression", profile_id="pf-2", session_id="s2", ts=t),
               content_event("content_stop", profile_id="pf-2", session_id="s2",
                             ts=t + 2 * MIN)])
    flush()
    assert lookup("pf-1")["post_ad_abandons"] == 1
    assert lookup("pf-2")["post_ad_abandons"] == 0
    # ... and across flushes: the ad in one, the stop in a later one
    send(api, [ad_event("impression", profile_id="pf-3", session_id="s3", ts=t)])
    flush()
    send(api, [content_event("content_stop", profile_id="pf-3", session_id="s3", ts=t + 30_000),
               content_event("content_stop", profile_id="pf-3", session_id="s3", ts=t + 31_000),
               ad_event("impression", profile_id="pf-4", session_id="s4", ts=t)])
    flush()
    assert lookup("pf-3")["post_ad_abandons"] == 1  # one ad break counts once
    # ... and a stop flushed alone, with no ad rows at all in its flush
    send(api, [ad_event("impression", profile_id="pf-5", session_id="s5", ts=t)])
    flush()
    send(api, [content_event("content_stop", profile_id="pf-5", session_id="s5", ts=t + 20_000)])
    flush()
    assert lookup("pf-5")["post_ad_abandons"] == 1
