"""The ClickHouse-server path (clickhouse-connect over HTTP).

Every integration test already runs against ``ADTIER_CLICKHOUSE_URL`` when it is set (see the
``clickhouse_dsn`` fixture); these checks are specific to a server and say why they skip."""

from __future__ import annotations

import os
import uuid

import pytest

from adtier.store import connect
from adtier.store.migrate import apply_migrations

SERVER = os.environ.get("ADTIER_CLICKHOUSE_URL", "")
needs_server = pytest.mark.skipif(
    not SERVER.startswith("http"),
    reason="ADTIER_CLICKHOUSE_URL is not set to a ClickHouse server (http://host:8123): the "
    "server path is not exercised here; chdb ran the same contract tests",
)


@needs_server
def test_migrations_and_dedup_token_on_a_server():
    client = connect(SERVER)
    apply_migrations(client)
    assert apply_migrations(client) == []  # idempotent
    batch_id = "srv-" + uuid.uuid4().hex
    row = (
        '{"event_id":"%s","type":"impression","ts":1764285855.123,"client_ts":1764285855.123,'
        '"received_at":1764285855.2,"account_id":"a","profile_id":"p","device":"tv",'
        '"country":"US","campaign_id":"c","creative_id":"cr","ad_serving_id":"as",'
        '"source":"batch","batch_id":"%s","key_id":"k"}\n' % (uuid.uuid4(), batch_id)
    ).encode()
    for _ in range(2):
        client.raw_insert("ad_events", insert_block=row, fmt="JSONEachRow",
                          settings={"insert_deduplication_token": batch_id})
    got = client.query("SELECT count() FROM ad_events WHERE batch_id = {b:String}",
                       parameters={"b": batch_id}).result_rows
    assert got == [(1,)]
