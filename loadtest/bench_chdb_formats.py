"""Where ClickHouse's CPU per stored ad row goes, in chDB (one process, no server, no HTTP).

One block of the bench's ad rows, made by the request path's ``prepare_events`` (``profile_ord``
filled as the flusher fills it), then, each figure beside its baseline from the same run:

1. formats: the block as JSONEachRow (what the flusher sends) and as the other formats
   ClickHouse converts the same rows to, into an ``ENGINE = Null`` copy of ``ad_events``
   (parsing only), a copy without views, and ``ad_events`` with every view (best of
   ``--repeat``);
2. views: each materialized view on ``ad_events`` alone, from a Native block (so that the
   parse's noise does not swamp the views'), merges stopped;
3. fixed cost: a one-row insert (user and system CPU, ms): what every flush pays per part;
4. handover: the JSONEachRow block into ``ad_events`` through clickhouse-connect's
   ``raw_insert`` (a temporary file the engine reads back) and through ``store.inserts`` (what
   the flusher uses: chdb's streaming insert, from memory), alternating ``--rounds`` times;
5. table: copies of ``ad_events`` without views, each with one table-level choice changed
   (codecs, skip indexes, sort key), from a Native block, alternating ``--rounds`` times;
6. settings: the JSONEachRow block into ``ad_events`` with every view, with the flusher's
   insert settings and with each candidate setting added, alternating ``--rounds`` times.

Process CPU (ClickHouse runs an insert on threads of its own) per row; min / median where
rounds alternate. On a shared machine only figures of one run compare.

    flock /tmp/adtier-bench.lock uv run --group bench python -m loadtest.bench_chdb_formats
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from adtier.ingest.decode import decode_body
from adtier.ingest.flusher import fill_ordinals, insert_settings
from adtier.ingest.normalise import TimePolicy, prepare_events
from adtier.store import connect
from adtier.store.inserts import raw_inserter
from adtier.store.migrate import apply_migrations
from loadtest.bench_ingest import BatchFactory

FORMATS = ("JSONEachRow", "JSONCompactEachRow", "TabSeparated", "RowBinary", "Native")


def bench_rows(n: int, batch: int = 1000) -> bytearray:
    """``n`` ad rows as the flusher sends them (JSONEachRow, ordinals filled)."""
    factory = BatchFactory(batch)
    policy = TimePolicy(60_000, 3_600_000, 400 * 86_400_000)
    rows: list[bytes] = []
    for _ in range(max(1, n // batch)):
        decoded = decode_body(factory.make(), "application/json", 10_000)
        now = time.time_ns() // 1_000_000
        prepared = prepare_events(decoded.events, decoded.event_decoder, policy, now,
                                  decoded.sent_at_ms, "bench", uuid.uuid4().hex, "k", 1 << 20)
        rows += prepared.ad_rows
    block = bytearray(b"".join(rows[:n]))
    assert fill_ordinals(block, [1 + i % 5000 for i in range(min(n, len(rows)))])
    return block


def _insert(ch, table: str, fmt: str, data: bytes) -> None:
    ch.raw_insert(table, insert_block=data, fmt=fmt, settings=insert_settings(uuid.uuid4().hex))


def _best(fn: Callable[[], None], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best


def formats(ch, payloads: dict[str, bytes], rows: int, repeat: int) -> None:
    targets = [("Null copy (parse only)", "fmt_null"), ("copy without views", "fmt_copy"),
               ("ad_events, every view", "ad_events")]
    print(f"\n1. formats: µs of CPU per row, best of {repeat} (x JSONEachRow)")
    print(f"{'':<26}" + "".join(f"{f:>20}" for f in FORMATS))
    for label, table in targets:
        cells, base = [], 0.0
        for fmt in FORMATS:
            data = payloads[fmt]
            us = _best(lambda t=table, f=fmt, d=data: _insert(ch, t, f, d), repeat) / rows * 1e6
            base = base or us
            cells.append(f"{us:6.2f}" + (f" ({us / base:4.2f}x)" if fmt != FORMATS[0] else ""))
        print(f"{label:<26}" + "".join(f"{c:>20}" for c in cells))
    print("bytes per row: " + ", ".join(f"{f} {len(b) / rows:.0f}" for f, b in payloads.items()))


def ad_views(ch) -> list[tuple[str, str]]:
    return ch.query(
        "SELECT name, create_table_query FROM system.tables WHERE database = currentDatabase() "
        "AND engine = 'MaterializedView' AND match(create_table_query, 'FROM [a-z_.]*ad_events([^_a-z]|$)')"
        " ORDER BY name").result_rows


def views(ch, native: bytes, rows: int, repeat: int) -> None:
    """Each view alone on top of the table; every view is re-created as it was at the end."""
    all_views = ad_views(ch)

    def cost() -> float:
        return _best(lambda: _insert(ch, "ad_events", "Native", native), repeat) / rows * 1e6

    print(f"\n2. views: µs of CPU per row into ad_events from a Native block, best of {repeat}")
    every = cost()
    for name, _ in all_views:
        ch.command(f"DROP VIEW {name}")
    table = cost()
    print(f"   {'the table alone':<28} {table:6.2f}")
    for name, create in all_views:
        ch.command(create)
        print(f"   {'+ ' + name:<28} {cost() - table:+6.2f}")
        ch.command(f"DROP VIEW {name}")
    for _, create in all_views:
        ch.command(create)
    print(f"   {'every view (before / after)':<28} {every:6.2f} / {cost():6.2f}")


def fixed_cost(ch, row: bytes, repeat: int) -> None:
    print(f"\n3. fixed cost of an insert: one row, CPU ms, median of {repeat} (user + system)")
    for label, table in (("Null copy", "fmt_null"), ("copy without views", "fmt_copy"),
                         ("ad_events, every view", "ad_events")):
        user, system = [], []
        for _ in range(repeat):
            before = resource.getrusage(resource.RUSAGE_SELF)
            _insert(ch, table, "JSONEachRow", row)
            after = resource.getrusage(resource.RUSAGE_SELF)
            user.append((after.ru_utime - before.ru_utime) * 1e3)
            system.append((after.ru_stime - before.ru_stime) * 1e3)
        print(f"   {label:<26} {statistics.median(user):6.1f} + {statistics.median(system):6.1f}")


def handover(ch, block: bytes, rows: int, rounds: int) -> None:
    ways: dict[str, Callable[[bytearray, str], None]] = {
        "raw_insert (temporary file)": lambda data, token: ch.raw_insert(
            "ad_events", insert_block=data, fmt="JSONEachRow", settings=insert_settings(token)),
        "store.inserts (from memory)": lambda data, token: raw_inserter(ch)(
            "ad_events", data, "JSONEachRow", insert_settings(token)),
    }
    spent: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, insert in ways.items():
            data = bytearray(block)  # as the flusher holds it (ordinals filled in place)
            process, thread = time.process_time(), time.thread_time()
            insert(data, uuid.uuid4().hex)
            spent[name].append(((time.process_time() - process) / rows * 1e6,
                                (time.thread_time() - thread) / rows * 1e6))
    print(f"\n4. handover into ad_events (every view), {rounds} rounds alternating, "
          "µs of CPU per row, min / median")
    for name, figures in spent.items():
        process, thread = [p for p, _ in figures], [t for _, t in figures]
        print(f"   {name:<28} process {min(process):6.2f} / {statistics.median(process):6.2f}"
              f"   calling thread {min(thread):5.2f} / {statistics.median(thread):5.2f}")


def _codec_alters(ch, table: str) -> list[str]:
    """``table``'s ZSTD codecs replaced by the default (LZ4), Delta kept where there is one."""
    rows = ch.query("SELECT name, compression_codec FROM system.columns WHERE database = "
                    "currentDatabase() AND table = {t:String} AND compression_codec LIKE '%ZSTD%'",
                    parameters={"t": table}).result_rows
    return [f"MODIFY COLUMN {name} CODEC(Delta, LZ4)" if "Delta" in codec
            else f"MODIFY COLUMN {name} REMOVE CODEC" for name, codec in rows]


