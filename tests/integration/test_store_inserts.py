"""Flush blocks handed to chDB from memory (store.inserts): the same rows as clickhouse-connect's
raw_insert (through its temporary file) stores, the same deduplication by token, the same
errors (so a refused row is still found and quarantined), and any other client keeps its own
raw_insert."""

from __future__ import annotations

import time
import uuid

import msgspec
import pytest

from adtier.ingest.flusher import insert_settings
from adtier.ingest.normalise import TimePolicy, prepare_events
from adtier.ingest.quarantine import insert_or_split, is_refusal
from adtier.store import inserts
from adtier.store.inserts import raw_inserter, settings_clause
from tests.helpers import ad_event
from tests.integration.conftest import count

_event = msgspec.json.Encoder()


def _ad_rows(n: int) -> bytes:
    """``n`` ad rows as the request path writes them (JSONEachRow), a few of every shape."""
    types = ["impression", "start", "complete", "error", "progress", "click"]
    raws = [_event.encode(ad_event(types[i % len(types)], pod_id=f"pod-{i % 3}" if i % 2 else "",
                                   ad_duration_ms=15_000 + i))
            for i in range(n)]
    from adtier.events import DECODERS

    now = time.time_ns() // 1_000_000
    prepared = prepare_events(raws, DECODERS.json_event, TimePolicy(60_000, 3_600_000, 10**12),
                              now, now, "batch", uuid.uuid4().hex, "key-1", 1 << 20)
    assert len(prepared.ad_rows) == n, prepared.rejections
    return b"".join(prepared.ad_rows)


def _all_rows(ch, table: str) -> list[tuple]:
    return ch.query(f"SELECT * FROM {table} ORDER BY event_id").result_rows


def test_a_block_from_memory_stores_exactly_what_raw_insert_stores(ch, monkeypatch):
    block = _ad_rows(300)
    ch.command("CREATE TABLE via_file AS ad_events")
    ch.command("CREATE TABLE via_memory AS ad_events")
    ch.raw_insert("via_file", insert_block=block, fmt="JSONEachRow", settings=insert_settings("t1"))
    # slices far smaller than a row: the engine reads one stream, wherever the cuts fall
    monkeypatch.setattr(inserts, "CHUNK_BYTES", 97)
    insert = raw_inserter(ch)
    assert insert.__class__.__name__ == "_ChdbInsert"
    insert("via_memory", bytearray(block), "JSONEachRow", insert_settings("t1"))
    stored = _all_rows(ch, "via_memory")
    assert len(stored) == 300
    assert stored == _all_rows(ch, "via_file")


def test_a_repeated_token_is_stored_once_and_views_see_it_once(ch):
    block = _ad_rows(50)
    insert = raw_inserter(ch)
    before = ch.query("SELECT sum(impressions) FROM ad_campaign_cells WHERE dim = 'day'"
                      ).result_rows[0][0]
    for _ in range(2):  # a redo after a crash: same block, same token
        insert("ad_events", block, "JSONEachRow", insert_settings("redo-token"))
    assert count(ch, "ad_events") == 50
    after = ch.query("SELECT sum(impressions) FROM ad_campaign_cells WHERE dim = 'day'"
                     ).result_rows[0][0]
    assert after - before == 9  # impressions among the 50 rows (every 6th, from 0)
    insert("ad_events", block, "JSONEachRow", insert_settings("another-token"))
    assert count(ch, "ad_events") == 100


def test_a_refused_row_is_a_refusal_and_is_found_by_splitting(ch):
    rows = _ad_rows(8).splitlines(keepends=True)
    rows[3] = rows[3][:-2] + b',"received_at":"not a time"}\n'
    insert = raw_inserter(ch)
    with pytest.raises(Exception) as caught:
        insert("ad_events", b"".join(rows), "JSONEachRow", insert_settings("bad"))
    assert is_refusal(caught.value)
    assert str(caught.value).startswith("Code: ")

    def by_token(table: str, part: bytes, token: str) -> None:
        insert(table, part, "JSONEachRow", insert_settings(token))

    refused = insert_or_split(by_token, "ad_events", b"".join(rows), "bad")
    assert [r.row for r in refused] == [rows[3]]
    assert count(ch, "ad_events") == 7


def test_a_missing_table_is_not_a_refusal(ch):
    with pytest.raises(Exception) as caught:
        raw_inserter(ch)("no_such_table", b"{}\n", "JSONEachRow", {})
    assert not is_refusal(caught.value)


class _Wrapped:
    """A real client behind a wrapper that forwards every other attribute (``uri`` and
    ``path`` included), as the tests' gated client does: not a chDB client itself."""

    def __init__(self, real):
        self.real = real
        self.inserts = 0

    def __getattr__(self, name):
        return getattr(self.real, name)

    def raw_insert(self, *args, **kwargs):
        self.inserts += 1
        return self.real.raw_insert(*args, **kwargs)


def test_any_other_client_keeps_its_raw_insert(ch):
    wrapped = _Wrapped(ch)
    raw_inserter(wrapped)("ad_events", _ad_rows(5), "JSONEachRow", insert_settings("w"))
    assert wrapped.inserts == 1 and count(ch, "ad_events") == 5


def test_settings_clause_quotes_values_and_refuses_odd_names():
    assert settings_clause({}) == ""
    assert settings_clause({"a_b": 1, "tok": "x'y\\z"}) == " SETTINGS a_b = 1, tok = 'x\\'y\\\\z'"
    with pytest.raises(ValueError):
        settings_clause({"x = 1; DROP": 1})


def test_a_path_spelled_differently_reaches_the_same_engine(ch, settings):
    """chdb compares engine paths literally: the inserter's handle must name the client's
    engine path as the client does (resolved), however the DSN spelled it."""
    dsn = settings.clickhouse_dsn
    if not dsn.startswith("chdb:///"):
        pytest.skip("needs chDB on a directory (chdb:///path): this store has no engine path")
    from adtier.store import connect

    other = connect(dsn.rstrip("/") + "/")  # the same directory, with a trailing slash
    try:
        raw_inserter(other)("ad_events", _ad_rows(3), "JSONEachRow", insert_settings("slash"))
    finally:
        other.close()
    assert count(ch, "ad_events") == 3


@pytest.mark.parametrize("wrap", [False, True], ids=["chdb", "other client"])
def test_a_block_is_stored_as_sent_not_folded_at_insert(ch, wrap):
    """The flusher's targets are re-aggregated by their readers (or read with FINAL), so the
    engine's insert-time fold (optimize_on_insert) is CPU for nothing: raw inserts skip it,
    and two rows of one key stay two rows until a merge."""
    table = f"folded_{int(wrap)}"
    ch.command(f"CREATE TABLE {table} (k UInt32, v UInt32) ENGINE = ReplacingMergeTree ORDER BY k")
    ch.command(f"SYSTEM STOP MERGES {table}")
    client = _Wrapped(ch) if wrap else ch
    raw_inserter(client)(table, b'{"k":1,"v":1}\n{"k":1,"v":2}\n', "JSONEachRow",
                         insert_settings(uuid.uuid4().hex))
    assert count(ch, table) == 2
    assert ch.query(f"SELECT k, v FROM {table} FINAL").result_rows == [(1, 2)]
