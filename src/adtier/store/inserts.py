"""Raw inserts of bytes already in an input format (the flusher's blocks), from memory.

clickhouse-connect's chDB backend writes every raw insert to a temporary file and has the
engine read it back (``INSERT ... FROM INFILE``): a write, a read and an unlink of every flush
block (tens of MB), on the flushing thread. chdb's own streaming insert
(``Connection.send_insert``, public API) hands the engine the bytes in memory instead, on a
handle of its own to the same engine; the statement, its ``SETTINGS`` clause (the
deduplication token) and the engine's errors are the same. A client to a ClickHouse server (or
anything that is not a chDB client) keeps clickhouse-connect's ``raw_insert``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

__all__ = ["ENGINE_INSERT_SETTINGS", "RawInsert", "raw_inserter", "settings_clause"]

# (table, block, format, settings): raises on failure, with ClickHouse's message in the error
RawInsert = Callable[[str, "bytes | bytearray", str, Mapping[str, object]], None]

# A block is handed over in slices: chdb copies each into bytes, and slices of a few MB reuse
# memory instead of copying a whole block (tens of MB) at once.
CHUNK_BYTES = 4 * 1024 * 1024
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# Under every insert made through raw_inserter (a caller's own settings win; the ordinals' and
# the simulator's own raw_insert calls do without: their readers take FINAL or max).
# optimize_on_insert = 0: the engine would otherwise sort and fold each part written to a
# Replacing/Aggregating table (the rollups the views feed, ad_erased_events) at insert. The
# rollup views' GROUP BYs are their targets' sort keys, so their blocks have nothing to fold;
# ad_erased_events' view does not group, and its readers take FINAL or only ask whether a row
# exists. Every reader aggregates again or reads FINAL anyway: the fold changed no answer and
# cost 0.3-0.5 µs of CPU per ad row
# (loadtest.bench_chdb_formats --only settings).
ENGINE_INSERT_SETTINGS: Mapping[str, object] = {"optimize_on_insert": 0}


def raw_inserter(client: Client) -> RawInsert:
    """How to insert raw blocks with ``client``: from memory on chDB, else ``raw_insert``;
    either way with ``ENGINE_INSERT_SETTINGS`` under the caller's settings."""
    # Client.uri is public: "chdb://<path>" for a chDB client (whose ``path`` is public too).
    # Only a client itself: a wrapper (the tests' gated client) keeps its own ``raw_insert``.
    if (isinstance(client, Client) and str(client.uri).startswith("chdb://")
            and hasattr(client, "path")):
        from chdb.state.sqlitelike import Connection

        if hasattr(Connection, "send_insert"):  # chdb versions with the streaming insert
            return _ChdbInsert(_engine_path(str(client.path)), client.database)

    def via_client(table: str, block: bytes | bytearray, fmt: str,
                   settings: Mapping[str, object]) -> None:
        client.raw_insert(table, insert_block=block, fmt=fmt,
                          settings={**ENGINE_INSERT_SETTINGS, **settings})
    return via_client


def _engine_path(path: str) -> str:
    """The path as the client's own handle named it: chdb compares engine paths literally, so a
    directory spelled differently (trailing slash, relative) is refused as another engine."""
    if path.startswith((":memory:", "file:")):
        return path
    return os.path.realpath(path)


def settings_clause(settings: Mapping[str, object]) -> str:
    """``SETTINGS k = v, ...`` (names checked, strings quoted), or '' for none."""
    parts = []
    for key, value in settings.items():
        if not _NAME.match(key):
            raise ValueError(f"not a setting name: {key!r}")
        if isinstance(value, bool):
            text = "1" if value else "0"
        elif isinstance(value, (int, float)):
            text = repr(value)
        else:
            text = "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
        parts.append(f"{key} = {text}")
    return " SETTINGS " + ", ".join(parts) if parts else ""


def _quote(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


class _ChdbInsert:
    """One insert per call, on a handle opened for it (0.2 ms; nothing left open between
    flushes, so no handle outlives the client's engine)."""

    def __init__(self, path: str, database: str | None):
        self.path = path
        self.database = database

    def __call__(self, table: str, block: bytes | bytearray, fmt: str,
                 settings: Mapping[str, object]) -> None:
        import chdb  # the chDB extra: only a chDB client gets here

        if not _NAME.match(fmt):
            raise ValueError(f"not a format name: {fmt!r}")
        target = _quote(table) if not self.database else f"{_quote(self.database)}.{_quote(table)}"
        try:
            conn = chdb.connect(self.path)
        except RuntimeError as err:
            raise DatabaseError(_engine_message(str(err))) from err
        try:
            statement = f"INSERT INTO {target}{settings_clause({**ENGINE_INSERT_SETTINGS, **settings})}"
            with conn.send_insert(statement, fmt) as insert:
                if isinstance(block, bytes):
                    insert.append(block)
                else:
                    view = memoryview(block)
                    for start in range(0, len(view), CHUNK_BYTES):
                        insert.append(view[start:start + CHUNK_BYTES])
                insert.finish()
        except RuntimeError as err:  # chdb's errors carry the engine's message and code
            raise DatabaseError(_engine_message(str(err))) from err
        finally:
            conn.close()


def _engine_message(text: str) -> str:
    """The engine's own message ("Code: N. DB::Exception: ..."), without chdb's prefix."""
    at = text.find("Code: ")
    return text[at:] if at > 0 else text
