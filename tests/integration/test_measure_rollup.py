"""The measurement rollup (sql/0007_measure_rollups.sql) against the event table.

Reports and frequency read ``ad_campaign_daily`` (filled by a materialized view at insert
time); ``source="events"`` computes the same answer from ``ad_events``. These tests hold the two
to each other on a simulated world (every breakdown, several date ranges, a small k so folding
happens), check that a retried flush (same deduplication token) is not counted twice, that the
migration's backfill equals what the view wrote, and that an erased profile leaves every number
at once (filtered by hash at query time), late events included.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from adtier.ingest.flusher import insert_settings
from adtier.measure import reach as R
from adtier.store.migrate import discover
from tests.helpers import ad_event, as_first_written, batch
from tests.integration.conftest import count, load_world

PROFILES = 1_200
DAYS = 6


@pytest.fixture
def world(ch):
    return load_world(ch, 5, PROFILES, DAYS)


def _campaigns(ch) -> list[str]:
    return [r[0] for r in ch.query("SELECT campaign_id FROM ad_events GROUP BY campaign_id "
                                   "ORDER BY count() DESC LIMIT 3").result_rows]


def test_rollup_answers_equal_the_event_table(ch, world):
    days = [r[0] for r in ch.query("SELECT DISTINCT toDate(ts) FROM ad_events ORDER BY 1")
            .result_rows]
    ranges = [(R.MIN_DATE, R.MAX_DATE), (days[1], days[-2]), (days[2], days[2])]
    compared = 0
    for campaign_id in _campaigns(ch):
        for lo, hi in ranges:
            for k in (1, 20, 50):
                for by in R.DIMENSIONS:
                    old = R.report(ch, campaign_id, by, lo, hi, k, source="events")
                    new = R.report(ch, campaign_id, by, lo, hi, k, source="rollup")
                    assert new == old, (campaign_id, by, lo, hi, k)
                    compared += bool(new["rows"])
                old = R.frequency(ch, campaign_id, lo, hi, k, source="events")
                assert R.frequency(ch, campaign_id, lo, hi, k, source="rollup") == old
    assert compared > 50
    # the rollup is several times smaller than the events it folds
    assert count(ch, "ad_campaign_daily") * 2 < count(ch, "ad_events")


def test_backfill_equals_what_the_view_wrote(ch, world):
    def sums() -> tuple:
        return ch.query("SELECT sum(impressions), sum(starts), sum(completes), sum(skips), "
                        "sum(clicks), sum(viewable_impressions), sum(errors), max(max_ts), "
                        "uniqExact(campaign_id, day, device, country, creative_id, "
                        "break_position, profile_hash) FROM ad_campaign_daily").result_rows[0]

    live = sums()
    assert live[0] == count(ch, "ad_events", "type = 'impression'") > 0
    ch.command("TRUNCATE TABLE ad_campaign_daily")
    migration = next(m for m in discover() if m.name == "measure_rollups")
    backfills = [s for s in migration.statements() if s.startswith("INSERT INTO")]
    assert len(backfills) == 1
    ch.command(as_first_written(ch, backfills[0]))
    assert sums() == live


def _rows(events: list[dict]) -> bytes:
    """API events as the JSONEachRow block the flusher writes into ad_events."""
    ts = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.000")
    out = []
    for e in events:
        out.append(json.dumps({
            "event_id": e["event_id"], "type": e["type"], "ts": ts, "client_ts": ts,
            "received_at": ts, "clock_skew_ms": 0, "account_id": e["account_id"],
            "profile_id": e["profile_id"], "session_id": e["session_id"], "device": e["device"],
            "country": e["country"], "campaign_id": e["campaign_id"],
            "creative_id": e["creative_id"], "ad_serving_id": e["ad_serving_id"],
            "pod_id": "", "content_id": "", "source": "batch", "batch_id": "b-1",
            "key_id": "k-1"}) + "\n")
    return "".join(out).encode()


def test_retried_flush_is_not_counted_twice(ch):
    """The flusher re-sends an interrupted flush with the same insert_deduplication_token:
    ad_events drops it, and ClickHouse skips the dependent view for a deduplicated block, so
    the rollup's counts stay those of one insert (a new token is a new flush: counted)."""
    events = [ad_event(t, profile_id=f"pf-{i % 3}", campaign_id="cmp-r")
              for i, t in enumerate(["impression", "impression", "start", "complete", "click",
                                     "impression"])]
    block = _rows(events)
    today = dt.datetime.now(dt.timezone.utc).date()

    def totals(source: str) -> dict:
        return R.report(ch, "cmp-r", "day", today, today, 1, source=source)["totals"]

    for _ in range(3):  # the first insert and two retries, as the flusher sends them
        ch.raw_insert("ad_events", insert_block=block, fmt="JSONEachRow",
                      settings=insert_settings("flush-7-a"))
    assert count(ch, "ad_events") == 6
    once = totals("rollup")
    assert once == totals("events")
    assert (once["impressions"], once["reach"], once["starts"], once["completes"],
            once["clicks"]) == (3, 3, 1, 1, 1)
    ch.raw_insert("ad_events", insert_block=block, fmt="JSONEachRow",
                  settings=insert_settings("flush-8-a"))
    twice = totals("rollup")
    assert twice["impressions"] == 6 and twice["reach"] == 3 and twice == totals("events")


