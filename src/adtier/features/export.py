"""Bulk export of ``profile_features`` since a watermark, as Arrow record batches.

``plan_export`` first writes tombstones for stored profiles that became kids, opted out or
erased since the last run (``batch.sync_exclusions``), so an exclusion reaches the very next
export; then it fixes the new watermark before reading: the largest committed ``watermark``,
but below every stamp still in flight (``watermark.safe_upto``), so a row stamped by a
concurrent writer and committed after this export read is never skipped by the next one.
The rows are the latest row of each profile with ``since < watermark <= new`` — live rows of
profiles not excluded, and tombstones (``deleted = 1``) a consumer applies as deletions. A
profile rewritten after the export started is left for the next export (its newer row has a
larger watermark), so consecutive exports with ``since`` = the previous header lose nothing.
Writers and exports must share a stamp registry: pass the same Redis client (the server and
the CLI do), or none at all within one process.

Rows are read in slices of the profile-hash space (``_SLICE_ROWS`` profiles each, the sort key,
so a slice is a contiguous range): the embedded chDB backend materializes a whole Arrow result
before handing it over, so one query for everything would hold the whole export in memory;
per slice, memory is bounded by a few slices whatever the export's size, on chDB and on a
server. ClickHouse writes each slice as an Arrow IPC stream (``FORMAT ArrowStream``) whose
types are exactly ``schema.EXPORT_SCHEMA``'s (strings as strings, LowCardinality unwrapped,
uncompressed: the bytes stay in-process or on a local link), so ``arrow_ipc_stream`` passes its
record batch messages through as they are, behind the documented schema message: pyarrow frames
them and reads their headers (``_messages``), nothing is decoded or re-encoded.
A server whose types differ (``_layout``) gets its batches decoded and cast instead. One
query's Arrow output is written on one core, so with more than one client (``more``; the
server's export uses ``EXPORT_READERS``) the next slices are read ahead on other threads.
"""

from __future__ import annotations

import io
import queue
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
import redis
from clickhouse_connect.driver.client import Client

from adtier.privacy.exclusions import excluded_profile_hashes_sql
from adtier.features import schema as S
from adtier.features.batch import TABLE, sync_exclusions
from adtier.features.watermark import safe_upto, stamps_for

__all__ = ["ExportPlan", "ColumnsError", "plan_export", "iter_batches", "arrow_ipc_stream",
           "write_parquet", "select_columns", "export_slices", "EXPORT_READERS"]

# Clients an export reads its slices with (the server's export opens this many when there is
# more than one slice): ClickHouse writes one query's Arrow on one core.
EXPORT_READERS = 2

_BATCH_ROWS = 65_536
_SLICE_ROWS = 131_072
_HASH_SPACE = 1 << 64
# In the SQL text, not per-call settings: the chDB backend applies those with SET before and
# after every query. Strings as Arrow strings and LowCardinality as plain values: the layout of
# schema.EXPORT_SCHEMA, so record batches pass through untouched.
_ARROW_SETTINGS = (f"SETTINGS max_block_size = {_BATCH_ROWS}, "
                   "output_format_arrow_compression_method = 'none', "
                   "output_format_arrow_string_as_string = 1, "
                   "output_format_arrow_low_cardinality_as_dictionary = 0")


class ColumnsError(ValueError):
    """An unknown column was asked for."""


def select_columns(columns: str | None) -> list[str]:
    """The export's columns: the key columns always, then the asked features (default all)."""
    names = [name for name, _, _ in S.COLUMNS]
    if not columns:
        return names
    wanted = [c.strip() for c in columns.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in names]
    if unknown:
        raise ColumnsError(f"unknown columns: {', '.join(unknown)}; known: {', '.join(names)}")
    return [n for n in names if n in S.KEY_COLUMNS or n in wanted]


@dataclass
class ExportPlan:
    since: int
    watermark: int
    columns: list[str]
    rows: int  # rows the export will carry (counted before streaming)
    schema: pa.Schema


def _where() -> str:
    return ("watermark > {since:UInt64} AND watermark <= {upto:UInt64} "
            f"AND (deleted = 1 OR profile_hash NOT IN ({excluded_profile_hashes_sql()}))")


