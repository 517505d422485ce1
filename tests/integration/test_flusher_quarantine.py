"""A block ClickHouse refuses for its data: the refused rows are quarantined, the rest stored
exactly once, the plan completes. And /readyz tells the truth while a flusher is stuck."""

from __future__ import annotations

import time

import msgspec
import pytest
from litestar.testing import TestClient

from adtier import metrics
from adtier.app import create_app
from adtier.ingest.buffer import BatchRecord, IngestBuffer
from adtier.ingest.flusher import Flusher
from adtier.ingest.quarantine import insert_or_split, is_refusal
from adtier.store import connect
from tests.conftest import wait_until
from tests.helpers import ad_event, batch, content_event
from tests.integration.conftest import Api, count


def _send(api, n: int) -> set[str]:
    events = [ad_event() for _ in range(n)]
    answer = api.post_events(batch(events))
    assert answer.status_code == 200 and answer.json()["accepted"] == n
    return {e["event_id"] for e in events}


@pytest.mark.parametrize("table", ["ad_events", "ingest_batches"])
def test_a_poison_row_past_validation_is_quarantined_and_the_rest_stored_once(
        api, settings, ch, rds, table):
    sent = set()
    for _ in range(4):
        sent |= _send(api, 25)
    quarantined = metrics.QUARANTINED.labels(table)._value.get()
    client = connect(settings.clickhouse_dsn)
    flusher = Flusher(client, rds, "poisoned", max_rows=10_000, failpoint=f"poison_{table}")
    flusher.drain()  # returns: the plan completed
    kept = ch.query("SELECT reason, detail, raw FROM rejected_events").result_rows
    assert [r[0] for r in kept] == ["store_refused"]
    assert kept[0][1].startswith(f"{table}: Code: ")
    stored = {str(r[0]) for r in ch.query("SELECT event_id FROM ad_events").result_rows}
    if table == "ad_events":
        assert len(stored) == 99 and stored < sent  # one row refused, the other 99 once
        assert count(ch, "ad_events") == 99
        assert count(ch, "ingest_batches") == 4
    else:
        assert stored == sent and count(ch, "ad_events") == 100
        assert count(ch, "ingest_batches") == 3  # the poisoned provenance row is quarantined
    assert flusher.buffer.lag()[0] == 0
    assert metrics.QUARANTINED.labels(table)._value.get() == quarantined + 1
    client.close()


def test_a_redone_split_stores_nothing_twice(ch):
    """The same block split twice under the same token (a redo after a crash) stores each
    good row once."""
    rows = [msgspec.json.encode({"batch_id": f"b{i}", "key_id": "k", "source": "batch",
                                 "received_at": time.time() + i, "sent_at": None,
                                 "body_sha256": "", "events": 1, "accepted": 1,
                                 "duplicates": 0, "rejected": 0}) + b"\n" for i in range(9)]
    rows[5] = rows[5].replace(b'"sent_at":null', b'"sent_at":18446744073709551.615')
    block = b"".join(rows)

    def insert(table: str, part: bytes, token: str) -> None:
        from adtier.ingest.flusher import insert_settings

        ch.raw_insert(table, insert_block=part, fmt="JSONEachRow", settings=insert_settings(token))

    for _ in range(2):
        refused = insert_or_split(insert, "ingest_batches", block, "tok-redo")
        assert [r.row for r in refused] == [rows[5]]
    assert count(ch, "ingest_batches") == 8


def test_unavailability_is_not_a_refusal(ch):
    ch.command("DETACH TABLE content_events")
    try:
        with pytest.raises(Exception) as caught:
            ch.raw_insert("content_events", insert_block=b"{}\n", fmt="JSONEachRow")
        assert not is_refusal(caught.value)
    finally:
        ch.command("ATTACH TABLE content_events")
    with pytest.raises(Exception) as caught:
        ch.raw_insert("content_events", insert_block=b'{"ts":"not a time"}\n', fmt="JSONEachRow")
    assert is_refusal(caught.value)