def _unhashed_copy(ch, table: str) -> str:
    """ad_events' definition without ``profile_hash`` (its MATERIALIZED hash, the last key of
    its sort key and its SAMPLE BY): what the hash and the fourth sort key cost at insert."""
    create = ch.query("SHOW CREATE TABLE ad_events").result_rows[0][0]
    create = re.sub(r"CREATE TABLE \S+", f"CREATE TABLE {table}", create, count=1)
    create = re.sub(r"\n\s*`profile_hash`[^\n]*", "", create)
    create = create.replace(", profile_hash)", ")")
    return re.sub(r"\nSAMPLE BY profile_hash", "", create)


def table_variants(ch) -> dict[str, list[str]]:
    """name -> ALTERs turning an empty copy of ad_events into the variant (no views on it);
    a variant whose first statement is a CREATE is made by it instead of the copy."""
    lz4 = _codec_alters(ch, "ad_events")
    return {
        "as ad_events": [],
        "LZ4 (no ZSTD(1))": lz4,
        "no idx_batch": ["DROP INDEX idx_batch"],
        "no idx_profile": ["DROP INDEX idx_profile"],
        "no skip index": ["DROP INDEX idx_batch", "DROP INDEX idx_profile"],
        "LZ4, no skip index": lz4 + ["DROP INDEX idx_batch", "DROP INDEX idx_profile"],
        "no profile_hash (key, sample)": [_unhashed_copy(ch, "{table}")],
        # a flush's part is wide (a file or more per column) past 10 MiB uncompressed
        "compact parts up to 128 MiB": ["MODIFY SETTING min_bytes_for_wide_part = 134217728"],
    }