def plan_export(client: Client, since: int, columns: list[str],
                redis_client: redis.Redis | None = None) -> ExportPlan:
    stamps = stamps_for(redis_client)
    sync_exclusions(client, redis_client, stamps)
    # the committed maximum first, then the in-flight floor: the order safe_upto relies on
    committed = int(client.query(f"SELECT max(watermark) FROM {TABLE}").result_rows[0][0] or 0)
    upto = max(safe_upto(committed, stamps), since)
    rows = int(client.query(f"SELECT count() FROM {TABLE} FINAL WHERE {_where()}",
                            parameters={"since": since, "upto": upto}).result_rows[0][0])
    schema = pa.schema([S.EXPORT_SCHEMA.field(c) for c in columns],
                       metadata=S.EXPORT_SCHEMA.metadata)
    return ExportPlan(since, upto, columns, rows, schema)


def iter_batches(client: Client, plan: ExportPlan,
                 more: Sequence[Client] = ()) -> Iterator[pa.RecordBatch]:
    """The plan's rows as record batches of the documented schema (Parquet, the CLI)."""
    for message, source, same in _record_messages([client, *more], plan):
        yield _decode(message, plan.schema, source, same)


def arrow_ipc_stream(client: Client, plan: ExportPlan,
                     more: Sequence[Client] = ()) -> Iterator[bytes]:
    """The plan's rows as an Arrow IPC stream, yielded in pieces: the documented schema, each
    record batch message ClickHouse wrote, passed through as it came (its layout is the
    schema's: no decode, no re-encode), the end marker. ``more``: further clients of the same
    database, not used elsewhere meanwhile, to read the next slices ahead on other cores."""
    yield plan.schema.serialize().to_pybytes()
    for message, source, same in _record_messages([client, *more], plan):
        if same:
            yield message.data()
        else:  # another server's types (a cast needed): decode, cast, encode
            yield _decode(message, plan.schema, source, same).serialize().to_pybytes()
    yield _EOS


def _record_messages(clients: list[Client],
                     plan: ExportPlan) -> Iterator[tuple[_Message, pa.Schema, bool]]:
    """Each non-empty record batch message of the plan's rows, with the schema ClickHouse
    declared for it and whether that schema's layout is the plan schema's."""
    if plan.rows == 0:
        return
    for src in _slice_sources(clients, plan):
        messages = _messages(src)
        first = next(messages, None)
        if first is None:  # an empty result may carry no schema at all
            continue
        if first.kind != "schema":
            raise ValueError("ClickHouse's Arrow stream did not start with a schema")
        source = pa.ipc.read_schema(first.message)
        same = _layout(source) == _layout(plan.schema)
        for message in messages:
            if message.kind != "record batch":  # dictionaries are turned off in the SQL
                raise ValueError(f"unexpected Arrow IPC message type {message.kind}")
            if message.rows:
                yield message, source, same


def _slice_sources(clients: list[Client], plan: ExportPlan) -> Iterator[BinaryIO]:
    """Each slice's Arrow IPC stream, in slice order. With one client, each is read as
    ClickHouse sends it; with more, each client reads whole slices ahead in its own thread
    (ClickHouse writes one query's Arrow on one core: the cores take a slice each), at most
    one slice per client in flight beyond the one being sent."""
    sql = (f"SELECT {', '.join(plan.columns)} FROM {TABLE} FINAL WHERE {_where()} "
           "AND profile_hash BETWEEN {lo:UInt64} AND {hi:UInt64} " + _ARROW_SETTINGS)

    def params(lo: int, hi: int) -> dict[str, int]:
        return {"since": plan.since, "upto": plan.watermark, "lo": lo, "hi": hi}

    slices = _slices(plan.rows)
    if len(clients) == 1 or len(slices) == 1:
        for lo, hi in slices:
            with clients[0].raw_stream(sql, parameters=params(lo, hi), fmt="ArrowStream") as src:
                yield src
        return
    free: queue.SimpleQueue[Client] = queue.SimpleQueue()
    for client in clients:
        free.put(client)

    def read(lo: int, hi: int) -> bytes:
        client = free.get()  # a client serves one query at a time
        try:
            with client.raw_stream(sql, parameters=params(lo, hi), fmt="ArrowStream") as src:
                return src.read()  # the whole slice: bounded by _SLICE_ROWS
        finally:
            free.put(client)

    pool = ThreadPoolExecutor(len(clients), thread_name_prefix="adtier-export")
    try:
        ahead = iter(slices)
        pending = deque(pool.submit(read, lo, hi) for lo, hi in islice(ahead, len(clients)))
        while pending:
            data = pending.popleft().result()
            following = next(ahead, None)
            if following is not None:
                pending.append(pool.submit(read, *following))
            yield io.BytesIO(data)
    finally:  # also when the consumer went away: drop what has not started
        pool.shutdown(wait=True, cancel_futures=True)