def test_readyz_goes_not_ready_while_a_flusher_is_stuck_and_back_after(settings, ch, rds):
    stuck = msgspec.structs.replace(settings, flusher_enabled=True, flusher_threads=1,
                                    ready_max_flush_failures=2, flush_max_seconds=0.1,
                                    live_counters=False)
    ch.command("DETACH TABLE content_events")  # unavailable: a retry may cure it, so it retries
    try:
        with TestClient(create_app(stuck)) as client:
            api = Api(client, stuck)
            assert client.get("/readyz").status_code == 200
            assert api.post_events(batch([content_event()])).status_code == 200
            wait_until(lambda: client.get("/readyz").status_code == 503, timeout=60)
            ready = client.get("/readyz").json()
            assert ready["status"] == "not_ready"
            assert any("failed its plan" in p for p in ready["problems"])
            flusher = client.app.state.adtier.flushers[0]
            stale = flusher.last_success
            time.sleep(0.5)
            assert flusher.last_success == stale  # no round completes while it is stuck
            ch.command("ATTACH TABLE content_events")
            wait_until(lambda: client.get("/readyz").status_code == 200, timeout=60)
            assert count(ch, "content_events") == 1
            assert flusher.last_success > stale
            scraped = client.get("/metrics").text
            gauge = f'adtier_flusher_last_success_timestamp_seconds{{flusher="{flusher.consumer}"}}'
            assert float(scraped.split(gauge)[1].split()[0]) > stale
            assert "adtier_events_quarantined_total" in scraped
    finally:
        ch.command("ATTACH TABLE IF NOT EXISTS content_events")


def test_readyz_goes_not_ready_while_the_oldest_buffered_entry_is_too_old(settings, ch, rds, flush):
    tight = msgspec.structs.replace(settings, ready_max_buffer_age_s=0.5)
    with TestClient(create_app(tight)) as client:
        api = Api(client, tight)
        assert client.get("/readyz").status_code == 200
        assert api.post_events(batch([ad_event()])).status_code == 200
        time.sleep(0.8)  # the in-app flusher is off: nothing is storing it
        late = client.get("/readyz")
        assert late.status_code == 503 and "oldest buffered entry" in late.json()["problems"][0]
        flush()
        assert client.get("/readyz").status_code == 200


def test_direct_append_of_a_bad_row_is_what_the_failpoint_simulates(settings, ch, rds):
    """The same defence for a row that reached the buffer by any other way (an older server, a
    bug): written straight into the stream, it is quarantined and its neighbour stored."""
    import asyncio

    import redis.asyncio as aredis

    good = msgspec.json.encode({**content_event(), "ts": time.time(), "client_ts": time.time(),
                                "received_at": time.time(), "source": "batch",
                                "batch_id": "b-direct", "key_id": "k"}) + b"\n"
    bad = good.replace(b'"source"', b'"position_ms":"soon","source"').replace(
        good[good.index(b'"event_id":"') + 12:][:36], b"00000000-0000-0000-0000-000000000001")

    async def append() -> None:
        client = aredis.Redis.from_url(settings.redis_url)
        buffer = IngestBuffer(client, 0, 24, 3600)
        record = BatchRecord("b-direct", "k", "batch", int(time.time() * 1000), None, "", 2, 2, 0)
        ids = b"".join(bytes.fromhex(("%032x" % (i + 1))) for i in range(2))
        assert (await buffer.append(record, ids, b"", good + bad, b"")).status == "ok"
        await client.aclose()

    asyncio.run(append())
    flusher = Flusher(connect(settings.clickhouse_dsn), rds, "direct")
    flusher.drain()
    assert count(ch, "content_events") == 1
    assert ch.query("SELECT reason, batch_id FROM rejected_events").result_rows == [
        ("store_refused", "b-direct")]
