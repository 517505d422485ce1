"""Measurement benchmark: report, frequency, forecast and content-effects latency on a large
simulated world, each next to its naive baseline computed in the same run.

World (``--impressions``, default 50M, written straight into chDB with ``INSERT ... SELECT FROM
numbers()``; the rollup views of ``sql/0007`` and the bitmap cells of ``sql/0011`` fill as in
production; the profiles take their ordinals from an embedded Valkey first, as the flusher's
do): ``--profiles`` profiles
(default 2M, heavy-tailed: a few watch a lot), ``--days`` days (30), 10 campaigns of one
advertiser — ``cmp-0``, the one measured, carries 20 % of the impressions — 3 creatives each,
pre/mid/post breaks, 5 devices, 8 countries. Each impression is followed by its VAST funnel
(start 95 %, quartiles 90/80/75 %, complete 70 %, skip 10 %, viewable 70 %, click 1 %,
error 1 %): ~5.9 ad events per impression. Other features' materialized views are detached
during the load (this bench reads none of their tables). Viewing: ``--sessions`` sessions
(default 4M) of one to three plays, so content effects has outcomes to read.

Each query runs ``--repeat`` times (after one warm-up) and prints p50 / p99 in ms:

- report ``by=day|device|creative`` over the whole flight and ``by=day`` over 7 days, from
  each source of ``reach.report``: ``events`` (the raw table: what the endpoint ran first),
  ``rollup`` (per-profile rows, sql/0007) and ``cells`` (profile bitmaps, sql/0011: the
  endpoint's path), answers compared;
- an advertiser key's report inputs ``by=day|device|creative``: the cells and the row reach
  with each profile counted in one row (``CellRows.attributed``, docs/privacy.md);
- frequency: events against rollup (its path);
- forecast: over every eligible profile (a hash sample above ``forecast.SAMPLE_MAX``; its
  only path), both candidates fitted and backtested on the campaigns of the history's last
  half, with the model chosen and every candidate's backtest error (accuracy over simulated
  worlds: ``loadtest/measure_accuracy.py``);
- abandonment after ``cmp-0``'s breaks: the break and session rollups (sql/0010) against the
  same query over the raw ad and viewing events (``--content-repeat`` runs each);
- content effects of ``cmp-0`` promoting a genre (its lift part has one path; its abandonment
  part reads the rollups).

Run (benches share the machine: one at a time)::

    flock /tmp/adtier-bench.lock uv run --group bench python -m loadtest.bench_measure
    ... --impressions 5000000 --profiles 500000 --repeat 10     # quick
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adtier.embedded_valkey import EmbeddedValkey
from adtier.ingest.ordinals import Ordinals
from adtier.measure import forecast as F
from adtier.measure import lift as L
from adtier.measure import reach as R
from adtier.measure.privacy import CampaignInfo
from adtier.store import connect
from adtier.store.migrate import apply_migrations

CAMPAIGNS = 10
GENRES = ["drama", "comedy", "action", "documentary", "kids", "horror", "romance", "scifi"]
DEVICES = "['tv', 'mobile', 'web', 'tablet', 'console']"
COUNTRIES = "['US', 'GB', 'DE', 'FR', 'CA', 'MX', 'BR', 'JP']"


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_catalog(client, profiles: int, days: int, start: dt.date) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    client.insert("advertisers", [["adv-bench", "bench", now, 1]],
                  column_names=["advertiser_id", "name", "updated_at", "version"])
    client.insert("campaigns", [[f"cmp-{i}", "adv-bench", f"c{i}", "IAB1", start,
                                 start + dt.timedelta(days=days - 1), 0,
                                 10.0 if i == 0 else 0.0, None, "drama" if i == 0 else None,
                                 now, 1] for i in range(CAMPAIGNS)],
                  column_names=["campaign_id", "advertiser_id", "name", "ad_category",
                                "start_date", "end_date", "frequency_cap", "holdout_percent",
                                "promoted_title_id", "promoted_genre", "updated_at", "version"])
    client.insert("titles", [[f"t-{i}", f"t{i}", "film", None, [GENRES[i % 8]], "PG",
                              5_400_000, now, 1] for i in range(200)],
                  column_names=["content_id", "name", "kind", "series_id", "genres", "maturity",
                                "duration_ms", "updated_at", "version"])
    client.command(f"""
        INSERT INTO profiles (profile_id, account_id, kind, updated_at, version)
        SELECT concat('pf-', toString(number)), concat('acc-', toString(intDiv(number, 3))),
               if(number % 50 = 0, 'kids', 'adult'), now64(3), 1
        FROM numbers({profiles})""")


def load_ad_events(client, impressions: int, profiles: int, days: int, start: dt.date,
                   ord_base: int) -> None:
    """One row per ad event: each impression n gets a profile (heavy-tailed: p = P * u^2), a
    campaign (cmp-0: 20 %), a day and time, a device (the profile's own 80 % of the time), the
    profile's country, a creative, a break position, then its funnel through arrayJoin."""
    epoch = int(dt.datetime.combine(start, dt.time(), dt.timezone.utc).timestamp())
    funnel = """[('impression', 0),
        (if(u < 95, 'start', ''), 100), (if(u < 90, 'first_quartile', ''), 4000),
        (if(u < 80, 'midpoint', ''), 8000), (if(u < 75, 'third_quartile', ''), 12000),
        (if(u < 70, 'complete', ''), 15500), (if(u >= 70 AND u < 80, 'skip', ''), 5000),
        (if(cityHash64(n, 8) % 100 < 70, 'viewable_impression', ''), 2100),
        (if(cityHash64(n, 9) % 100 < 1, 'click', ''), 6000),
        (if(cityHash64(n, 10) % 100 < 1, 'error', ''), 50)]"""
    client.command(f"""
        INSERT INTO ad_events (event_id, type, ts, client_ts, received_at, clock_skew_ms,
            account_id, profile_id, session_id, device, country, campaign_id, creative_id,
            ad_serving_id, pod_id, pod_position, break_position, ad_duration_ms, content_id,
            source, batch_id, key_id, profile_ord)
        SELECT generateUUIDv4(), ev.1, t, t, t, 0, concat('acc-', toString(intDiv(p, 3))),
            concat('pf-', toString(p)), concat('s-', toString(p), '-', toString(d)),
            {DEVICES}[1 + if(cityHash64(n, 11) % 10 < 8, cityHash64(p, 12), cityHash64(n, 13))
                      % 5],
            {COUNTRIES}[1 + cityHash64(p, 14) % 8],
            concat('cmp-', toString(c)), concat('cr-', toString(c), '-', toString(n % 3)),
            concat('as-', toString(n)), concat('pod-', toString(intDiv(n, 3))),
            toUInt8(1 + n % 3), ['pre', 'mid', 'post'][1 + cityHash64(n, 16) % 3], 15000,
            concat('t-', toString(cityHash64(n, 17) % 200)), 'bench', 'bench', 'bench',
            toUInt32(p + {ord_base})
        FROM (
            SELECT number AS n,
                   toUInt64(floor({profiles} * pow((cityHash64(n, 1) % 1000000) / 1e6, 2))) AS p,
                   if(cityHash64(n, 2) % 100 < 20, 0, 1 + cityHash64(n, 3) % {CAMPAIGNS - 1}) AS c,
                   cityHash64(n, 5) % {days} AS d, cityHash64(n, 7) % 100 AS u,
                   arrayJoin(arrayFilter(x -> x.1 != '', {funnel})) AS ev,
                   toDateTime64({epoch} + d * 86400 + cityHash64(n, 6) % 86000, 3)
                       + toIntervalMillisecond(ev.2) AS t
            FROM numbers({impressions}))
        SETTINGS max_insert_threads = 2, max_block_size = 262144""")


def load_content_events(client, sessions: int, profiles: int, days: int, start: dt.date) -> None:
    """Sessions of 1-3 plays: content_start, a heartbeat with watched_ms, content_stop."""
    epoch = int(dt.datetime.combine(start, dt.time(), dt.timezone.utc).timestamp())
    client.command(f"""
        INSERT INTO content_events (event_id, type, ts, client_ts, received_at, clock_skew_ms,
            account_id, profile_id, session_id, device, country, content_id, position_ms,
            watched_ms, source, batch_id, key_id)
        SELECT generateUUIDv4(), ty, t, t, t, 0, concat('acc-', toString(intDiv(p, 3))),
            concat('pf-', toString(p)), concat('v-', toString(s)), 'tv', 'US',
            concat('t-', toString(cityHash64(s, play, 3) % 200)), toUInt32(0),
            toUInt32(if(ty = 'content_heartbeat', cityHash64(s, play, 4) % 3600000, 0)),
            'bench', 'bench', 'bench'
        FROM (
            SELECT number AS s,
                   toUInt64(floor({profiles} * pow((cityHash64(s, 1) % 1000000) / 1e6, 2))) AS p,
                   arrayJoin(range(1 + cityHash64(s, 2) % 3)) AS play,
                   arrayJoin(['content_start', 'content_heartbeat', 'content_stop']) AS ty,
                   toDateTime64({epoch} + (cityHash64(s, 5) % {days}) * 86400
                                + cityHash64(s, 6) % 80000 + play * 3000
                                + indexOf(['content_start', 'content_heartbeat', 'content_stop'],
                                          ty) * 600, 3) AS t
            FROM numbers({sessions}))
        SETTINGS max_insert_threads = 2, max_block_size = 262144""")


# the views whose tables this bench reads: measurement (sql/0007) and breaks (sql/0010)
_VIEWS_READ = ("ad_campaign_daily_mv", "ad_breaks_daily_mv", "session_ends_ad_mv",
               "session_ends_content_mv", "ad_campaign_cells_mv", "ad_erased_events_mv")


def assign_ordinals(client, valkey_url: str, profiles: int) -> int:
    """Profiles pf-0 .. pf-(P-1) take their ordinals from a fresh allocator, in order, so the
    events' ``profile_ord`` is p + base (checked: the allocator's answer is compared)."""
    import redis

    ordinals = Ordinals(redis.Redis.from_url(valkey_url), client)
    base = ordinals.take(["pf-0"])["pf-0"]
    step = 500_000
    for first in range(0, profiles, step):
        ids = [f"pf-{p}" for p in range(first, min(profiles, first + step))]
        got = ordinals.take(ids)
        if list(got.values()) != list(range(first + base, first + base + len(ids))):
            raise SystemExit("the ordinal allocator was not fresh: use a new --data-dir")
    return base


def _detach_other_views(client) -> list[str]:
    """Detach the materialized views this bench does not read (other features' rollups), so
    loading costs what the measurement path costs; the data dir is throwaway."""
    views = [r[0] for r in client.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase() "
        "AND engine = 'MaterializedView' AND name NOT IN {read:Array(String)}",
        parameters={"read": list(_VIEWS_READ)}).result_rows]
    for name in views:
        client.command(f"DETACH TABLE {name}")
    return views


