"""Where an ingested event's CPU goes, stage by stage, in one process (no HTTP generator).

Posts ``--batches`` batches of ``--batch-events`` events (the bench's generator) through the
app's request path with the in-app flusher off, then flushes them with one ``Flusher`` whose
stages are timed in thread CPU time; ClickHouse's ``system.query_log`` and
``system.query_views_log`` split the inserts into the table write and each materialized view.
Thread CPU time (not wall time) is what it reports, so a busy machine changes it much less
than it changes the bench's rates; run it twice and compare when it matters.

    uv run --group bench python -m loadtest.profile_flush --batches 200 [--live thread]

The live counters run in a child process as ``adtier serve`` runs them (``--live thread``: in
the flusher's thread, as ``adtier flush`` and, before, the server ran them); the child's CPU
is its own line: its CPU from when its imports are done to when it has counted every flush.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

from litestar.testing import TestClient

from adtier.app import create_app
from adtier.embedded_valkey import EmbeddedValkey
from adtier.features.live import LiveCounters
from adtier.features.live_feed import LiveFeed
from adtier.ingest import flusher as flusher_mod
from adtier.settings import load_settings
from adtier.store import connect
from adtier.store.migrate import apply_migrations
from loadtest.bench_ingest import BatchFactory

STAGES: dict[str, float] = defaultdict(float)


def _timed(name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        started = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            STAGES[name] += time.thread_time() - started
    return wrapper


def _patch(flusher: flusher_mod.Flusher) -> None:
    """Wrap each stage of one flusher so its thread CPU time is added to STAGES."""
    flusher_mod.build_blocks = _timed("flusher: build_blocks", flusher_mod.build_blocks)
    flusher_mod.with_ordinals = _timed("flusher: ordinals (assign + store)",
                                       flusher_mod.with_ordinals)
    flusher_mod.copy_flushed = _timed("flusher: erasure check", flusher_mod.copy_flushed)
    raw = flusher._raw_insert

    def raw_insert(table, block, token):
        # process CPU: ClickHouse runs parts of an insert (its views) on threads of its own
        started = time.process_time()
        try:
            return raw(table, block, token)
        finally:
            STAGES[f"clickhouse insert: {table} (process CPU)"] += time.process_time() - started
    flusher._raw_insert = raw_insert  # type: ignore[method-assign]
    if flusher.on_stored is not None:
        flusher.on_stored = _timed("flusher: live counters", flusher.on_stored)
    ordinals = flusher.ordinals
    ordinals._known = _timed("· ordinals: known (HMGET)", ordinals._known)  # type: ignore[method-assign]
    ordinals._call = _timed("· ordinals: new (script)", ordinals._call)  # type: ignore[method-assign]
    ordinals.ch = _TimedInserts(ordinals.ch, "· ordinals: store (ClickHouse, process CPU)")
    for name in ("save_plan", "complete", "claim", "read_new", "still_mine"):
        timed = _timed(f"valkey: buffer {name}", getattr(flusher.buffer, name))
        setattr(flusher.buffer, name, timed)


class _TimedInserts:
    """A ClickHouse client whose raw_insert adds its process CPU to STAGES."""

    def __init__(self, client, name: str):
        self._client, self._name = client, name

    def __getattr__(self, attr):
        return getattr(self._client, attr)

    def raw_insert(self, *args, **kwargs):
        started = time.process_time()
        try:
            return self._client.raw_insert(*args, **kwargs)
        finally:
            STAGES[self._name] += time.process_time() - started


def _query_log(ch, since: float) -> list[tuple]:
    ch.command("SYSTEM FLUSH LOGS")
    return ch.query(
        "SELECT 'insert ' || arrayStringConcat(tables, ','), count(), "
        "sum(ProfileEvents['UserTimeMicroseconds'] + ProfileEvents['SystemTimeMicroseconds']), "
        "sum(query_duration_ms), sum(written_rows) FROM system.query_log "
        "WHERE type = 'QueryFinish' AND query_kind = 'Insert' AND event_time >= {t:DateTime} "
        "GROUP BY 1 ORDER BY 3 DESC", parameters={"t": int(since)}).result_rows


def _views_log(ch, since: float) -> list[tuple]:
    return ch.query(
        "SELECT 'view ' || view_name, count(), "
        "sum(ProfileEvents['UserTimeMicroseconds'] + ProfileEvents['SystemTimeMicroseconds']), "
        "sum(view_duration_ms), sum(written_rows) FROM system.query_views_log "
        "WHERE event_time >= {t:DateTime} GROUP BY 1 ORDER BY 3 DESC",
        parameters={"t": int(since)}).result_rows


def _commandstats(url: str) -> dict[str, tuple[int, float]]:
    """Valkey's per-command (calls, µs) so far; a script's inner commands count both under
    the script (EVALSHA) and under their own name."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): (int(v["calls"]), float(v["usec"]))
            for name, v in stats.items()}


def _print_commandstats(title: str, before: dict, after: dict, events: int) -> None:
    rows = []
    for name, (calls, usec) in after.items():
        calls0, usec0 = before.get(name, (0, 0.0))
        if calls > calls0:
            rows.append((name, calls - calls0, usec - usec0))
    print(f"\n{title:<40} {'calls':>8} {'µs/event':>9}")
    for name, calls, usec in sorted(rows, key=lambda r: -r[2]):
        print(f"  {name:<38} {calls:8d} {usec / events:9.3f}")