def _alternate(ways: dict[str, Callable[[], None]], rows: int, rounds: int) -> dict[str, list[float]]:
    spent: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, insert in ways.items():
            started = time.process_time()
            insert()
            spent[name].append((time.process_time() - started) / rows * 1e6)
    return spent


def _print_alternated(spent: dict[str, list[float]]) -> None:
    base = statistics.median(next(iter(spent.values())))
    for name, figures in spent.items():
        median = statistics.median(figures)
        print(f"   {name:<34} {min(figures):6.2f} / {median:6.2f}  ({median - base:+5.2f})")


def table_costs(ch, native: bytes, row: bytes, rows: int, rounds: int) -> None:
    ways, singles = {}, {}
    for i, (name, alters) in enumerate(table_variants(ch).items()):
        table = f"tv_{i}"
        if alters and alters[0].startswith("CREATE"):
            ch.command(alters[0].replace("{table}", table))
        else:
            ch.command(f"CREATE TABLE {table} AS ad_events")
            for alter in alters:
                ch.command(f"ALTER TABLE {table} {alter}")
        ways[name] = lambda t=table: _insert(ch, t, "Native", native)
        singles[name] = lambda t=table: _insert(ch, t, "JSONEachRow", row)
    ch.command("SYSTEM STOP MERGES")
    print(f"\n5. table: copies of ad_events without views, {rounds} rounds alternating, "
          "µs of CPU per row from a Native block, min / median (median - first)")
    _print_alternated(_alternate(ways, rows, rounds))
    print(f"   one-row insert, ms of CPU, median of {rounds * 3}")
    _print_alternated({k: [v / 1e3 for v in vs]
                       for k, vs in _alternate(singles, 1, rounds * 3).items()})
    sizes = dict(ch.query(
        "SELECT table, sum(bytes_on_disk) / sum(rows) FROM system.parts WHERE database = "
        "currentDatabase() AND active AND table LIKE 'tv\\_%' GROUP BY table").result_rows)
    print("   bytes on disk per row (parts): " + ", ".join(
        f"{name} {sizes.get(f'tv_{i}', 0):.1f}" for i, name in enumerate(ways)))