def timed(fn: Callable[[], Any], repeat: int) -> dict[str, Any]:
    answer = fn()  # warm-up (and the answer, to compare contenders)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    p99 = times[min(len(times) - 1, max(0, round(0.99 * len(times)) - 1))]
    return {"p50": statistics.median(times), "p99": p99, "answer": answer}


def _same(a: dict, b: dict) -> bool:
    keep = ("rows", "totals", "suppressed", "suppressed_rows", "distribution",
            "cumulative_reach", "reach", "impressions", "data_through")
    return all(a.get(k) == b.get(k) for k in keep)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impressions", type=int, default=50_000_000)
    parser.add_argument("--profiles", type=int, default=2_000_000)
    parser.add_argument("--sessions", type=int, default=4_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--content-repeat", type=int, default=1,
                        help="content effects reads every event of the flight: minutes at 50M")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="keep (or reuse, if already loaded) the chDB data here; "
                        "without it the world is deleted at the end")
    parser.add_argument("--skip", default="",
                        help="comma list of: report (and frequency),abandonment,content,forecast")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="adtier-bench-measure-"))
    client = connect(f"chdb://{data_dir / 'clickhouse'}")
    apply_migrations(client)
    valkey = EmbeddedValkey(data_dir / "valkey", fsync="no")
    valkey_url = valkey.start()
    today = dt.datetime.now(dt.timezone.utc).date()
    start = today - dt.timedelta(days=args.days)
    loaded = client.query("SELECT count() FROM ad_events").result_rows[0][0]
    if loaded == 0:
        others = _detach_other_views(client)
        t = time.perf_counter()
        load_catalog(client, args.profiles, args.days, start)
        base = assign_ordinals(client, valkey_url, args.profiles)
        load_ad_events(client, args.impressions, args.profiles, args.days, start, base)
        t_ad = time.perf_counter() - t
        load_content_events(client, args.sessions, args.profiles, args.days, start)
        print(f"loaded in {time.perf_counter() - t:.1f} s (ad events {t_ad:.1f} s, the "
              f"measurement rollup view included; {len(others)} other views detached)")
    else:
        start = client.query("SELECT min(toDate(ts)) FROM ad_events").result_rows[0][0]
    facts = client.query("""SELECT countIf(type = 'impression'), count(),
        countIf(type = 'impression' AND campaign_id = 'cmp-0'),
        countIf(campaign_id = 'cmp-0') FROM ad_events""").result_rows[0]
    rollup_rows = client.query(
        "SELECT count(), countIf(campaign_id = 'cmp-0') FROM ad_campaign_daily").result_rows[0]
    cells = client.query(
        "SELECT count(), countIf(campaign_id = 'cmp-0'), (SELECT sum(bytes_on_disk) FROM "
        "system.parts WHERE active AND table = 'ad_campaign_cells') FROM ad_campaign_cells"
    ).result_rows[0]
    print(f"world: {facts[0]:,} impressions in {facts[1]:,} ad events; cmp-0: {facts[2]:,} "
          f"impressions in {facts[3]:,} events; rollup: {rollup_rows[0]:,} rows "
          f"({rollup_rows[1]:,} for cmp-0); bitmap cells: {cells[0]:,} rows ({cells[1]:,} for "
          f"cmp-0), {cells[2] / 2**20:,.0f} MiB on disk; "
          f"data in {data_dir}")

    k, hi = 50, R.MAX_DATE
    lo = R.MIN_DATE
    week = (today - dt.timedelta(days=7), today)
    # (label, naive baseline, per-profile rollup, the endpoint's path)
    results: list[tuple[str, dict | None, dict | None, dict]] = []

    def pair(label: str, fn: Callable[[str], Any], repeat: int = args.repeat,
             same_answer: Callable[[dict, dict], bool] = _same,
             sources: tuple[str, ...] = ("events", "rollup")) -> None:
        got = [timed(lambda src=src: fn(src), repeat) for src in sources]
        same = all(same_answer(got[0]["answer"], g["answer"]) for g in got[1:])
        times = "  ".join(f"{src} p50 {g['p50']:8.1f}" for src, g in zip(sources, got))
        print(f"  {label:36s} {times} ms  same answer: {same}")
        results.append((label, got[0], got[1] if len(got) == 3 else None, got[-1]))

    print(f"timing ({args.repeat} runs after a warm-up):")
    if "report" not in skip:
        for by in ("day", "device", "creative"):
            pair(f"report by={by}, flight",
                 lambda src, by=by: R.report(client, "cmp-0", by, lo, hi, k, source=src),
                 sources=("events", "rollup", "cells"))
        pair("report by=day, last 7 days",
             lambda src: R.report(client, "cmp-0", "day", *week, k, source=src),
             sources=("events", "rollup", "cells"))
        for by in ("day", "device", "creative"):
            # an advertiser key's report reads the cells and, for its rows, the reach with
            # each profile counted in one row (docs/privacy.md): the two queries together
            got = timed(lambda by=by: R.report_cells(client, "cmp-0", by, lo, hi).attributed(),
                        args.repeat)
            print(f"  {'advertiser report by=' + by + ', flight':36s} p50 {got['p50']:8.1f} ms"
                  "  (cells + bounded row reach)")
            results.append((f"advertiser report by={by}, flight", None, None, got))
        pair("frequency, flight", lambda src: R.frequency(client, "cmp-0", lo, hi, k, source=src))
    if "forecast" not in skip:
        got = timed(lambda: F.forecast(client, [], 1_000_000, 3, 7), args.repeat)
        # the answer carries its own backtest (first half of the history -> second): printed
        # beside the latency so a faster forecast is never a worse one unnoticed
        ans = got["answer"]
        test = ans["backtest"] or {"method": "-", "campaigns": 0, "candidates": {}}
        errors = ", ".join(f"{c} {100 * v['error']:.2f} %" for c, v in test["candidates"].items())
        print(f"  {'forecast (all eligible, cap 3, 7 d)':36s} p50 {got['p50']:8.1f} ms  "
              f"{ans['model']}; backtest ({test['method']}, {test['campaigns']} campaigns): "
              f"{errors or '-'} (target <= 5 %)")
        results.append(("forecast, all eligible profiles", None, None, got))
    info = CampaignInfo("cmp-0", "adv-bench", start, start + dt.timedelta(days=args.days),
                        0, 10.0, None, "drama")
    if "abandonment" not in skip:
        pair("abandonment after breaks, flight",
             lambda src: L.abandonment(client, info, k, source=src), args.content_repeat,
             same_answer=lambda a, b: a == b)
    if "content" not in skip:
        got = timed(lambda: L.content_effects(client, info, 7, k), args.content_repeat)
        print(f"  {'content effects (holdout, 7 d)':36s} p50 {got['p50']:8.1f} ms")
        results.append(("content effects, holdout", None, None, got))

    print()
    path = "endpoint's path"
    print(f"{'':38s}{'events (naive)':>20s}{'rollup':>20s}{path:>20s}")
    print(f"{'ms, p50 / p99':38s}")
    print("-" * 98)
    def cell(g: dict | None) -> str:
        return f"{g['p50']:,.1f} / {g['p99']:,.1f}" if g else "-"

    for label, base, middle, new in results:
        print(f"{label:38s}{cell(base):>20s}{cell(middle):>20s}{cell(new):>20s}")
    print(f"{'peak RSS MiB (chdb included)':38s}{'':>40s}{_rss_mib():>20,.0f}")
    print("target (issue 5): report p50 <= 250 ms at >= 50M impressions")
    client.close()
    valkey.stop()
    if args.data_dir is None:
        shutil.rmtree(data_dir, ignore_errors=True)  # a throwaway world: tens of GB at 50M


if __name__ == "__main__":
    main()
