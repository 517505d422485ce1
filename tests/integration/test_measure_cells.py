"""Campaign reports from bitmap cells (sql/0011, measure/cells.py) against the per-profile rollup.

Every ad event carries its profile's dense ordinal (ingest/ordinals.py); the cells keep bitmaps
of ordinals and counters per (campaign, dimension, day, value). These tests hold the cells'
reports to the rollup's (itself held to the raw events by test_measure_rollup.py) on a
simulated world, through the flusher, after erasures with late events, after Valkey lost the
ordinal map, after the migration's backfill, and for events that came without ordinals.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid

import pytest

from adtier.ingest.erased_events import copy_flushed
from adtier.catalog.store import erase_profile
from adtier.ingest.flusher import insert_settings, with_ordinals
from adtier.ingest.ordinals import MAP_KEY, NEXT_KEY, Ordinals
from adtier.measure import reach as R
from adtier.measure.cells import cell_rows
from adtier.store.migrate import discover
from tests.helpers import ad_event, as_first_written, batch
from tests.integration.conftest import count, load_world
from tests.integration.test_measure_rollup import _rows

PROFILES = 1_200
DAYS = 6


@pytest.fixture
def world(ch, rds):
    return load_world(ch, 5, PROFILES, DAYS, rds)


def _campaigns(ch) -> list[str]:
    return [r[0] for r in ch.query("SELECT campaign_id FROM ad_events GROUP BY campaign_id "
                                   "ORDER BY count() DESC LIMIT 3").result_rows]


def _ranges(ch) -> list[tuple[dt.date, dt.date]]:
    days = [r[0] for r in ch.query("SELECT DISTINCT toDate(ts) FROM ad_events ORDER BY 1")
            .result_rows]
    return [(R.MIN_DATE, R.MAX_DATE), (days[1], days[-2]), (days[2], days[2])]


def _assert_cells_equal_rollup(ch, campaigns: list[str], ks=(1, 20, 50)) -> int:
    compared = 0
    for campaign_id in campaigns:
        for lo, hi in _ranges(ch):
            for by in R.DIMENSIONS:
                # answered from the bitmaps, not by the fallback
                assert cell_rows(ch, campaign_id, by, lo, hi) is not None
                for k in ks:
                    cells = R.report(ch, campaign_id, by, lo, hi, k, source="cells")
                    assert cells == R.report(ch, campaign_id, by, lo, hi, k, source="rollup"), (
                        campaign_id, by, lo, hi, k)
                    compared += bool(cells["rows"])
    return compared


def test_cells_answer_equals_the_rollup(ch, world):
    assert count(ch, "ad_events", "profile_ord = 0") == 0
    # one ordinal per profile, one profile per ordinal
    assert ch.query("SELECT uniqExact(profile_id), uniqExact(profile_ord), "
                    "uniqExact(profile_id, profile_ord) FROM ad_events").result_rows[0] == (
        (n := count(ch, "profile_ordinals")), n, n)
    assert _assert_cells_equal_rollup(ch, _campaigns(ch)) > 50


def test_erased_profiles_and_their_late_events_leave_the_cells(ch, rds, world):
    campaign = _campaigns(ch)[0]
    erased = [r[0] for r in ch.query(
        "SELECT profile_id FROM ad_events WHERE campaign_id = {c:String} GROUP BY profile_id "
        "ORDER BY count() DESC LIMIT 3", parameters={"c": campaign}).result_rows]
    for profile_id in erased:
        erase_profile(ch, profile_id)
    # late events of two erased profiles, written the way the flusher writes them
    late = _rows([ad_event(t, profile_id=p, campaign_id=campaign)
                  for p in erased[:2] for t in ("impression", "start", "complete")])
    ch.raw_insert("ad_events", insert_block=with_ordinals(late, Ordinals(rds, ch), "late-o"),
                  fmt="JSONEachRow", settings=insert_settings("late-a"))
    assert count(ch, "ad_events", "profile_id IN {p:Array(String)}", {"p": erased}) == 6
    assert count(ch, "ad_erased_events", "event_id IN (SELECT event_id FROM ad_events)") == 6
    _assert_cells_equal_rollup(ch, [campaign], ks=(1, 50))
    # erasing again (a retried request) copies the late events again: still counted once
    erase_profile(ch, erased[0])
    _assert_cells_equal_rollup(ch, [campaign], ks=(1,))


class _InsertBeforeDelete:
    """The real client; ``between`` runs once, between the erasure's read and its delete."""

    def __init__(self, real, between):
        self.real, self.between = real, between

    def __getattr__(self, name):
        return getattr(self.real, name)

    def command(self, sql, *args, **kwargs):
        if sql.startswith("DELETE FROM ad_events"):
            self.between, between = (lambda: None), self.between
            between()
        return self.real.command(sql, *args, **kwargs)


