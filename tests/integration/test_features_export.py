"""The export's record batch pass-through on the real store (chDB): the same rows and schema
as decoding each batch, in one slice or many, with one reader or several, and a cast where a
server's types differ."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pytest

from adtier.features import export as E
from adtier.features.schema import EXPORT_SCHEMA
from adtier.store import connect

_ROWS = """
INSERT INTO profile_features (profile_hash, profile_id, profile_sha256, deleted, schema_version,
                              as_of, window_days, impressions, ad_category_affinity,
                              genre_affinity, computed_at, watermark)
SELECT cityHash64(pid), if(number % 5 = 4, '', pid), lower(hex(SHA256(pid))), number % 5 = 4, 2,
       today(), 30, number, map('IAB' || toString(number % 3), 1.0), map(), now64(3),
       100 + number
FROM (SELECT number, 'pf-' || toString(number) AS pid FROM numbers({n:UInt64}))"""


def _read(chunks) -> pa.Table:
    return pa.ipc.open_stream(b"".join(chunks)).read_all()


@pytest.fixture
def rows(ch) -> int:
    ch.command(_ROWS, parameters={"n": 40})
    return 40


@pytest.mark.parametrize("columns", [None, "impressions,ad_category_affinity"])
@pytest.mark.parametrize("slice_rows", [1 << 20, 7], ids=["one-slice", "many-slices"])
@pytest.mark.parametrize("readers", [1, 2])
def test_passed_through_stream_equals_decoded_batches(ch, clickhouse_dsn, rows, monkeypatch,
                                                      columns, slice_rows, readers):
    monkeypatch.setattr(E, "_SLICE_ROWS", slice_rows)
    plan = E.plan_export(ch, 0, E.select_columns(columns))
    assert plan.rows == rows
    more = [connect(clickhouse_dsn) for _ in range(readers - 1)]
    try:
        streamed = _read(E.arrow_ipc_stream(ch, plan, more))
        decoded = pa.Table.from_batches(list(E.iter_batches(ch, plan, more)), plan.schema)
    finally:
        for client in more:
            client.close()
    assert streamed.schema.equals(plan.schema, check_metadata=True)
    assert streamed.schema.metadata == EXPORT_SCHEMA.metadata
    assert streamed.sort_by("watermark").equals(decoded.sort_by("watermark"))
    assert streamed.column("watermark").to_pylist() != [] and streamed.num_rows == rows
    by_mark = {r["watermark"]: r for r in streamed.to_pylist()}
    assert by_mark[100 + 4]["deleted"] == 1 and by_mark[100 + 4]["profile_id"] == ""  # tombstone
    assert by_mark[100 + 7]["ad_category_affinity"] == [("IAB1", 1.0)]


def test_an_export_since_a_watermark_streams_only_later_rows(ch, rows):
    plan = E.plan_export(ch, 100 + 29, E.select_columns(None))
    table = _read(E.arrow_ipc_stream(ch, plan))
    assert sorted(table.column("watermark").to_pylist()) == list(range(130, 140))
    assert plan.rows == table.num_rows == 10


def test_an_empty_export_is_a_valid_stream(ch):
    plan = E.plan_export(ch, 0, E.select_columns(None))
    table = _read(E.arrow_ipc_stream(ch, plan))
    assert plan.rows == table.num_rows == 0 and table.schema.equals(plan.schema)


def test_batches_of_another_layout_are_cast_to_the_plan_schema(ch, rows):
    """A server whose Arrow types differ from the schema (here: the plan asks int64 where
    ClickHouse writes uint32) gets each batch decoded and cast, not passed through."""
    plan = E.plan_export(ch, 0, E.select_columns("impressions"))
    at = plan.schema.get_field_index("impressions")
    wide = dataclasses.replace(plan, schema=plan.schema.set(at, pa.field("impressions",
                                                                         pa.int64())))
    table = _read(E.arrow_ipc_stream(ch, wide))
    assert table.schema.field("impressions").type == pa.int64()
    assert sorted(table.column("impressions").to_pylist()) == list(range(rows))


def test_a_consumer_that_stops_early_leaves_the_readers_usable(ch, clickhouse_dsn, rows,
                                                               monkeypatch):
    monkeypatch.setattr(E, "_SLICE_ROWS", 5)
    plan = E.plan_export(ch, 0, E.select_columns(None))
    other = connect(clickhouse_dsn)
    try:
        stream = E.arrow_ipc_stream(ch, plan, [other])
        next(stream), next(stream)  # the schema and a first piece, then the consumer leaves
        stream.close()
        assert ch.query("SELECT 1").result_rows == other.query("SELECT 1").result_rows == [(1,)]
    finally:
        other.close()
