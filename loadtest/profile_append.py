"""The request side of an append, per event: the request loop's CPU and the Valkey server's.

One process, no HTTP: a fresh embedded Valkey (``appendfsync always``, as served) and the
app's ``IngestService`` over it. Batches are the bench's (``BatchFactory``: 1,000 events,
decoded as the route decodes them); pixel groups are ``pixel_event`` dicts, as many per append
as ``--group``. Each call is awaited in turn, so the process CPU is the request path's (decode,
``prepare_events``, the service, redis-py) and the Valkey CPU the append script's and its AOF
writes'. The best and the median of ``--rounds`` are printed::

    flock /tmp/adtier-bench.lock uv run --group bench python -m loadtest.profile_append
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import msgspec
import redis.asyncio as aredis

from adtier.embedded_valkey import EmbeddedValkey
from adtier.events import DECODERS
from adtier.ingest.buffer import IngestBuffer
from adtier.ingest.decode import decode_body
from adtier.ingest.normalise import TimePolicy
from adtier.ingest.pixel import pixel_event
from adtier.ingest.service import IngestService
from adtier.settings import load_settings
from loadtest.bench_ingest import BatchFactory

TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def run(args: argparse.Namespace) -> None:
    settings = load_settings()
    workdir = Path(tempfile.mkdtemp(prefix="profile-append-"))
    valkey = EmbeddedValkey(workdir / "valkey")
    client = aredis.Redis.from_url(valkey.start())
    try:
        buffer = IngestBuffer(client, 0, settings.dedup_window_hours, settings.idempotency_ttl_s)
        service = IngestService(buffer, TimePolicy.from_settings(settings), settings.max_event_bytes)
        # a server up for a day has yesterday's dedup set: the script checks it too
        day = int((await client.time())[0]) // 86_400
        await client.sadd(buffer.layout.partitions[0].dedup_set(day - 1), b"\0" * 16)
        factory = BatchFactory(1000)
        played = 0

        def pixels() -> list[bytes]:
            nonlocal played
            now = time.time_ns() // 1_000_000
            group = []
            for _ in range(args.group):
                played += 1
                group.append(msgspec.json.encode(pixel_event(
                    {"e": "start", "asid": f"as-{played}", "cmp": "cmp-1", "cr": "cr-1",
                     "acc": "acc-1", "pf": f"pf-{played % 4001}", "ses": "s-1", "dev": "tv",
                     "cc": "US"}, now)))
            return group

        async def measure(source: str, calls: int) -> tuple[float, float]:
            bodies = [factory.make() if source == "batch" else pixels() for _ in range(calls)]
            events = 0
            cpu0, valkey0 = time.process_time(), _cpu(valkey.process.pid)
            for body in bodies:
                raws = decode_body(body, "application/json", 100_000).events if source == "batch" else body
                events += len(raws)
                await service.ingest_with_marks(
                    raws, DECODERS.json_event, received_ms=time.time_ns() // 1_000_000,
                    sent_ms=None, key_id="key-1", source=source, body_sha256="")
            return ((time.process_time() - cpu0) * 1e6 / events,
                    (_cpu(valkey.process.pid) - valkey0) * 1e6 / events)

        await measure("pixel", 100)  # warm up
        for source, calls in (("batch", args.batches), ("pixel", args.pixel_groups)):
            got = [await measure(source, calls) for _ in range(args.rounds)]
            what = "1,000-event batches" if source == "batch" else f"pixel groups of {args.group}"
            for label, values in (("request path", [g[0] for g in got]),
                                  ("Valkey", [g[1] for g in got])):
                print(f"{what}: {label} µs/event best {min(values):.2f} "
                      f"median {statistics.median(values):.2f}")
        print(f"load average {os.getloadavg()[0]:.2f}")
    finally:
        await client.aclose()
        valkey.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=30, help="1,000-event batches per round")
    p.add_argument("--pixel-groups", type=int, default=500, help="pixel appends per round")
    p.add_argument("--group", type=int, default=5, help="pixels per append")
    p.add_argument("--rounds", type=int, default=5)
    asyncio.run(run(p.parse_args(argv)))


if __name__ == "__main__":
    main()