def _decode(message: _Message, schema: pa.Schema, source: pa.Schema,
            same: bool) -> pa.RecordBatch:
    if same:
        return pa.ipc.read_record_batch(message.message, schema)
    return _cast(pa.ipc.read_record_batch(message.message, source), schema)


def _layout(schema: pa.Schema) -> list[tuple]:
    """What decides whether ClickHouse's record batches can be sent under our schema: types
    and nesting, not nullability (ClickHouse declares every column not null) or names."""

    def of(t: pa.DataType) -> tuple:
        return (str(t) if t.num_fields == 0 else t.id,
                tuple(of(t.field(i).type) for i in range(t.num_fields)))

    return [of(field.type) for field in schema]


def export_slices(rows: int) -> list[tuple[int, int]]:
    """The profile_hash ranges an export of ``rows`` rows is read in."""
    return _slices(rows)


def _slices(rows: int) -> list[tuple[int, int]]:
    """Contiguous profile_hash ranges of ~_SLICE_ROWS rows each (cityHash64 is uniform)."""
    n = max(1, -(-rows // _SLICE_ROWS))
    step = _HASH_SPACE // n
    return [(i * step, _HASH_SPACE - 1 if i == n - 1 else (i + 1) * step - 1) for i in range(n)]


def _cast(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    arrays = [batch.column(i).cast(schema.field(i).type) for i in range(len(schema))]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # IPC stream end: continuation marker, length 0

@dataclass(frozen=True, slots=True)
class _Message:
    rows: int             # a record batch's length
    message: pa.ipc.Message

    @property
    def kind(self) -> str:
        """pyarrow's message type: 'schema', 'record batch', ..."""
        return self.message.type

    def data(self) -> bytes:
        """The encapsulated message as it was framed (metadata and body, padded)."""
        return self.message.serialize().to_pybytes()


def _messages(src: BinaryIO) -> Iterator[_Message]:
    """The messages of an Arrow IPC stream as they come, up to the end marker or the end of the
    file: pyarrow frames them and parses their headers; a record batch is mapped, not copied,
    only to learn its length."""
    reader = pa.ipc.MessageReader.open_stream(_FullReads(src))
    schema = None
    while True:
        try:
            message = reader.read_next_message()
        except StopIteration:
            return
        rows = 0
        if message.type == "schema":
            schema = pa.ipc.read_schema(message)
        elif message.type == "record batch" and schema is not None:
            rows = pa.ipc.read_record_batch(message, schema).num_rows
        yield _Message(rows, message)


class _FullReads(io.RawIOBase):
    """A file object whose ``read(n)`` returns n bytes unless the stream ended: pyarrow's
    message reader takes a short read for a truncated stream, and a network stream (an HTTP
    response from a ClickHouse server) may answer a read with fewer bytes than asked."""

    def __init__(self, src: BinaryIO):
        self._src = src

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return self._src.read()
        parts, got = [], 0
        while got < n:
            more = self._src.read(n - got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)


def write_parquet(batches: Iterator[pa.RecordBatch], schema: pa.Schema, path: Path,
                  on_batch: Callable[[int], None] | None = None) -> int:
    """Write the batches to a Parquet file (zstd); answers the row count."""
    rows = 0
    with pq.ParquetWriter(str(path), schema, compression="zstd") as writer:
        for batch in batches:
            writer.write_batch(batch)
            rows += batch.num_rows
            if on_batch is not None:
                on_batch(batch.num_rows)
    return rows
