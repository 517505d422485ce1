"""Where a tracking pixel's CPU goes: the bench's pixel generator against one server, alone.

Starts ``adtier serve`` (or the ceiling app: ``--ceiling``) on a fresh data dir, warms it up,
then runs ``bench_ingest``'s closed-loop pixel generator (same URLs, same connections) for
``--seconds`` and prints the pixel rate, the server's and the generator's CPU per pixel, the
busiest server threads, the answer latency and (adtier) the embedded Valkey's command stats.
With ``--py-spy FILE`` the worker is sampled meanwhile (``py-spy record --threads -f raw``;
py-spy must be installed: ``uv run --with py-spy ...``)::

    flock /tmp/adtier-bench.lock uv run --group bench python -m loadtest.profile_pixels --seconds 10
    flock /tmp/adtier-bench.lock uv run --group bench python -m loadtest.profile_pixels --ceiling

Unlike ``bench_ingest``'s pixel phase, nothing else runs before it (no batch backlog is being
flushed), so two trees' figures from one run each, one after the other, compare.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import msgspec
import redis

from loadtest.bench_ingest import ROOT, Phase, ServerProc, closed_loop_pixels, free_port, tree_procs


async def timed_pixels(load: aiohttp.ClientSession, base: str, key: str, connections: int,
                       seconds: float, latencies: list[float]):
    """``closed_loop_pixels``, with each answer's latency recorded."""
    get = load.get

    class Timed:
        def __init__(self, *args, **kwargs):
            self.call = get(*args, **kwargs)

        async def __aenter__(self):
            self.t0 = time.perf_counter()
            return await self.call.__aenter__()

        async def __aexit__(self, *exc):
            done = await self.call.__aexit__(*exc)
            latencies.append(time.perf_counter() - self.t0)
            return done

    load.get = Timed  # type: ignore[method-assign]
    try:
        return await closed_loop_pixels(load, base, key, connections, seconds)
    finally:
        load.get = get  # type: ignore[method-assign]


async def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="profile-pixels-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADTIER_")}
    env.update(dict(kv.split("=", 1) for kv in args.env))
    admin = "adm_" + secrets.token_urlsafe(24)
    if args.ceiling:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        cmd = [sys.executable, "-m", "loadtest.bench_apps", "ceiling", "--port", str(port)]
    else:
        env.update(ADTIER_DATA_DIR=str(workdir / "data"), ADTIER_ADMIN_KEY=admin,
                   ADTIER_LOG_LEVEL="warning")
        cmd = [sys.executable, "-m", "adtier", "serve", "--port", str(port)]
    server = ServerProc("ceiling" if args.ceiling else "adtier", cmd, env, workdir, port)
    ctl = aiohttp.ClientSession()
    try:
        server.start()
        await server.wait_ready(ctl)
        key = "none"
        if not args.ceiling:
            async with ctl.post(server.base + "/v1/keys", json={"role": "ingest", "name": "px"},
                                headers={"Authorization": f"Bearer {admin}"}) as r:
                key = msgspec.json.decode(await r.read())["key"]
        load = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.connections))
        await closed_loop_pixels(load, server.base, key, args.connections, 2.0)  # warm up
        valkey = _valkey(workdir)
        if valkey is not None:
            valkey.config_resetstat()
        spy = None
        if args.py_spy:
            worker = max(tree_procs(server.pgid), key=lambda p: p[1])[0]
            spy = subprocess.Popen(
                [shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"), "record", "--nonblocking", "--threads", "-r", "250", "-f", "raw",
                 "-o", args.py_spy, "-p", str(worker), "-d", str(int(args.seconds))],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await asyncio.sleep(1.0)
        latencies: list[float] = []
        with Phase(server) as ph:
            stats = await timed_pixels(load, server.base, key, args.connections, args.seconds,
                                       latencies)
        await load.close()
        rate = stats.accepted / max(stats.t_last - stats.t_first, 1e-9)
        latencies.sort()

        def pick(q: float) -> float:
            return 1e3 * latencies[int(q * (len(latencies) - 1))]

        print(f"{server.name}: {stats.requests} pixels, {rate:,.0f} GIFs/s, statuses "
              f"{dict(stats.statuses)}, errors {dict(stats.errors)}")
        print(f"  latency ms: p50 {pick(0.5):.1f} p90 {pick(0.9):.1f} p99 {pick(0.99):.1f}")
        print(f"  cores: server {ph.srv:.2f}, generator {ph.gen:.2f}, other processes "
              f"{ph.other:.2f} ({ph.others}); load average {os.getloadavg()[0]:.2f}")
        print(f"  CPU per pixel: server {ph.srv / rate * 1e6:,.0f} us, generator "
              f"{ph.gen / rate * 1e6:,.0f} us")
        print(f"  busiest server threads (cores): {ph.threads}")
        if valkey is not None:
            calls = valkey.info("commandstats")
            top = sorted(calls.items(), key=lambda kv: -kv[1]["usec"])[:6]
            print("  valkey commands (calls, us per call): " + ", ".join(
                f"{name[8:]} {c['calls']} x {c['usec_per_call']:.1f}" for name, c in top))
        if spy is not None:
            spy.wait()
    finally:
        await ctl.close()
        server.stop()
        if not args.keep_data:
            shutil.rmtree(workdir, ignore_errors=True)


def _valkey(workdir: Path) -> redis.Redis | None:
    socks = glob.glob(str(workdir / "**" / "*.sock"), recursive=True)
    return redis.Redis(unix_socket_path=socks[0]) if socks else None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--ceiling", action="store_true", help="the GIF-only ceiling app instead")
    p.add_argument("--py-spy", default="", help="sample the worker into this raw py-spy file")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="a server setting (e.g. ADTIER_FLUSH_MAX_SECONDS=1.5); repeatable")
    p.add_argument("--keep-data", action="store_true")
    asyncio.run(run(p.parse_args(argv)))


if __name__ == "__main__":
    main()
