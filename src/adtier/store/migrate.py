"""Forward-only migrations from numbered ``sql/NNNN_name.sql`` files, recorded with checksums.

The same files run on chdb and on a server. A migration whose file changed after it was applied
is an error: fix forward with a new file instead.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from clickhouse_connect.driver.client import Client

__all__ = ["Migration", "MigrationError", "discover", "apply_migrations", "sql_dir"]

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


def apply_migrations(client: Client, directory: Path | None = None) -> list[Migration]:
    """Apply what is new, in order; return what was applied."""
    client.command(_LEDGER)
    applied = {
        row[0]: row[1]
        for row in client.query("SELECT version, checksum FROM schema_migrations").result_rows
    }
    done = []
    for migration in discover(directory):
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} changed after it was "
                    "applied; add a new migration instead"
                )
            continue
        for statement in migration.statements():
            client.command(statement)
        client.insert(
            "schema_migrations",
            [[migration.version, migration.name, migration.checksum]],
            column_names=["version", "name", "checksum"],
        )
        done.append(migration)
    return done
