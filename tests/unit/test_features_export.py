"""The export's Arrow IPC message reader (``export._messages``: pyarrow's, fed full reads) and
layout check, against streams pyarrow writes: the pass-through must hand on every message as
it was framed, whatever the reads return."""

from __future__ import annotations

import datetime as dt
import io

import pyarrow as pa
import pytest

from adtier.features import export as E
from adtier.features.schema import EXPORT_SCHEMA


class _Trickle(io.RawIOBase):
    """A network-like stream: every read answers at most ``step`` bytes."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data, self._pos, self._step = data, 0, step

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self._step if n < 0 else min(n, self._step)
        chunk = self._data[self._pos:self._pos + n]
        self._pos += len(chunk)
        return chunk


def _stream(batches: list[pa.RecordBatch], schema: pa.Schema, legacy: bool = False) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(use_legacy_format=legacy)
    with pa.ipc.new_stream(sink, schema, options=options) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def _batch(n: int, start: int = 0) -> pa.RecordBatch:
    shares = pa.array([[("IAB1", 0.5), ("IAB2", 0.5)] if i % 2 else [] for i in range(n)],
                      type=pa.map_(pa.string(), pa.float32()))
    return pa.RecordBatch.from_arrays(
        [pa.array([f"pf-{start + i}" for i in range(n)], pa.string()), pa.array(range(n), pa.uint32()),
         shares, pa.array(range(start, start + n), pa.uint64())],
        names=["profile_id", "impressions", "ad_category_affinity", "watermark"])


@pytest.mark.parametrize("step", [1 << 30, 7], ids=["whole", "short-reads"])
@pytest.mark.parametrize("legacy", [False, True], ids=["continuation", "pre-1.0"])
def test_messages_are_cut_where_pyarrow_cuts_them(step: int, legacy: bool) -> None:
    batches = [_batch(3), _batch(0, 3), _batch(1000, 3)]
    data = _stream(batches, batches[0].schema, legacy)
    messages = list(E._messages(_Trickle(data, step)))
    assert [m.kind for m in messages] == ["schema"] + ["record batch"] * 3
    assert [m.rows for m in messages[1:]] == [3, 0, 1000]
    # what is passed on reads back as the stream it came from
    again = b"".join(m.data() for m in messages) + E._EOS
    assert pa.ipc.open_stream(again).read_all().equals(
        pa.Table.from_batches(batches, batches[0].schema))
    schema = pa.ipc.read_schema(messages[0].message)
    assert schema.equals(batches[0].schema)
    for ours, batch in zip(messages[1:], batches, strict=True):
        got = pa.ipc.read_record_batch(pa.py_buffer(ours.data()), schema)
        assert got.equals(batch)


def test_messages_stop_at_the_end_of_a_stream_without_end_marker() -> None:
    data = _stream([_batch(2)], _batch(2).schema)[:-8]
    assert [m.kind for m in E._messages(io.BytesIO(data))] == ["schema", "record batch"]


def test_a_stream_cut_inside_a_message_is_an_error() -> None:
    data = _stream([_batch(50)], _batch(50).schema)
    with pytest.raises((OSError, ValueError), match="Expected to (be able to )?read"):
        list(E._messages(io.BytesIO(data[:-100])))


def test_passed_through_batches_read_back_under_the_documented_schema() -> None:
    """ClickHouse declares its columns not null; under EXPORT_SCHEMA (nullable) the same
    record batch messages are read as the same values."""
    not_null = pa.schema([f.with_nullable(False) for f in EXPORT_SCHEMA])
    assert E._layout(not_null) == E._layout(EXPORT_SCHEMA)
    values = {f.name: 0 for f in EXPORT_SCHEMA}
    values.update(profile_id="pf-1", profile_sha256="ab", ad_category_affinity=[("IAB1", 1.0)],
                  genre_affinity=[], as_of=dt.date(2026, 1, 2),
                  computed_at=dt.datetime(2026, 1, 2, tzinfo=dt.UTC))
    batch = pa.RecordBatch.from_pylist([values], schema=not_null)
    messages = list(E._messages(io.BytesIO(_stream([batch], not_null))))
    piece = pa.py_buffer(messages[1].data())
    got = pa.ipc.read_record_batch(piece, EXPORT_SCHEMA)
    assert got.to_pylist() == batch.to_pylist()


@pytest.mark.parametrize("other", [
    pa.field("as_of", pa.uint16()),                          # an older server's Date
    pa.field("as_of", pa.date32()).with_type(pa.date64()),
    pa.field("ad_category_affinity",
             pa.map_(pa.dictionary(pa.int32(), pa.string()), pa.float32())),
    pa.field("profile_id", pa.large_string()),
])
def test_a_different_layout_is_noticed(other: pa.Field) -> None:
    changed = EXPORT_SCHEMA.set(EXPORT_SCHEMA.get_field_index(other.name), other)
    assert E._layout(changed) != E._layout(EXPORT_SCHEMA)
