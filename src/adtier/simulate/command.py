"""``adtier simulate``: build the world, send it (direct or HTTP), write the truth, summarise."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports this module for its arguments: keep that light
    from adtier.simulate.sessions import DayBlock
    from adtier.simulate.truth import Truth, TruthRecorder
    from adtier.simulate.world import World

__all__ = ["add_arguments", "run", "Progress", "summary_lines"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profiles", type=int, default=10_000, help="profiles (default 10000)")
    parser.add_argument("--days", type=int, default=7, help="days to simulate (default 7)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--start", type=dt.date.fromisoformat, default=None,
                        help="first day, YYYY-MM-DD (default: the DAYS days before yesterday)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--direct", action="store_true",
                      help="insert straight into the data dir's ClickHouse (no server running)")
    mode.add_argument("--url",
                      help="send through a running server's API, e.g. http://127.0.0.1:8000")
    parser.add_argument("--key", default=os.environ.get("ADTIER_INGEST_KEY"),
                        help="HTTP mode: key that sends events (ingest or admin; "
                             "env ADTIER_INGEST_KEY)")
    parser.add_argument("--admin-key", default=None,
                        help="HTTP mode: admin key for the catalog (default: env ADTIER_ADMIN_KEY, "
                             "else --key)")
    parser.add_argument("--no-catalog", action="store_true", help="do not load the catalog")
    parser.add_argument("--truth", type=Path, default=None,
                        help="directory for the ground-truth Parquet files")
    parser.add_argument("--batch-size", type=int, default=500, help="HTTP mode: events per batch")
    parser.add_argument("--pixel-permille", type=int, default=50,
                        help="HTTP mode: ad plays reported by VAST pixels, per thousand")
    parser.add_argument("--concurrency", type=int, default=4, help="HTTP mode: parallel requests")
    parser.add_argument("--no-wait", action="store_true",
                        help="HTTP mode: do not wait for the server to store everything")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


class Progress:
    """A tqdm bar over profile-days, with events and the event rate."""

    def __init__(self, world: World, enabled: bool = True, label: str = "simulating"):
        from tqdm import tqdm

        self.world = world
        self.events = 0
        self.started = time.perf_counter()
        self.bar = tqdm(total=world.n_profiles * world.days, unit="profile-day", unit_scale=True,
                        desc=label, disable=not enabled, file=sys.stderr, dynamic_ncols=True)

    def __call__(self, block: DayBlock) -> None:
        from adtier.simulate.params import CHUNK_PROFILES

        lo = block.chunk * CHUNK_PROFILES
        self.events += block.n_events
        rate = self.events / max(1e-9, time.perf_counter() - self.started)
        self.bar.set_postfix_str(f"{self.events:,} events, {rate:,.0f}/s", refresh=False)
        self.bar.update(min(self.world.n_profiles, lo + CHUNK_PROFILES) - lo)

    def close(self) -> None:
        self.bar.close()


def summary_lines(world: World, truth: Truth, seconds: float, mode: str,
                  extra: list[str] | None = None) -> list[str]:
    cat = world.catalog
    n = truth.n_events
    lines = [
        (f"simulated {world.n_profiles:,} profiles in {world.n_accounts:,} households "
         f"({int(world.kids.sum()):,} kids, {int(world.opted_out.sum()):,} opted out), "
         f"{world.days} days from {world.start} (seed {world.seed})"),
        (f"catalog: {len(cat.advertisers)} advertisers, {len(cat.campaign_ids)} campaigns "
         f"({len(cat.promo_campaigns)} house promos), {len(cat.creative_ids)} creatives, "
         f"{len(cat.titles)} titles"),
        (f"{mode}: {n:,} events ({truth.n_ad_events:,} ad, {truth.n_content_events:,} viewing) "
         f"in {seconds:.1f} s = {n / max(seconds, 1e-9):,.0f} events/s"),
        "events by type: " + ", ".join(f"{t} {c:,}" for t, c in sorted(
            truth.events_by_type.items(), key=lambda kv: -kv[1])),
    ]
    return lines + (extra or [])


def run(args: argparse.Namespace) -> int:
    from adtier.simulate.truth import TruthRecorder
    from adtier.simulate.world import build_world

    if args.profiles < 1 or args.days < 1:
        print("adtier: --profiles and --days must be at least 1", file=sys.stderr)
        return 2
    if args.url and not args.key:
        print("adtier: --url needs --key (an ingest or admin key; env ADTIER_INGEST_KEY)",
              file=sys.stderr)
        return 2
    world = build_world(args.seed, args.profiles, args.days, args.start)
    recorder = TruthRecorder(world, args.truth)
    progress = Progress(world, enabled=not args.no_progress)
    if args.direct:
        code, extra, seconds = _direct(args, world, recorder, progress)
    else:
        code, extra, seconds = _http(args, world, recorder, progress)
    progress.close()
    if code:
        return code
    truth = recorder.finish({"mode": "direct" if args.direct else "http"})
    for line in summary_lines(world, truth, seconds, "direct" if args.direct else "http", extra):
        print(line)
    if args.truth:
        print(f"truth: {args.truth.resolve()} (profiles, exposures, campaigns, effects .parquet; "
              "summary.json)")
    return 0


def _direct(args, world: World, recorder: TruthRecorder, progress: Progress):
    from adtier.runtime import DataDirBusy, open_stores
    from adtier.settings import load_settings
    from adtier.ingest.ordinals import Ordinals
    from adtier.simulate.direct import load_catalog_direct, run_direct

    settings = load_settings(data_dir=getattr(args, "data_dir", None))
    try:
        stores = open_stores(settings)
    except DataDirBusy as err:
        print(f"adtier: {err}\nadtier: --direct writes into the data dir itself; while a server "
              "runs there, use --url and --key instead", file=sys.stderr)
        return 2, [], 0.0
    try:
        extra = []
        if not args.no_catalog:
            loaded = load_catalog_direct(stores.clickhouse, world)
            extra.append("catalog loaded: " + ", ".join(f"{k} {v:,}" for k, v in loaded.items()))
        result = run_direct(world, stores.clickhouse, recorder, progress,
                            ordinals=Ordinals(stores.redis, stores.clickhouse))
        extra.append(f"inserted: {result.ad_rows:,} rows into ad_events, {result.content_rows:,} "
                     f"into content_events ({result.blocks} blocks) in "
                     + settings.clickhouse_dsn.split("?")[0])
        if result.already_stored:
            extra.append(f"note: {result.already_stored} blocks of this same simulation (seed, "
                         "size, window) were already stored here; ClickHouse dropped them again "
                         "as duplicates (same deduplication tokens), so nothing was counted twice")
        return 0, extra, result.seconds
    finally:
        stores.close()


def _http(args, world: World, recorder: TruthRecorder, progress: Progress):
    import httpx

    from adtier.simulate.http_mode import (
        HttpOptions,
        SimulationHttpError,
        load_catalog_http,
        run_http,
        wait_until_stored,
    )

    options = HttpOptions(batch_size=args.batch_size, pixel_permille=args.pixel_permille,
                          concurrency=max(1, args.concurrency))
    admin_key = args.admin_key or os.environ.get("ADTIER_ADMIN_KEY") or args.key
    limits = httpx.Limits(max_connections=options.concurrency + 2)
    with httpx.Client(base_url=args.url.rstrip("/"), timeout=60.0, limits=limits) as client:
        try:
            extra = []
            if not args.no_catalog:
                loaded = load_catalog_http(client, world, admin_key, options)
                extra.append("catalog loaded: "
                             + ", ".join(f"{k} {v:,}" for k, v in loaded.items()))
            result = run_http(world, client, args.key, options, recorder, progress)
        except (SimulationHttpError, httpx.HTTPError) as err:
            progress.close()
            print(f"adtier: {err}", file=sys.stderr)
            return 1, [], 0.0
        extra += http_lines(result)
        if not args.no_wait:
            stored = wait_until_stored(client)
            extra.append("server buffer drained: every accepted event is in ClickHouse" if stored
                         else "the server still had events buffered after 300 s")
    return 0, extra, result.seconds


def http_lines(result) -> list[str]:
    lines = [
        (f"batches: {result.batches:,} ({result.batch_events:,} events; accepted "
         f"{result.accepted:,}, duplicates {result.duplicates:,}, rejected {result.rejected:,}); "
         f"pixels: {result.pixel_events:,} ({result.refired_pixels:,} fired twice on purpose)"),
        (f"deliberate re-sends: {result.requeued_events:,} events re-queued -> "
         f"{result.requeue_duplicates:,} counted as duplicates by the server; "
         f"{result.replays:,} batches replayed with their Idempotency-Key -> "
         f"{result.replays - result.replay_mismatches:,} answered with the first answer; "
         f"{result.retries:,} retries after 429/503/connection errors"),
    ]
    if result.rejections:
        lines.append(f"first rejections: {result.rejections[:3]}")
    return lines
