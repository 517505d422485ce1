"""``adtier`` command line: serve, migrate, flush, keys, simulate, segments, export.

Every command fails with a sentence and a hint, never a traceback (``adtier --debug ...``
shows it): ``main`` is the one place that turns an exception into that message.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import socket
import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path

import msgspec

from adtier.settings import ROLES, Settings, load_settings

__all__ = ["main", "build_parser"]

EXPORT_SUFFIXES = (".parquet", ".arrow")


class CliError(Exception):
    """A failure the person at the terminal can act on: what happened, and what to do."""

    def __init__(self, message: str, hint: str = "", code: int = 1):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(data_dir=getattr(args, "data_dir", None))


def cmd_serve(args: argparse.Namespace) -> int:
    from granian.constants import Interfaces
    from granian.server import Server

    settings = load_settings(data_dir=getattr(args, "data_dir", None), host=args.host,
                             port=args.port, workers=args.workers, role=args.role)
    _refuse_embedded_workers(settings)
    # Both checks before anything starts: granian binds with SO_REUSEPORT, so a second server on
    # a busy port would start and take half the requests; a busy data dir fails deep in start-up.
    _refuse_busy_data_dir(settings)
    _refuse_busy_port(settings.host, settings.port)
    if not settings.embedded_clickhouse and settings.role == "all":
        # Several workers would race to apply migrations: do it once, before they start.
        from adtier.store import connect
        from adtier.store.migrate import apply_migrations

        apply_migrations(connect(settings.clickhouse_dsn), cluster=settings.clickhouse_cluster,
                         lock=_fleet_migration_lock(settings))
    if getattr(args, "demo", False) and "ADTIER_LOG_LEVEL" not in os.environ:
        # the demo's progress bar runs in another process: keep the server's info lines out
        os.environ["ADTIER_LOG_LEVEL"] = "warning"
    # The worker process reads its settings from the environment.
    os.environ.update({
        "ADTIER_DATA_DIR": str(settings.data_dir.resolve()),
        "ADTIER_HOST": settings.host,
        "ADTIER_PORT": str(settings.port),
        "ADTIER_WORKERS": str(settings.workers),
        "ADTIER_ROLE": settings.role,
        "ADTIER_DIE_WITH_PARENT": "1",
    })
    print(f"adtier {_version()} starting on http://{settings.host}:{settings.port} "
          f"(data: {settings.data_dir.resolve()})", file=sys.stderr, flush=True)
    _announce_when_ready(settings)
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


def _refuse_embedded_workers(settings: Settings) -> None:
    """An embedded store belongs to one process: several workers need it external (the
    ingest role opens no ClickHouse, so there only Valkey counts)."""
    if settings.workers <= 1:
        return
    if settings.role == "all" and settings.embedded_clickhouse:
        raise CliError("the embedded ClickHouse (chdb) is opened by one process; use --workers 1",
                       "or set ADTIER_CLICKHOUSE_URL to a ClickHouse server to run several "
                       "workers (or serve --role ingest: no ClickHouse)", code=2)
    if settings.embedded_redis:
        raise CliError("the embedded Valkey is started by one process; use --workers 1",
                       "or set ADTIER_REDIS_URL to a Valkey/Redis server to run several "
                       "workers", code=2)


def _refuse_busy_data_dir(settings: Settings) -> None:
    if not ((settings.embedded_clickhouse and settings.role == "all")
            or settings.embedded_redis):
        return
    from adtier.runtime import data_dir_owner

    owner = data_dir_owner(settings.data_dir)
    if owner:
        raise CliError(f"the data dir {settings.data_dir.resolve()} is in use by {owner}",
                       "stop that server first, or give this one its own data dir and port: "
                       "adtier --data-dir other-data serve --port 8001")


def _refuse_busy_port(host: str, port: int) -> None:
    """Bind once without SO_REUSEPORT: it fails while any other socket listens there."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        try:
            probe.bind((host, port))
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                raise CliError(f"cannot listen on {host}:{port}: {err.strerror}",
                               "check --host / ADTIER_HOST (an address of this machine)") from None
            raise CliError(f"port {port} on {host} is already in use{_who_listens(host, port)}",
                           f"stop the other server, or pick another port: adtier serve --port "
                           f"{port + 1} (or ADTIER_PORT)") from None