def _view_ran_before_the_erasure(ch, write) -> None:
    """``write`` as an insert whose view ran before the erasure was recorded: not copied."""
    ch.command("DETACH TABLE ad_erased_events_mv")
    try:
        write()
    finally:
        ch.command("ATTACH TABLE ad_erased_events_mv")


def test_events_straddling_an_erasure_leave_the_counters(api, flush, ch, rds, world):
    campaign = _campaigns(ch)[0]
    a, b = [r[0] for r in ch.query(
        "SELECT profile_id FROM ad_events WHERE campaign_id = {c:String} GROUP BY profile_id "
        "ORDER BY count() DESC LIMIT 2", parameters={"c": campaign}).result_rows]
    # a: an insert commits between the erasure's read and its delete
    late = _rows([ad_event(t, profile_id=a, campaign_id=campaign) for t in ("impression", "skip")])
    late = late.replace(b'"batch_id": "b-1"', b'"batch_id": "b-straddle"')
    received_ms = int(time.time() * 1000)

    def straddle() -> None:
        _view_ran_before_the_erasure(ch, lambda: ch.raw_insert(
            "ad_events", insert_block=with_ordinals(late, Ordinals(rds, ch), "st-o"),
            fmt="JSONEachRow", settings=insert_settings("st-a")))

    erase_profile(_InsertBeforeDelete(ch, straddle), a)
    # the erasure deleted only what it copied; the straddler waits for its flusher's copy
    assert count(ch, "ad_events", "profile_id = {p:String}", {"p": a}) == 2
    assert count(ch, "ad_erased_events", "batch_id = 'b-straddle'") == 0
    # its flusher's check after the insert: a (the only erased profile of the block) is copied
    assert copy_flushed(ch, late, ["b-straddle"], received_ms) == [a]
    assert count(ch, "ad_erased_events FINAL", "batch_id = 'b-straddle'") == 2
    # b: events received, the profile erased, then their insert (its view ran before the
    # erasure) commits: the flusher copies them
    events = [ad_event(t, profile_id=b, campaign_id=campaign) for t in ("impression", "click")]
    assert api.post_events(batch(events)).json()["accepted"] == 2
    erase_profile(ch, b)
    _view_ran_before_the_erasure(ch, flush)
    assert count(ch, "ad_erased_events FINAL",
                 "event_id IN {e:Array(UUID)}", {"e": [e["event_id"] for e in events]}) == 2
    _assert_cells_equal_rollup(ch, [campaign], ks=(1, 50))
    # a block of profiles nobody erased copies nothing, however recent the erasures
    other = _rows([ad_event("impression", profile_id="pf-kept", campaign_id=campaign)])
    assert copy_flushed(ch, other, ["b-1"], received_ms) == []


def test_backfill_equals_what_the_views_wrote(ch, world):
    campaigns = _campaigns(ch)
    lo, hi = R.MIN_DATE, R.MAX_DATE
    before = {(c, by): R.report(ch, c, by, lo, hi, 20, source="cells")
              for c in campaigns for by in R.DIMENSIONS}
    for table in ("profile_ordinals", "ad_campaign_cells", "ad_erased_events"):
        ch.command(f"TRUNCATE TABLE {table}")
    migration = next(m for m in discover() if m.name == "reach_bitmaps")
    backfills = [s for s in migration.statements() if s.startswith("INSERT INTO")]
    assert len(backfills) == 3
    for statement in backfills:
        ch.command(as_first_written(ch, statement))
    assert count(ch, "profile_ordinals") == ch.query(
        "SELECT uniqExact(profile_id) FROM ad_events").result_rows[0][0]
    for (c, by), report in before.items():
        assert cell_rows(ch, c, by, lo, hi) is not None
        assert R.report(ch, c, by, lo, hi, 20, source="cells") == report


