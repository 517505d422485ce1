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
per slice, memory is bounded by one slice whatever the export's size, on chDB and on a server
(where each slice also streams block by block). Each record batch goes out as soon as it is
read, serialized once (``RecordBatch.serialize``: no re-encode through a file object). ClickHouse
sends Arrow uncompressed (``output_format_arrow_compression_method = 'none'``): the bytes stay
in-process or on a local link, and lz4 cost more CPU than it saved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import redis
from clickhouse_connect.driver.client import Client

from adtier.catalog import excluded_profile_hashes_sql
from adtier.features import schema as S
from adtier.features.batch import TABLE, sync_exclusions
from adtier.features.watermark import safe_upto, stamps_for

__all__ = ["ExportPlan", "ColumnsError", "plan_export", "iter_batches", "arrow_ipc_chunks",
           "write_parquet", "select_columns"]

_BATCH_ROWS = 65_536
_SLICE_ROWS = 262_144
_HASH_SPACE = 1 << 64


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
                 batch_rows: int = _BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """The plan's rows, one record batch per ClickHouse block, cast to the documented schema."""
    if plan.rows == 0:
        return
    sql = (f"SELECT {', '.join(plan.columns)} FROM {TABLE} FINAL WHERE {_where()} "
           "AND profile_hash BETWEEN {lo:UInt64} AND {hi:UInt64}")
    settings = {"max_block_size": batch_rows, "output_format_arrow_compression_method": "none"}
    for lo, hi in _slices(plan.rows):
        params = {"since": plan.since, "upto": plan.watermark, "lo": lo, "hi": hi}
        with client.query_arrow_stream(sql, parameters=params, settings=settings) as stream:
            for batch in stream:
                if batch.num_rows:
                    yield _cast(batch, plan.schema)


def _slices(rows: int) -> list[tuple[int, int]]:
    """Contiguous profile_hash ranges of ~_SLICE_ROWS rows each (cityHash64 is uniform)."""
    n = max(1, -(-rows // _SLICE_ROWS))
    step = _HASH_SPACE // n
    return [(i * step, _HASH_SPACE - 1 if i == n - 1 else (i + 1) * step - 1) for i in range(n)]


def _cast(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    arrays = [batch.column(i).cast(schema.field(i).type) for i in range(len(schema))]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # IPC stream end: continuation marker, length 0


def arrow_ipc_chunks(batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> Iterator[bytes]:
    """An Arrow IPC stream, yielded a message at a time: the schema, each record batch as an
    encapsulated IPC message (what the stream writer would write), the end marker."""
    yield schema.serialize().to_pybytes()
    for batch in batches:
        yield batch.serialize().to_pybytes()
    yield _EOS


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