def _who_listens(host: str, port: int) -> str:
    import httpx

    target = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    try:
        answer = httpx.get(f"http://{target}:{port}/healthz", timeout=1.0)
        if answer.status_code == 200 and answer.json() == {"status": "ok"}:
            return " (an adtier server answers there)"
    except Exception:  # noqa: BLE001 - only used to say more, never to decide
        pass
    return ""


def _announce_when_ready(settings: Settings) -> None:
    """Once the server answers, print where it is, and a newly generated admin key, last and
    boxed (the worker writes the key file at its first start; it is shown this once).

    A child process, not a thread: granian forks its workers after this, and a thread caught
    holding a lock (an import, say) at the fork leaves the worker blocked forever."""
    import subprocess

    key_path = settings.data_dir.resolve() / "admin_key"
    new_key = not settings.admin_key and not key_path.exists()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from adtier.cli import announce; announce(*sys.argv[1:])",
         f"http://{host}:{settings.port}", str(key_path) if new_key else "", str(time.time())],
        env={**os.environ, "ADTIER_DIE_WITH_PARENT": "1"})


def announce(url: str, key_path: str, since: str) -> None:
    """The child of ``_announce_when_ready``: wait for ``/readyz``, then print the box."""
    import httpx

    from adtier.embedded_valkey import die_with_parent

    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C on the server ends this quietly too
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    time.sleep(1.0)  # let the start-up's last log lines out first
    lines = [f"adtier is ready: {url}", f"API docs: {url}/docs   console: {url}/console"]
    path = Path(key_path) if key_path else None
    if path is not None and path.exists() and path.stat().st_mtime >= float(since) - 1:
        lines += ["", f"admin key (shown once; also in {path}):", path.read_text().strip()]
    print(_boxed(lines), file=sys.stderr, flush=True)


def _boxed(lines: list[str]) -> str:
    width = max(len(line) for line in lines)
    bar = "+" + "-" * (width + 2) + "+"
    return "\n".join([bar, *(f"| {line.ljust(width)} |" for line in lines), bar])


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
        lock_fd = None
        if settings.embedded_clickhouse:  # chdb would fail deep inside on a running server's dir
            from adtier.runtime import lock_data_dir

            lock_fd = lock_data_dir(settings.data_dir, "adtier migrate")
        try:
            client = connect(settings.clickhouse_dsn)
            applied = apply_migrations(client, cluster=cluster,
                                       lock=_fleet_migration_lock(settings))
        finally:
            if lock_fd is not None:
                os.close(lock_fd)
    except (MigrationError, ClusterRewriteError, MigrationLockTimeout, MigrationLeaseLost) as err:
        print(f"adtier: {err}", file=sys.stderr)
        return 2
    for m in applied:
        print(f"applied {m.version:04d}_{m.name}")
    print(f"schema up to date ({len(applied)} applied)" + (f" on cluster {cluster}" if cluster else ""))
    return 0


def cmd_flush(args: argparse.Namespace) -> int:
    from adtier.runtime import default_consumer_name, new_flusher, open_stores

    settings = _settings(args)
    stores = open_stores(settings)
    flusher = new_flusher(settings, stores.new_clickhouse(), stores.redis,
                          args.name or default_consumer_name(settings))
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
    from adtier.segments.build import build_many
    from adtier.segments.build_lock import BuildBusy

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
    from adtier.segments.restore import restore_redis

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
    from adtier import audit
    from adtier.runtime import open_stores

    try:
        columns = select_columns(args.columns)
    except ColumnsError as err:
        print(f"adtier: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.suffix.lower() not in EXPORT_SUFFIXES:
        raise CliError(f"--out {args.out}: the export writes Parquet (.parquet) or an Arrow IPC "
                       f"stream (.arrow), not {out.suffix or 'a file without an extension'}",
                       "name the file features.parquet or features.arrow", code=2)
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
            if out.suffix.lower() == ".arrow":
                rows = 0
                with pa.OSFile(str(out), "wb") as sink, ipc.new_stream(sink, plan.schema) as w:
                    for b in iter_batches(client, plan):
                        w.write_batch(b)
                        rows += b.num_rows
                        bar.update(b.num_rows)
            else:
                rows = write_parquet(iter_batches(client, plan), plan.schema, out, bar.update)
        # who, what, when, how many, and the hash of exactly what was written
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


_OVERVIEW = """\
adtier: audiences, measurement and features for the ad tier of a streaming service.

commands (adtier COMMAND --help for each one's options):
  serve      run the HTTP server with its flushers      adtier serve --port 8000
  migrate    apply new sql/ migrations                  adtier migrate --print
  flush      run a flusher alone (scale-out)            adtier flush --once
  keys       create, list and revoke API keys           adtier keys create ingest --name tv-app
  simulate   a synthetic world with ground truth        adtier simulate --profiles 2000 --direct
  segments   build segments now, or restore Valkey      adtier segments build --all
  export     export features to Parquet or Arrow        adtier export features --out f.parquet

With embedded stores one process owns the data dir: while a server runs there, use its HTTP
API (http://127.0.0.1:8000/docs) instead of the data commands.
"""


def _sub(sub, name: str, help_: str, example: str, **kw) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help_, description=help_, epilog=f"example:\n  {example}",
                          formatter_class=argparse.RawDescriptionHelpFormatter, **kw)