SETTINGS_VARIANTS: dict[str, dict[str, object]] = {
    "the flusher's settings": {},
    "+ optimize_on_insert = 0": {"optimize_on_insert": 0},
    "+ max_insert_threads = 1": {"max_insert_threads": 1},
    "+ max_threads = 1": {"max_threads": 1},
    "+ parallel_view_processing = 1": {"parallel_view_processing": 1},
    "+ input_format_parallel_parsing = 0": {"input_format_parallel_parsing": 0},
    "+ that and max_threads = 1": {"input_format_parallel_parsing": 0, "max_threads": 1},
}


def setting_costs(ch, block: bytes, rows: int, rounds: int) -> None:
    def insert(extra: dict[str, object]) -> None:
        settings = {**insert_settings(uuid.uuid4().hex), **extra}
        raw_inserter(ch)("ad_events", bytearray(block), "JSONEachRow", settings)
    ways = {name: (lambda e=extra: insert(e)) for name, extra in SETTINGS_VARIANTS.items()}
    print(f"\n6. settings: JSONEachRow into ad_events (every view) as the flusher inserts, {rounds} "
          "rounds alternating, µs of CPU per row, min / median (median - first)")
    _print_alternated(_alternate(ways, rows, rounds))
    row = block[:block.index(b"\n") + 1]

    def one(extra: dict[str, object]) -> None:
        settings = {**insert_settings(uuid.uuid4().hex), **extra}
        raw_inserter(ch)("ad_events", bytearray(row), "JSONEachRow", settings)
    print(f"   one-row insert, ms of CPU, median of {rounds * 3}")
    singles = {name: (lambda e=extra: one(e)) for name, extra in SETTINGS_VARIANTS.items()}
    _print_alternated({k: [v / 1e3 for v in vs]
                       for k, vs in _alternate(singles, 1, rounds * 3).items()})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--rounds", type=int, default=6, help="of each way of handing a block over")
    p.add_argument("--only", choices=["formats", "views", "fixed", "handover", "table", "settings"], action="append",
                   help="run only these sections (repeatable)")
    args = p.parse_args()
    only = set(args.only or ["formats", "views", "fixed", "handover", "table", "settings"])
    work = Path(tempfile.mkdtemp(prefix="adtier-formats-"))
    try:
        ch = connect(f"chdb://{work / 'clickhouse'}")
        apply_migrations(ch)
        block = bytes(bench_rows(args.rows))
        print(f"{args.rows:,} ad rows of the bench, {len(block) / args.rows:.0f} bytes a row "
              "as JSONEachRow")
        ch.command("CREATE TABLE fmt_null AS ad_events ENGINE = Null")
        ch.command("CREATE TABLE fmt_copy AS ad_events")
        ch.raw_insert("fmt_copy", insert_block=block, fmt="JSONEachRow")
        payloads = {"JSONEachRow": block}
        for fmt in FORMATS[1:]:
            payloads[fmt] = ch.raw_query(f"SELECT * FROM fmt_copy FORMAT {fmt}")
        # parts piling up between rounds would be merged on the engine's threads, inside the
        # process CPU measured: none are merged while this runs
        ch.command("SYSTEM STOP MERGES")
        if "formats" in only:
            formats(ch, payloads, args.rows, args.repeat)
        if "views" in only:
            views(ch, payloads["Native"], args.rows, args.repeat)
        if "fixed" in only:
            fixed_cost(ch, block[:block.index(b"\n") + 1], max(5, args.repeat))
        if "handover" in only:
            handover(ch, block, args.rows, args.rounds)
        if "table" in only:
            table_costs(ch, payloads["Native"], block[:block.index(b"\n") + 1], args.rows,
                        args.rounds)
        if "settings" in only:
            setting_costs(ch, block, args.rows, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
