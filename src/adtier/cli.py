"""``adtier`` command line: serve, migrate, flush, keys, simulate."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from contextlib import AbstractContextManager

import msgspec

from adtier.settings import Settings, load_settings

__all__ = ["main"]


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(data_dir=getattr(args, "data_dir", None))


def cmd_serve(args: argparse.Namespace) -> int:
    from granian.constants import Interfaces
    from granian.server import Server

    settings = load_settings(data_dir=args.data_dir, host=args.host, port=args.port, workers=args.workers)
    if settings.embedded_clickhouse and settings.workers > 1:
        print("adtier: the embedded ClickHouse (chdb) is opened by one process; use --workers 1, "
              "or set ADTIER_CLICKHOUSE_URL to a server to run several workers", file=sys.stderr)
        return 2
    if not settings.embedded_clickhouse:
        # Several workers would race to apply migrations: do it once, before they start.
        from adtier.store import connect
        from adtier.store.migrate import apply_migrations

        apply_migrations(connect(settings.clickhouse_dsn), cluster=settings.clickhouse_cluster,
                         lock=_fleet_migration_lock(settings))
    # The worker process reads its settings from the environment.
    os.environ.update({
        "ADTIER_DATA_DIR": str(settings.data_dir.resolve()),
        "ADTIER_HOST": settings.host,
        "ADTIER_PORT": str(settings.port),
        "ADTIER_WORKERS": str(settings.workers),
        "ADTIER_DIE_WITH_PARENT": "1",
    })
    print(f"adtier {_version()} serving on http://{settings.host}:{settings.port} "
          f"(docs: http://{settings.host}:{settings.port}/docs, data: {settings.data_dir.resolve()})",
          file=sys.stderr, flush=True)
    if getattr(args, "demo", False):
        from adtier.simulate.demo import start_demo

        start_demo(settings)
    Server(
        "adtier.app:create_app",
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        factory=True,
        log_access=False,
        backlog=2048,
        workers_kill_timeout=max(1, settings.shutdown_timeout_s),
    ).serve()
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from adtier.simulate.command import run

    return run(args)


def _fleet_migration_lock(settings: Settings) -> AbstractContextManager | None:
    """The fleet's migration lease when nodes share a Valkey (``ADTIER_REDIS_URL``); an
    embedded data dir has one owner (its directory lock), so nothing to share there."""
    if not settings.redis_url:
        return None
    from adtier.store.migration_lock import migration_lock
    from adtier.store.valkey import connect_redis

    return migration_lock(connect_redis(settings.redis_url))


def cmd_migrate(args: argparse.Namespace) -> int:
    from adtier.store import connect
    from adtier.store.cluster import ClusterRewriteError
    from adtier.store.migrate import (
        MigrationError,
        apply_migrations,
        ledger_statement,
        planned_statements,
    )
    from adtier.store.migration_lock import MigrationLeaseLost, MigrationLockTimeout

    settings = _settings(args)
    cluster = settings.clickhouse_cluster if args.cluster is None else args.cluster
    try:
        if args.print:  # a dry run: no connection, every migration as it would run
            planned = planned_statements(cluster=cluster)
            print("-- the ledger\n" + ledger_statement(cluster).strip() + ";\n")
            for m, statements in planned:
                print(f"-- {m.version:04d}_{m.name} (sha256 {m.checksum})"
                      + (f" ON CLUSTER {cluster}" if cluster else ""))
                for statement in statements:
                    print(statement + ";\n")
            return 0
        client = connect(settings.clickhouse_dsn)
        applied = apply_migrations(client, cluster=cluster, lock=_fleet_migration_lock(settings))
    except (MigrationError, ClusterRewriteError, MigrationLockTimeout, MigrationLeaseLost) as err:
        print(f"adtier: {err}", file=sys.stderr)
        return 2
    for m in applied:
        print(f"applied {m.version:04d}_{m.name}")
    print(f"schema up to date ({len(applied)} applied)" + (f" on cluster {cluster}" if cluster else ""))
    return 0


def cmd_flush(args: argparse.Namespace) -> int:
    from adtier.ingest.flusher import Flusher
    from adtier.ingest.partitions import layout_for
    from adtier.runtime import default_consumer_name, open_stores

    settings = _settings(args)
    stores = open_stores(settings)
    flusher = Flusher(stores.new_clickhouse(), stores.redis,
                      consumer=args.name or default_consumer_name(settings),
                      max_rows=settings.flush_max_rows, max_seconds=settings.flush_max_seconds,
                      claim_idle_ms=settings.claim_idle_ms, live_counters=settings.live_counters,
                      layout=layout_for(settings.partitions, settings.cluster_redis))
    try:
        if args.once:
            flusher.drain()
        else:
            signal.signal(signal.SIGTERM, lambda *_: flusher._stop.set())
            try:
                flusher.run()
            except KeyboardInterrupt:
                pass
    finally:
        stores.close()
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from adtier.auth import KeyRegistry
    from adtier.runtime import open_stores

    stores = open_stores(_settings(args))
    try:
        registry = KeyRegistry(stores.clickhouse, stores.redis)
        if args.keys_cmd == "create":
            try:
                created = registry.create(args.role, args.advertiser_id or "", args.name or "")
            except ValueError as err:
                print(f"adtier: {err}", file=sys.stderr)
                return 2
            print(msgspec.json.encode(created).decode())
        elif args.keys_cmd == "list":
            for row in registry.list():
                print(msgspec.json.encode(row).decode())
        elif args.keys_cmd == "revoke":
            if not registry.revoke(args.key_id):
                print(f"adtier: no active key {args.key_id!r}", file=sys.stderr)
                return 1
            print(f"revoked {args.key_id}")
    finally:
        stores.close()
    return 0


def cmd_segments(args: argparse.Namespace) -> int:
    """``adtier segments build [--all | ID ...]``: build now, in this process, with progress."""
    from tqdm import tqdm

    from adtier.runtime import open_stores
    from adtier.segments import store
    from adtier.segments.build import BuildBusy, build_many

    if args.segments_cmd == "restore":
        return _segments_restore(args)
    if bool(args.all) == bool(args.ids):
        print("adtier: give segment ids or --all", file=sys.stderr)
        return 2
    stores = open_stores(_settings(args))
    try:
        client = stores.clickhouse
        ids = [s.segment_id for s in store.list_segments(client)] if args.all else args.ids
        missing = [s for s in ids if store.get_segment(client, s) is None]
        if missing:
            print(f"adtier: no segment {', '.join(missing)}", file=sys.stderr)
            return 1
        failed = 0
        with tqdm(total=len(ids), unit="segment", desc="segments") as outer, \
                tqdm(unit="chunk", desc="chunks", leave=False) as inner:
            def progress(done: int, total: int) -> None:
                inner.total = total
                inner.n = done
                inner.refresh()

            def on_done(row) -> None:
                nonlocal failed
                failed += row.status != "ready"
                outer.update(1)
                outer.write(msgspec.json.encode({
                    "segment_id": row.segment_id, "status": row.status, "version": row.version,
                    "size": row.size, "error": row.error or None}).decode())

            try:
                build_many(client, stores.redis, ids, on_done=on_done, progress=progress,
                           by="cli", role="cli")
            except BuildBusy as err:
                print(f"adtier: {err}", file=sys.stderr)
                return 1
    finally:
        stores.close()
    return 1 if failed else 0


def _segments_restore(args: argparse.Namespace) -> int:
    """``adtier segments restore``: reload every served segment's look-up set into Redis from
    ClickHouse (after Redis/Valkey was replaced or emptied), and the look-up's mirror of
    campaign holdouts."""
    from adtier.catalog import holdout_mirror
    from adtier.runtime import open_stores
    from adtier.segments.build import restore_redis

    stores = open_stores(_settings(args))
    try:
        restored = restore_redis(stores.clickhouse, stores.redis)
        holdouts = holdout_mirror.restore(stores.clickhouse, stores.redis)
    finally:
        stores.close()
    print(f"adtier: holdout mirror restored ({holdouts} campaigns with a live holdout)",
          file=sys.stderr)
    print(msgspec.json.encode({"restored": restored}).decode())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``adtier export features --out FILE``: features changed since a watermark, to Parquet
    (or an Arrow IPC stream file when FILE ends in .arrow), with a progress bar."""
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.ipc as ipc
    from tqdm import tqdm

    from adtier.features import auditing
    from adtier.features.batch import compute
    from adtier.features.export import (
        ColumnsError,
        iter_batches,
        plan_export,
        select_columns,
        write_parquet,
    )
    from adtier.measure import audit
    from adtier.runtime import open_stores

    try:
        columns = select_columns(args.columns)
    except ColumnsError as err:
        print(f"adtier: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    stores = open_stores(_settings(args))
    try:
        client = stores.clickhouse
        if args.compute:
            with tqdm(unit="chunk", desc="compute") as bar:
                def progress(done: int, total: int) -> None:
                    bar.total = total
                    bar.n = done
                    bar.refresh()

                result = compute(client, progress=progress, redis_client=stores.redis)
            auditing.record_compute(client, result, who=auditing.cli_who(), role="cli")
        plan = plan_export(client, args.since, columns, stores.redis)
        with tqdm(total=plan.rows, unit="profile", desc="export") as bar:
            if out.suffix == ".arrow":
                rows = 0
                with pa.OSFile(str(out), "wb") as sink, ipc.new_stream(sink, plan.schema) as w:
                    for b in iter_batches(client, plan):
                        w.write_batch(b)
                        rows += b.num_rows
                        bar.update(b.num_rows)
            else:
                rows = write_parquet(iter_batches(client, plan), plan.schema, out, bar.update)
        # BRIEF §5: who, what, when, how many, and the hash of exactly what was written
        auditing.record(client, who=auditing.cli_who(), role="cli",
                        endpoint="features_export_cli",
                        parameters={"since": plan.since, "watermark": plan.watermark,
                                    "out": str(out), "columns": args.columns},
                        row_count=rows, answer_sha256=audit.file_sha256(out))
        print(msgspec.json.encode({"out": str(out), "rows": rows, "since": plan.since,
                                   "watermark": plan.watermark}).decode())
    finally:
        stores.close()
    return 0


def _version() -> str:
    from adtier import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adtier", description=__doc__)
    parser.add_argument("--data-dir", default=None, help="data directory (env ADTIER_DATA_DIR)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP server (and a flusher)")
    serve.add_argument("--host", default=None, help="env ADTIER_HOST, default 127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help="env ADTIER_PORT, default 8000")
    serve.add_argument("--workers", type=int, default=None, help="HTTP worker processes")
    serve.add_argument("--demo", action="store_true",
                       help="load a demo catalog and replay a simulated week through the API")
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="apply new sql/ migrations")
    migrate.add_argument("--cluster", default=None, metavar="NAME",
                         help="run ON CLUSTER NAME with Replicated tables (env "
                              "ADTIER_CLICKHOUSE_CLUSTER; '' = single node)")
    migrate.add_argument("--print", action="store_true",
                         help="print the statements every migration runs, and exit (no database)")
    migrate.set_defaults(func=cmd_migrate)

    flush = sub.add_parser("flush", help="run a flusher alone (scale-out)")
    flush.add_argument("--name", default="", help="consumer name, unique per flusher")
    flush.add_argument("--once", action="store_true", help="flush what is buffered, then exit")
    flush.set_defaults(func=cmd_flush)

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_cmd", required=True)
    create = keys_sub.add_parser("create")
    # validated by KeyRegistry.create, the one list of roles (importing it here would make
    # every command, --help included, pay for the Redis and ClickHouse clients)
    create.add_argument("role", help="ingest | advertiser | verifier | recs | admin")
    create.add_argument("--advertiser-id", default="",
                        help="the advertiser an advertiser or verifier key is bound to")
    create.add_argument("--name", default="")
    keys_sub.add_parser("list")
    revoke = keys_sub.add_parser("revoke")
    revoke.add_argument("key_id")
    keys.set_defaults(func=cmd_keys)

    from adtier.simulate.command import add_arguments as simulate_arguments

    simulate = sub.add_parser("simulate", help="generate a synthetic ad-tier world with ground truth")
    simulate_arguments(simulate)
    simulate.set_defaults(func=cmd_simulate)

    segments = sub.add_parser("segments", help="build audience segments")
    segments_sub = segments.add_subparsers(dest="segments_cmd", required=True)
    seg_build = segments_sub.add_parser("build", help="build segments now, with a progress bar")
    seg_build.add_argument("ids", nargs="*", metavar="ID", help="segment ids")
    seg_build.add_argument("--all", action="store_true", help="every segment")
    segments_sub.add_parser("restore", help="reload the served segments' Redis look-up sets "
                            "from ClickHouse (after Redis was emptied or replaced)")
    segments.set_defaults(func=cmd_segments)

    export = sub.add_parser("export", help="export data for downstream jobs")
    export_sub = export.add_subparsers(dest="export_cmd", required=True)
    exp_features = export_sub.add_parser(
        "features", help="profile features changed since a watermark, with a progress bar")
    exp_features.add_argument("--out", required=True, help="file.parquet (or file.arrow)")
    exp_features.add_argument("--since", type=int, default=0,
                              help="watermark of the previous export (0: everything)")
    exp_features.add_argument("--columns", default=None, help="comma-separated feature columns")
    exp_features.add_argument("--compute", action="store_true",
                              help="recompute batch features first")
    export.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> None:
    from adtier.logs import configure_logging

    args = build_parser().parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_json)  # logs go to stderr, data to stdout
    sys.exit(args.func(args))
