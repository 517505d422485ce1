"""Forward-only migrations from numbered ``sql/NNNN_name.sql`` files, recorded with checksums.

The same files run on chdb and on a server. A migration whose file changed after it was applied
is an error: fix forward with a new file instead.

On a ClickHouse cluster (``ADTIER_CLICKHOUSE_CLUSTER`` or ``adtier migrate --cluster NAME``) each
statement is rewritten by :mod:`adtier.store.cluster` before it runs (``ON CLUSTER``, Replicated
engines; one shard, N replicas), the ledger itself is a replicated table, and the checksum is
still the file's: the rewrite is a pure function of the text.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from clickhouse_connect.driver.client import Client

from adtier.store.cluster import ClusterRewriteError, cluster_statement, validate_cluster
from adtier.store.migration_lock import Lease

__all__ = [
    "Migration",
    "MigrationError",
    "apply_migrations",
    "discover",
    "ledger_statement",
    "planned_statements",
    "sql_dir",
]

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version     UInt32,
    name        String,
    checksum    String,
    applied_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree ORDER BY version
"""


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def cluster_statements(self, cluster: str) -> list[str]:
        """The statements as they run ON CLUSTER ``cluster`` ('' = single node: unchanged)."""
        if not cluster:
            return self.statements()
        try:
            return [cluster_statement(s, cluster) for s in self.statements()]
        except ClusterRewriteError as err:
            raise MigrationError(f"{self.version:04d}_{self.name}: {err}") from None

    def statements(self) -> list[str]:
        """Statements end with ';' at the end of a line's code (a trailing comment may follow)."""
        statements, current = [], []
        for line in self.text.splitlines():
            code = _code(line).rstrip()
            if not code.strip():
                continue  # blank or comment-only
            if code.endswith(";"):
                current.append(code[:-1])
                statements.append("\n".join(current).strip().strip(";").strip())
                current = []
            else:
                current.append(line.rstrip())
        statements.append("\n".join(current).strip())
        return [s for s in statements if s]


def _code(line: str) -> str:
    """The line without a '--' comment that is outside quotes."""
    quote = ""
    i = 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"`":
            quote = ch
        elif line.startswith("--", i):
            return line[:i]
        i += 1
    return line


def sql_dir() -> Path:
    """Shipped inside the wheel as ``adtier/sql``; in a source checkout, ``<root>/sql``."""
    packaged = Path(__file__).resolve().parent.parent / "sql"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "sql"


def discover(directory: Path | None = None) -> list[Migration]:
    directory = directory or sql_dir()
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration numbers in {directory}")
    return found


def ledger_statement(cluster: str = "") -> str:
    return cluster_statement(_LEDGER.strip(), cluster) if cluster else _LEDGER


def planned_statements(directory: Path | None = None, cluster: str = "") -> list[tuple[Migration, list[str]]]:
    """Every migration with the statements it would run (for ``adtier migrate --print``)."""
    if cluster:
        validate_cluster(cluster)
    return [(m, m.cluster_statements(cluster)) for m in discover(directory)]


def _check_cluster(client: Client, cluster: str) -> None:
    """The cluster exists and has one shard (the layout the rewrite produces)."""
    shards = client.query(
        "SELECT uniqExact(shard_num), count() FROM system.clusters WHERE cluster = {c:String}",
        parameters={"c": cluster}).result_rows[0]
    if not shards[1]:
        raise MigrationError(f"ClickHouse has no cluster named {cluster!r} (system.clusters); "
                             "check ADTIER_CLICKHOUSE_CLUSTER and the server's remote_servers")
    if shards[0] != 1:
        raise MigrationError(
            f"cluster {cluster!r} has {shards[0]} shards: adtier's cluster layout is one shard "
            "with N replicas (Replicated tables under their own names). Sharding needs "
            "Distributed tables over <name>_local tables, which the migrations do not create yet")
    macros = {row[0] for row in client.query("SELECT macro FROM system.macros").result_rows}
    missing = sorted({"shard", "replica"} - macros)
    if missing:
        raise MigrationError(
            f"this server defines no {', '.join(missing)} macro (<macros> in its config): "
            "Replicated tables name their Keeper path and replica with {shard} and {replica}")


def _check_ledger_mode(client: Client, cluster: str) -> None:
    """A ledger created in one mode is not silently continued in the other."""
    rows = client.query(
        "SELECT engine FROM system.tables WHERE database = currentDatabase() "
        "AND name = 'schema_migrations'").result_rows
    engine = rows[0][0] if rows else ""
    if not engine:
        return  # a fresh database
    if cluster and not engine.startswith("Replicated"):
        raise MigrationError(
            "this database was migrated as a single node (schema_migrations is " + engine + "); "
            "its tables are not replicated. Migrate a fresh database on the cluster and copy "
            "the data, or unset ADTIER_CLICKHOUSE_CLUSTER")
    if not cluster and engine.startswith("Replicated"):
        raise MigrationError(
            "this database was migrated ON CLUSTER (schema_migrations is " + engine + "); set "
            "ADTIER_CLICKHOUSE_CLUSTER so new tables are replicated too")


def apply_migrations(client: Client, directory: Path | None = None, cluster: str = "",
                     lock: AbstractContextManager[Lease] | None = None) -> list[Migration]:
    """Apply what is new, in order; return what was applied.

    ``cluster``: the name of a ClickHouse cluster (one shard, N replicas) to run every
    statement ``ON CLUSTER`` with Replicated engines; '' for a single node or chdb.
    ``lock``: held from reading the ledger to the last statement, so that of several nodes
    migrating one store at once only one runs each migration (``migration_lock.migration_lock``;
    a backfill run twice would double its counts)."""
    if cluster:
        try:
            validate_cluster(cluster)
        except ClusterRewriteError as err:
            raise MigrationError(str(err)) from None
        _check_cluster(client, cluster)
    migrations = discover(directory)
    planned = [(m, m.cluster_statements(cluster)) for m in migrations]  # fail before any DDL
    with lock or nullcontext() as lease:
        still_held = lease.check if isinstance(lease, Lease) else _always_held
        return _apply_new(client, planned, cluster, still_held)


def _always_held() -> None:
    """No lease (one owner of an embedded store, or tests): nothing to lose."""


def _apply_new(client: Client, planned: list[tuple[Migration, list[str]]], cluster: str,
               still_held: Callable[[], None]) -> list[Migration]:
    _check_ledger_mode(client, cluster)
    client.command(ledger_statement(cluster))
    if cluster:
        # Another replica may have applied migrations a moment ago: catch up before reading.
        client.command("SYSTEM SYNC REPLICA schema_migrations")
    applied = {
        row[0]: row[1]
        for row in client.query("SELECT version, checksum FROM schema_migrations").result_rows
    }
    done = []
    for migration, statements in planned:
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} changed after it was "
                    "applied; add a new migration instead"
                )
            continue
        for statement in statements:
            still_held()
            client.command(statement)
        still_held()
        client.insert(
            "schema_migrations",
            [[migration.version, migration.name, migration.checksum]],
            column_names=["version", "name", "checksum"],
        )
        done.append(migration)
    return done
