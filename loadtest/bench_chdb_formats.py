"""ClickHouse's CPU per stored ad row, by input format and by target, in chDB (one process).

Makes one block of the bench's ad rows through the request path's ``prepare_events`` (with
``profile_ord`` filled as the flusher fills it), then inserts it, as JSONEachRow (what the
flusher sends) and as other formats ClickHouse converts the same rows to, into an
``ENGINE = Null`` copy of ``ad_events`` (parsing only), into ``ad_events`` with its views
detached, and into ``ad_events`` with every view. Process CPU per row, best of ``--repeat``;
every figure printed beside JSONEachRow's from the same run.

    flock /tmp/adtier-bench.lock uv run --group bench python -m loadtest.bench_chdb_formats
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from adtier.ingest.decode import decode_body
from adtier.ingest.flusher import fill_ordinals, insert_settings
from adtier.ingest.normalise import TimePolicy, prepare_events
from adtier.store import connect
from adtier.store.migrate import apply_migrations
from loadtest.bench_ingest import BatchFactory

FORMATS = ("JSONEachRow", "JSONCompactEachRow", "RowBinary", "Native")


def bench_rows(n: int, batch: int = 1000) -> bytearray:
    """``n`` ad rows as the flusher sends them (JSONEachRow, ordinals filled)."""
    factory = BatchFactory(batch)
    policy = TimePolicy(60_000, 3_600_000, 400 * 86_400_000)
    rows: list[bytes] = []
    for _ in range(n // batch):
        decoded = decode_body(factory.make(), "application/json", 10_000)
        now = time.time_ns() // 1_000_000
        prepared = prepare_events(decoded.events, decoded.event_decoder, policy, now,
                                  decoded.sent_at_ms, "bench", uuid.uuid4().hex, "k", 1 << 20)
        rows += prepared.ad_rows
    block = bytearray(b"".join(rows))
    assert fill_ordinals(block, [1 + i % 5000 for i in range(len(rows))])
    return block


def cpu_per_row(ch, table: str, fmt: str, block: bytes, rows: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        ch.raw_insert(table, insert_block=block, fmt=fmt,
                      settings=insert_settings(uuid.uuid4().hex))
        best = min(best, time.process_time() - started)
    return best / rows * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="adtier-formats-"))
    try:
        ch = connect(f"chdb://{work / 'clickhouse'}")
        apply_migrations(ch)
        block = bytes(bench_rows(args.rows))
        print(f"{args.rows:,} ad rows, {len(block) / args.rows:.0f} bytes a row as JSONEachRow")
        ch.command("CREATE TABLE fmt_null AS ad_events ENGINE = Null")
        ch.command("CREATE TABLE fmt_copy AS ad_events")
        ch.raw_insert("fmt_copy", insert_block=block, fmt="JSONEachRow")
        payloads = {"JSONEachRow": block}
        for fmt in FORMATS[1:]:
            payloads[fmt] = ch.raw_query(f"SELECT * FROM fmt_copy FORMAT {fmt}")
        views = [r[0] for r in ch.query(
            "SELECT name FROM system.tables WHERE database = currentDatabase() "
            "AND engine = 'MaterializedView' AND has(dependencies_table, 'ad_events')").result_rows]
        targets = [("Null copy (parse only)", "fmt_null"), ("ad_events, no views", "fmt_copy"),
                   (f"ad_events, all {len(views)} views", "ad_events")]
        print(f"\n{'µs of CPU per row':<32}" + "".join(f"{f:>20}" for f in FORMATS))
        for label, table in targets:
            cells = []
            base = None
            for fmt in FORMATS:
                us = cpu_per_row(ch, table, fmt, payloads[fmt], args.rows, args.repeat)
                base = us if base is None else base
                cells.append(f"{us:8.2f} ({us / base:4.2f}x)" if fmt != FORMATS[0] else f"{us:8.2f}")
            print(f"{label:<32}" + "".join(f"{c:>20}" for c in cells))
        print("\npayload bytes per row: " + ", ".join(
            f"{f} {len(b) / args.rows:.0f}" for f, b in payloads.items()))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
