"""Bulk export of ``profile_features`` since a watermark, as Arrow record batches.

``open_export`` first writes tombstones for stored profiles that became kids, opted out or
erased since the last run (``batch.sync_exclusions``), so an exclusion reaches the very next
export; then it fixes the new watermark (the largest stored ``watermark``) before reading.
The rows are the latest row of each profile with ``since < watermark <= new`` — live rows of
profiles not excluded, and tombstones (``deleted = 1``) a consumer applies as deletions. A
profile rewritten after the export started is left for the next export (its newer row has a
larger watermark), so consecutive exports with ``since`` = the previous header lose nothing.

Known limit: a row is stamped before its insert commits, so with two writers at once (a batch
run while an export writes tombstones, e.g. several workers on a ClickHouse server) a row
stamped just below the new watermark could commit after it was read; run batch computations
and exports from one scheduler (one ``adtier serve``) until a commit-time stamp replaces it.

Rows stream from ClickHouse with ``query_arrow_stream`` block by block and are re-encoded as
they arrive, so memory is bounded by one block (``batch_rows``), whatever the size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import redis
from clickhouse_connect.driver.client import Client

from adtier.catalog import excluded_profile_hashes_sql
from adtier.features import schema as S
from adtier.features.batch import TABLE, sync_exclusions

__all__ = ["ExportPlan", "ColumnsError", "plan_export", "iter_batches", "arrow_ipc_chunks",
           "write_parquet", "select_columns"]

_BATCH_ROWS = 65_536


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
    sync_exclusions(client, redis_client)
    upto = int(client.query(f"SELECT max(watermark) FROM {TABLE}").result_rows[0][0] or 0)
    upto = max(upto, since)
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
    sql = f"SELECT {', '.join(plan.columns)} FROM {TABLE} FINAL WHERE {_where()}"
    with client.query_arrow_stream(sql, parameters={"since": plan.since, "upto": plan.watermark},
                                   settings={"max_block_size": batch_rows}) as stream:
        for batch in stream:
            if batch.num_rows:
                yield _cast(batch, plan.schema)


def _cast(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    arrays = [batch.column(i).cast(schema.field(i).type) for i in range(len(schema))]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


class _Sink:
    """A write-only file object handing out what the IPC writer produced since last asked."""

    def __init__(self):
        self.parts: list[bytes] = []
        self.closed = False

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def arrow_ipc_chunks(batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> Iterator[bytes]:
    """An Arrow IPC stream, yielded a record batch at a time."""
    sink = _Sink()
    writer = ipc.new_stream(pa.PythonFile(sink, mode="w"), schema)
    yield sink.take()  # the schema message
    for batch in batches:
        writer.write_batch(batch)
        yield sink.take()
    writer.close()
    yield sink.take()  # end-of-stream marker


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