def build_parser() -> argparse.ArgumentParser:
    # --data-dir and --debug are accepted before or after the command
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=argparse.SUPPRESS,
                        help="data directory (env ADTIER_DATA_DIR, default ./adtier-data)")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="on failure, show the traceback")
    parser = argparse.ArgumentParser(prog="adtier", description=_OVERVIEW, parents=[common],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"adtier {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str, example: str) -> argparse.ArgumentParser:
        return _sub(sub, name, help_, example, parents=[common])

    serve = add("serve", "run the HTTP server with its flushers",
                "adtier serve --port 8000          # then open http://127.0.0.1:8000/docs")
    serve.add_argument("--host", default=None, help="env ADTIER_HOST, default 127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help="env ADTIER_PORT, default 8000")
    serve.add_argument("--workers", type=int, default=None, help="HTTP worker processes")
    serve.add_argument("--role", choices=ROLES, default=None,
                       help="all: every endpoint, flushers, feature jobs; ingest: events into "
                            "the Valkey buffer only, no ClickHouse (env ADTIER_ROLE, default all)")
    serve.add_argument("--demo", action="store_true",
                       help="load a demo catalog and replay a simulated week through the API")
    serve.set_defaults(func=cmd_serve)

    migrate = add("migrate", "apply new sql/ migrations (the server does it at start too)",
                  "adtier migrate --print --cluster adtier   # show the statements, no database")
    migrate.add_argument("--cluster", default=None, metavar="NAME",
                         help="run ON CLUSTER NAME with Replicated tables (env "
                              "ADTIER_CLICKHOUSE_CLUSTER; '' = single node)")
    migrate.add_argument("--print", action="store_true",
                         help="print the statements every migration runs, and exit (no database)")
    migrate.set_defaults(func=cmd_migrate)

    flush = add("flush", "run a flusher alone (scale-out)",
                "adtier flush --name flusher-1     # several share one consumer group")
    flush.add_argument("--name", default="", help="consumer name, unique per flusher")
    flush.add_argument("--once", action="store_true", help="flush what is buffered, then exit")
    flush.set_defaults(func=cmd_flush)

    keys = add("keys", "create, list and revoke API keys",
               "adtier keys create advertiser --advertiser-id adv-1 --name northwind")
    keys_sub = keys.add_subparsers(dest="keys_cmd", required=True, metavar="ACTION")
    create = _sub(keys_sub, "create", "create a key (the secret is printed once)",
                  "adtier keys create ingest --name tv-app")
    # validated by KeyRegistry.create, the one list of roles (importing it here would make
    # every command, --help included, pay for the Redis and ClickHouse clients)
    create.add_argument("role", help="ingest | advertiser | verifier | recs | admin")
    create.add_argument("--advertiser-id", default="",
                        help="the advertiser an advertiser or verifier key is bound to")
    create.add_argument("--name", default="", help="a label for people")
    _sub(keys_sub, "list", "list keys (never their secrets)", "adtier keys list")
    revoke = _sub(keys_sub, "revoke", "revoke a key", "adtier keys revoke key_0123456789abcdef")
    revoke.add_argument("key_id")
    keys.set_defaults(func=cmd_keys)

    from adtier.simulate.command import add_arguments as simulate_arguments

    simulate = add("simulate", "generate a synthetic ad-tier world with ground truth",
                   "adtier simulate --profiles 2000 --days 7 --url http://127.0.0.1:8000 "
                   "--key $INGEST --admin-key $ADMIN")
    simulate_arguments(simulate)
    simulate.set_defaults(func=cmd_simulate)

    segments = add("segments", "build audience segments now, or restore their look-up sets",
                   "adtier segments build --all")
    segments_sub = segments.add_subparsers(dest="segments_cmd", required=True, metavar="ACTION")
    seg_build = _sub(segments_sub, "build", "build segments now, with a progress bar",
                     "adtier segments build seg_0123456789abcdef")
    seg_build.add_argument("ids", nargs="*", metavar="ID", help="segment ids")
    seg_build.add_argument("--all", action="store_true", help="every segment")
    _sub(segments_sub, "restore", "reload the served segments' Valkey look-up sets from "
         "ClickHouse (after Valkey was emptied or replaced)", "adtier segments restore")
    segments.set_defaults(func=cmd_segments)

    export = add("export", "export data for downstream jobs",
                 "adtier export features --out features.parquet --compute")
    export_sub = export.add_subparsers(dest="export_cmd", required=True, metavar="WHAT")
    exp_features = _sub(export_sub, "features",
                        "profile features changed since a watermark, with a progress bar",
                        "adtier export features --out features.parquet --since 0 --compute")
    exp_features.add_argument("--out", required=True,
                              help="FILE.parquet, or FILE.arrow for an Arrow IPC stream")
    exp_features.add_argument("--since", type=int, default=0,
                              help="watermark of the previous export (0: everything)")
    exp_features.add_argument("--columns", default=None, help="comma-separated feature columns")
    exp_features.add_argument("--compute", action="store_true",
                              help="recompute batch features first")
    export.set_defaults(func=cmd_export)
    return parser


def _explain(err: BaseException, command: str) -> CliError:
    """The sentence and hint for a failure; unknown ones name the exception, not its stack."""
    from adtier.runtime import DataDirBusy

    if isinstance(err, CliError):
        return err
    if isinstance(err, DataDirBusy) and command == "migrate":
        return CliError(str(err), "a server applies new migrations itself when it starts: "
                        "restart it to apply them, or stop it and run adtier migrate")
    if isinstance(err, DataDirBusy):
        return CliError(str(err), "while that server runs, use its HTTP API (its /docs lists "
                        "every endpoint), or stop it first; `adtier --data-dir DIR` picks "
                        "another dir")
    import redis
    from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

    if isinstance(err, OperationalError) and os.environ.get("ADTIER_CLICKHOUSE_URL"):
        return CliError(f"cannot reach ClickHouse at {os.environ['ADTIER_CLICKHOUSE_URL']}",
                        "is the server up? check ADTIER_CLICKHOUSE_URL (unset: the embedded "
                        "ClickHouse in the data dir)")
    if isinstance(err, ClickHouseError):
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        return CliError(f"ClickHouse refused `adtier {command}`: {first}",
                        "check ADTIER_CLICKHOUSE_URL (unset: the embedded one in the data dir); "
                        "--debug shows the full error")
    if isinstance(err, redis.exceptions.ConnectionError):
        return CliError(f"cannot reach Valkey/Redis: {err}",
                        "check ADTIER_REDIS_URL (unset: the embedded Valkey in the data dir)")
    if isinstance(err, OSError) and err.strerror:
        where = f": {err.filename}" if err.filename else ""
        return CliError(f"`adtier {command}` failed: {err.strerror}{where}",
                        "check the path and its permissions")
    return CliError(f"`adtier {command}` failed: {type(err).__name__}: {err}",
                    f"run it again with --debug to see where (adtier --debug {command} ...)")


def _say_error(failure: CliError) -> None:
    print(f"adtier: {failure.message}", file=sys.stderr)
    if failure.hint:
        print(f"  hint: {failure.hint}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    from adtier.logs import configure_logging

    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except (ValueError, msgspec.ValidationError) as err:
        _say_error(CliError(f"a setting is not valid: {err}",
                            "check the ADTIER_* environment variables (README: Configuration)"))
        sys.exit(2)
    configure_logging(settings.log_level, settings.log_as_json)  # logs to stderr, data to stdout
    debug = getattr(args, "debug", False)
    if not debug:  # the driver logs its own copy of every error it raises
        logging.getLogger("clickhouse_connect").setLevel(logging.CRITICAL)
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        code = 130
    except Exception as err:  # noqa: BLE001 - the one place errors become messages
        if debug:
            raise
        failure = _explain(err, args.command)
        _say_error(failure)
        code = failure.code
    sys.exit(code)