def test_flushed_events_carry_ordinals_and_a_lost_map_is_reloaded(api, flush, ch, rds):
    def post(profiles: list[str]) -> None:
        events = [ad_event("impression", profile_id=p, campaign_id="cmp-o") for p in profiles]
        assert api.post_events(batch(events)).json()["accepted"] == len(events)
        flush()

    post([f"pf-{i}" for i in range(40)])
    first = dict(ch.query("SELECT profile_id, any(profile_ord) FROM ad_events "
                          "GROUP BY profile_id").result_rows)
    assert len(first) == 40 and 0 not in first.values() and len(set(first.values())) == 40
    rds.delete(MAP_KEY, NEXT_KEY)  # Valkey lost the map (e.g. a replaced server)
    post([f"pf-{i}" for i in range(20, 60)])
    per_profile = ch.query("SELECT profile_id, uniqExact(profile_ord), any(profile_ord) "
                           "FROM ad_events GROUP BY profile_id").result_rows
    assert all(n == 1 for _, n, _ in per_profile)  # a profile kept its ordinal
    ords = [o for _, _, o in per_profile]
    assert len(ords) == 60 and len(set(ords)) == 60  # and nobody got another's
    assert min(o for p, _, o in per_profile if p not in first) > max(first.values())
    today = dt.datetime.now(dt.timezone.utc).date()
    report = R.report(ch, "cmp-o", "device", today, today, 1, source="cells")
    assert report["totals"]["reach"] == 60 and report["totals"]["impressions"] == 80
    assert report == R.report(ch, "cmp-o", "device", today, today, 1, source="events")


def test_events_without_ordinals_are_answered_from_the_rollup(ch):
    events = [ad_event(t, profile_id=f"pf-{i % 4}", campaign_id="cmp-u")
              for i, t in enumerate(["impression"] * 6 + ["complete"] * 2)]
    ch.raw_insert("ad_events", insert_block=_rows(events), fmt="JSONEachRow",
                  settings=insert_settings("no-ord-a"))
    today = dt.datetime.now(dt.timezone.utc).date()
    assert cell_rows(ch, "cmp-u", "day", today, today) is None  # unassigned events in range
    report = R.report(ch, "cmp-u", "day", today, today, 1)
    assert report == R.report(ch, "cmp-u", "day", today, today, 1, source="rollup")
    assert report["totals"]["reach"] == 4 and report["totals"]["impressions"] == 6


def test_concurrent_assignment_gives_each_profile_one_ordinal(ch, rds):
    ids = [f"pf-{uuid.uuid4().hex}" for _ in range(3_000)]
    got: list[dict[str, int]] = []

    def assign(part: list[str]) -> None:
        got.append(Ordinals(rds, ch).assign(part))

    threads = [threading.Thread(target=assign, args=(ids[i::2] + ids[:1_000],)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    merged: dict[str, int] = {}
    for part in got:
        for profile_id, ordinal in part.items():
            assert merged.setdefault(profile_id, ordinal) == ordinal
    assert len(merged) == len(ids) and len(set(merged.values())) == len(ids)


def test_the_flusher_adds_the_ordinal_to_rows_with_awkward_strings(api, flush, ch):
    """The flusher edits buffered JSON rows: ids with braces, quotes, newlines and non-ASCII
    keep their values, and every row gets its profile's ordinal."""
    odd = ['pf-}\n', 'pf-"}', "pf-ü-✓", "pf-\\}\\n", "pf-plain"]
    events = [ad_event("impression", profile_id=p, campaign_id="cmp-x", content_id=p + "}\n")
              for p in odd for _ in range(2)]
    assert api.post_events(batch(events)).json()["accepted"] == len(events)
    flush()
    stored = ch.query("SELECT profile_id, content_id, uniqExact(profile_ord), min(profile_ord) "
                      "FROM ad_events GROUP BY profile_id, content_id").result_rows
    assert sorted((p, c) for p, c, _, _ in stored) == sorted((p, p + "}\n") for p in odd)
    assert all(n == 1 and o > 0 for _, _, n, o in stored)
    assert len({o for _, _, _, o in stored}) == len(odd)


def test_a_counter_behind_clickhouse_is_raised_before_it_gives_ordinals(ch, rds):
    """A Valkey restored from an older copy: the counter exists but is behind the stored pairs.
    A new allocator raises it above them before its first assignment."""
    first = Ordinals(rds, ch).take([f"pf-{i}" for i in range(50)], token="t-1")
    rds.set(NEXT_KEY, 10)  # as if restored from a copy taken after 10 profiles
    rds.hdel(MAP_KEY, *[k for k in rds.hkeys(MAP_KEY)][:25])
    later = Ordinals(rds, ch).take([f"pf-new-{i}" for i in range(20)], token="t-2")
    assert min(later.values()) > max(first.values())