def _pid_cpu(valkey: EmbeddedValkey) -> float:
    """CPU seconds of the embedded Valkey's process (utime + stime)."""
    with contextlib.suppress(Exception):
        pid = valkey.process.pid
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def _hwm(pid: int | None) -> str:
    """A process's peak RSS (VmHWM), as /proc says it."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return f"{int(line.split()[1]) / 1024:.0f} MiB"
    return "?"


def _settled_cpu(pid: int | None) -> float:
    """CPU seconds of a process once they stop growing (a child done importing)."""
    last = -1.0
    for _ in range(300):
        with contextlib.suppress(Exception):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            now = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            if now == last:
                return now
            last = now
        time.sleep(0.5)
    return max(last, 0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--batch-events", type=int, default=1000)
    p.add_argument("--max-rows", type=int, default=200_000, help="the flusher's rows per flush")
    p.add_argument("--live", choices=("child", "thread"), default="child",
                   help="live counters in a child process (as `adtier serve`) or in the "
                        "flusher's thread (as `adtier flush`)")
    args = p.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="adtier-profile-"))
    valkey = EmbeddedValkey(work / "valkey")
    try:
        url = valkey.start()
        dsn = f"chdb://{work / 'clickhouse'}"
        ch = connect(dsn)
        apply_migrations(ch)
        admin = "adt_profile_" + uuid.uuid4().hex
        settings = load_settings({}, data_dir=work / "data", clickhouse_url=dsn, redis_url=url,
                                 admin_key=admin, flusher_enabled=False)
        factory = BatchFactory(args.batch_events)
        with TestClient(create_app(settings)) as client:
            made = client.post("/v1/keys", json={"role": "ingest", "name": "profile"},
                               headers={"Authorization": f"Bearer {admin}"})
            headers = {"Authorization": f"Bearer {made.json()['key']}",
                       "Content-Type": "application/json"}
            bodies = [factory.make() for _ in range(args.batches)]
            stats_requests = _commandstats(url)
            started, valkey_cpu = time.process_time(), _pid_cpu(valkey)  # app: portal thread
            for body in bodies:
                answer = client.post("/v1/events", content=body, headers=headers)
                assert answer.status_code == 200, answer.text
            STAGES["request path + append, client side (process CPU)"] = (
                time.process_time() - started)
            STAGES["valkey server during the requests (its process CPU)"] = (
                _pid_cpu(valkey) - valkey_cpu)
        stats_flush = _commandstats(url)
        import redis

        rds = redis.Redis.from_url(url)
        flush_ch = connect(dsn)
        feed = LiveFeed(url) if args.live == "child" else None
        on_stored = (feed.hook(rds, flush_ch) if feed is not None
                     else LiveCounters(rds, flush_ch).on_stored)
        flusher = flusher_mod.Flusher(flush_ch, rds, consumer="profile", max_rows=args.max_rows,
                                      max_seconds=0.5, on_stored=on_stored)
        _patch(flusher)
        child_start_cpu, child_hwm = 0.0, ""
        if feed is not None:
            while feed.pid is None:
                time.sleep(0.05)
            child_start_cpu = _settled_cpu(feed.pid)
        since = time.time() - 1
        valkey_cpu = _pid_cpu(valkey)
        started = time.process_time()
        flusher.buffer.ensure_group()
        while entries := flusher._collect():
            flusher.flush(entries)
        STAGES["flusher total (process CPU)"] = time.process_time() - started
        if feed is not None:  # the child's CPU once it has counted everything (settled)
            feed.wait_idle(120)
            STAGES["live counters child (its process CPU, start-up excluded)"] = (
                _settled_cpu(feed.pid) - child_start_cpu)
            child_hwm = _hwm(feed.pid)  # before it ends: its peak RSS over every flush
            feed.close(timeout=120)
        STAGES["valkey server during the flush (its process CPU)"] = _pid_cpu(valkey) - valkey_cpu
        stats_end = _commandstats(url)
        events = args.batches * args.batch_events
        print(f"{events:,} events in {args.batches} batches of {args.batch_events}; "
              f"flush of up to {args.max_rows:,} rows; live counters in the {args.live}"
              + (f" (child's peak RSS {child_hwm})" if child_hwm else "") + "\n")
        print(f"{'stage':<52} {'µs/event':>9}")
        for name, seconds in sorted(STAGES.items()):
            print(f"{name:<52} {seconds / events * 1e6:9.2f}")
        _print_commandstats("Valkey commands during the requests", stats_requests, stats_flush,
                            events)
        _print_commandstats("Valkey commands during the flush", stats_flush, stats_end, events)
        print(f"\n{'ClickHouse (query_log / query_views_log)':<52} {'n':>5} {'CPU µs/ev':>9} "
              f"{'wall ms':>8} {'rows':>9}")
        try:
            for name, n, cpu_us, ms, rows in _query_log(ch, since) + _views_log(ch, since):
                print(f"{name[:52]:<52} {n:5d} {cpu_us / events:9.2f} {ms:8.0f} {rows:9d}")
        except Exception as err:  # noqa: BLE001 - a store without these logs still profiles
            print(f"(no query log: {str(err)[:200]})")
        parts = ch.query("SELECT table, count() FROM system.parts WHERE active "
                         "AND database = currentDatabase() GROUP BY table ORDER BY 2 DESC "
                         "LIMIT 12").result_rows
        print("\nactive parts:", ", ".join(f"{t} {n}" for t, n in parts))
    finally:
        valkey.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
