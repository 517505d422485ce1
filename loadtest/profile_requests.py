"""The request loop's CPU per request, without HTTP or a generator: the app called as ASGI.

Starts the app (``ADTIER_ROLE=ingest``: the embedded Valkey, no ClickHouse, no flushers) in
this process and calls it as granian would, with the body in one ``http.request`` message, for
three kinds of request: ``POST /v1/events`` with the bench's 1,000-event and 100-event batches
(``BatchFactory``), and ``GET /v1/px`` pixels (the bench's URLs), ``--concurrency`` at a time
(so the pixel batcher groups them as under load). The figure is this thread's CPU per request
and per event (``time.thread_time``): the request loop's own work, Valkey's excluded (it is
another process), granian's HTTP parsing excluded (Rust threads). Best and median of
``--rounds``::

    flock /tmp/adtier-bench.lock uv run --group bench python -m loadtest.profile_requests
    # where it goes: sample this process (py-spy must be installed: `uv run --with py-spy`)
    flock /tmp/adtier-bench.lock uv run --group bench python -m loadtest.profile_requests \\
        --only batch1000 --rounds 20 --py-spy /tmp/req.raw

Stage split (``--stages``): the same batches through the pieces of the route called directly
(envelope decode, ``prepare_events``, the append with its redis-py call), to subtract from the
whole request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec

from adtier.app import create_app
from adtier.auth import INDEX, ApiKey, hash_key
from adtier.ingest.decode import decode_body
from adtier.ingest.normalise import prepare_events
from adtier.settings import load_settings
from adtier.state import app_state_of
from loadtest.bench_ingest import VAST_EVENTS, BatchFactory


class Lifespan:
    """The ASGI lifespan protocol, driven by hand."""

    def __init__(self, app) -> None:
        self.app = app
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.outbox: asyncio.Queue = asyncio.Queue()

    async def start(self) -> None:
        self.task = asyncio.create_task(self.app({"type": "lifespan", "asgi": {"version": "3.0"},
                                                  "state": {}}, self.inbox.get, self.outbox.put))
        await self.inbox.put({"type": "lifespan.startup"})
        message = await self.outbox.get()
        if message["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"start-up failed: {message}")

    async def stop(self) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.outbox.get()
        await self.task


def _scope(method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]]) -> dict:
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "method": method, "scheme": "http", "path": path,
            "raw_path": path.encode(), "query_string": query, "root_path": "",
            "headers": headers, "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000),
            "state": {}}


async def call(app, scope: dict, body: bytes = b"") -> int:
    """One request: the body in one message, as granian hands a small body; the status."""
    sent = False
    status = 0

    async def receive() -> dict:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)  # a disconnect would only come after the answer
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


def cpu_per_call(rounds: int, calls: int, one: Callable[[], Awaitable[None]]):
    async def measure() -> list[float]:
        out = []
        for _ in range(rounds):
            started = time.thread_time()
            for _ in range(calls):
                await one()
            out.append((time.thread_time() - started) / calls)
        return out
    return measure


async def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="profile-requests-"))
    os.environ.pop("ADTIER_LOG_FORMAT", None)
    settings = load_settings({}, data_dir=workdir / "data", role="ingest", log_level="warning")
    app = create_app(settings)
    life = Lifespan(app)
    await life.start()
    spy = None
    try:
        state = app_state_of(app)
        secret = "adt_" + secrets.token_urlsafe(24)
        await state.redis.hset(INDEX, hash_key(secret),
                               msgspec.msgpack.encode(ApiKey("key_profile", "ingest")))
        auth = [(b"authorization", f"Bearer {secret}".encode()),
                (b"content-type", b"application/json"), (b"user-agent", b"profile/1"),
                (b"host", b"127.0.0.1:8000")]
        factories = {"batch1000": BatchFactory(1000), "batch100": BatchFactory(100)}
        tag = secrets.token_hex(4)
        counter = 0

        def pixel_query() -> bytes:
            nonlocal counter
            n = counter
            counter += 1
            play = n // len(VAST_EVENTS)
            return (f"k={secret}&e={VAST_EVENTS[n % len(VAST_EVENTS)]}&asid=as-{tag}-{play}"
                    f"&cmp=cmp-{play % 7}&cr=cr-{play % 31}&acc=acc-{play % 997}"
                    f"&pf=pf-{play % 4001}&ses=s-{tag}-{play // 3}&dev=tv&cc=US"
                    f"&ts=[TIMESTAMP]").encode()

        def batch(kind: str) -> Callable[[], Awaitable[None]]:
            factory = factories[kind]

            async def one() -> None:
                status = await call(app, _scope("POST", "/v1/events", b"", auth), factory.make())
                if status != 200:
                    raise RuntimeError(f"{kind}: status {status}")
            return one

        async def pixels() -> None:
            statuses = await asyncio.gather(*(
                call(app, _scope("GET", "/v1/px", pixel_query(), [(b"host", b"x")]))
                for _ in range(args.concurrency)))
            if set(statuses) != {200}:
                raise RuntimeError(f"pixels: statuses {statuses}")

        kinds = {"batch1000": (batch("batch1000"), 1000, 30),
                 "batch100": (batch("batch100"), 100, 200),
                 "pixel": (pixels, 1, 100)}
        wanted = [k for k in kinds if not args.only or k in args.only]
        for kind in wanted:  # warm up: connections, caches, first-sight paths
            one, _, calls = kinds[kind]
            await cpu_per_call(1, max(calls // 5, 5), one)()
        if args.py_spy:
            spy = subprocess.Popen(
                [shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                 "record", "--threads", "-r", "500", "-f", "raw", "-o", args.py_spy,
                 "-p", str(os.getpid())], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        print(f"{'request':<12} {'loop CPU µs per request':>24} {'per event':>16}   "
              f"(best / median of {args.rounds}; load average {os.getloadavg()[0]:.2f})")
        for kind in wanted:
            one, events, calls = kinds[kind]
            per = await cpu_per_call(args.rounds, calls, one)()
            if kind == "pixel":
                per = [p / args.concurrency for p in per]
            best, median = min(per) * 1e6, statistics.median(per) * 1e6
            print(f"{kind:<12} {best:11,.1f} / {median:10,.1f} {best / events:7.2f} / "
                  f"{median / events:6.2f}")
        if args.stages:
            await stages(state, factories, args.rounds)
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait()
        await life.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def stages(state, factories: dict[str, BatchFactory], rounds: int) -> None:
    """The route's pieces called directly, thread CPU per event (best of ``rounds``)."""
    settings, service = state.settings, state.ingest
    print(f"\n{'stage (best of ' + str(rounds) + ')':<44} {'µs/event 1000':>14} {'100':>8}")
    rows: dict[str, list[float]] = {}
    for kind, factory in factories.items():
        n = factory.events
        bodies = [factory.make() for _ in range(20_000 // n)]
        for name, fn in _stage_fns(settings, service, bodies).items():
            best = float("inf")
            for _ in range(rounds):
                started = time.thread_time()
                await fn()
                best = min(best, (time.thread_time() - started) / (len(bodies) * n))
            rows.setdefault(name, []).append(best * 1e6)
    for name, (big, small) in rows.items():
        print(f"{name:<44} {big:14.2f} {small:8.2f}")


def _stage_fns(settings, service, bodies: list[bytes]) -> dict[str, Callable[[], Awaitable[None]]]:
    now = time.time_ns() // 1_000_000
    decoded = [decode_body(b, "application/json", settings.max_events_per_batch) for b in bodies]

    async def envelope() -> None:
        for b in bodies:
            decode_body(b, "application/json", settings.max_events_per_batch)

    async def prepare() -> None:
        for d in decoded:
            prepare_events(d.events, d.event_decoder, service.policy, now, d.sent_at_ms,
                           "batch", "b0123456789abcdef0123", "key_profile",
                           settings.max_event_bytes)

    async def ingest() -> None:  # prepare + record + append + answer (service, redis-py)
        for d in decoded:
            await service.ingest(d.events, d.event_decoder, received_ms=now,
                                 sent_ms=d.sent_at_ms, key_id="key_profile", source="batch",
                                 body_sha256="0" * 64)

    return {"decode_body (envelope)": envelope, "prepare_events": prepare,
            "service.ingest (prepare + append + answer)": ingest}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=16, help="pixels in flight at a time")
    p.add_argument("--only", action="append", choices=("batch1000", "batch100", "pixel"))
    p.add_argument("--stages", action="store_true", help="also the route's pieces alone")
    p.add_argument("--py-spy", default="", help="sample this process into a raw py-spy file")
    asyncio.run(run(p.parse_args(argv)))


if __name__ == "__main__":
    main()