def test_erased_profile_leaves_every_number(api, flush, ch):
    """Erasure deletes the profile's events and rollup rows; a late event of the profile
    (stored after the erasure) lands in the rollup again and the reports filter it by hash."""
    assert api.client.put("/v1/catalog/advertisers", headers=api.admin, json={"items": [
        {"advertiser_id": "adv-e", "name": "E"}]}).status_code == 200
    assert api.client.put("/v1/catalog/campaigns", headers=api.admin, json={"items": [
        {"campaign_id": "cmp-e", "advertiser_id": "adv-e", "name": "E", "ad_category": "IAB1",
         "start_date": "2025-01-01", "end_date": "2030-12-31", "frequency_cap": 0,
         "holdout_percent": 0.0}]}).status_code == 200
    events = []
    for i in range(60):
        for j in range(1 + (i == 0) * 4):  # pf-00 has 5 impressions, the others 1
            events.append(ad_event("impression", profile_id=f"pf-{i:02d}", campaign_id="cmp-e",
                                   ad_serving_id=f"as-{i}-{j}"))
            events.append(ad_event("complete", profile_id=f"pf-{i:02d}", campaign_id="cmp-e",
                                   ad_serving_id=f"as-{i}-{j}"))
    assert api.post_events(batch(events)).json()["accepted"] == len(events)
    flush()
    adv = api.admin  # exact numbers: advertiser keys get them noised (docs/privacy.md)

    def report() -> dict:
        body = api.client.get("/v1/campaigns/cmp-e/report?by=device", headers=adv).json()
        return body["totals"]

    def frequency() -> dict:
        return api.client.get("/v1/campaigns/cmp-e/frequency", headers=adv).json()

    before = report()
    assert (before["reach"], before["impressions"], before["completes"]) == (60, 64, 64)
    assert frequency()["reach"] == 60
    assert api.client.delete("/v1/privacy/profiles/pf-00", headers=api.admin).status_code == 202
    # a late event of the erased profile (stored after the erasure) stays out as well
    late = ad_event("impression", profile_id="pf-00", campaign_id="cmp-e", ad_serving_id="late")
    assert api.post_events(batch([late])).json()["accepted"] == 1
    flush()
    assert count(ch, "ad_campaign_daily", "profile_hash = cityHash64('pf-00')") == 1  # the late one
    after = report()
    assert (after["reach"], after["impressions"], after["completes"]) == (59, 59, 59)
    freq = frequency()
    assert freq["reach"] == 59 and freq["impressions"] == 59
    assert {d["frequency"]: d["profiles"] for d in freq["distribution"]}["1"] == 59
    today = dt.datetime.now(dt.timezone.utc).date()
    for by in ("day", "device"):
        assert (R.report(ch, "cmp-e", by, today, today, 50, source="rollup")
                == R.report(ch, "cmp-e", by, today, today, 50, source="events"))
