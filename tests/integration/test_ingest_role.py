"""``adtier serve --role ingest``: events into the Valkey buffer, no ClickHouse, several workers;
a separate ``adtier flush`` stores what it buffered."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
import redis

from adtier.embedded_valkey import EmbeddedValkey
from adtier.ingest.partitions import layout_for
from tests.helpers import ad_event, batch, content_event, run_cli
from tests.integration.server_process import ServerProcess

# Each answered by an `all` server; an ingest-role server has no such route.
QUERY_ROUTES = ("/v1/keys", "/v1/segments", "/v1/campaigns", "/v1/catalog/campaigns",
                "/v1/features/profiles/p-1", "/v1/ingest/batches/b-1", "/v1/audit",
                "/v1/forecast/reach", "/v1/privacy/budget", "/console")


def _stored(data_dir, redis_url: str) -> int:
    """Rows in the data dir's ClickHouse, counted by another process (chdb opens one path per
    process; the test process may hold the session's)."""
    code = ("import sys; from adtier.store import connect; c = connect(sys.argv[1]); "
            "print(c.query('SELECT (SELECT count() FROM ad_events) + "
            "(SELECT count() FROM content_events)').result_rows[0][0])")
    out = subprocess.run([sys.executable, "-c", code, f"chdb://{(data_dir / 'clickhouse').resolve()}"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


@pytest.mark.slow
def test_an_ingest_role_buffers_events_that_a_separate_flush_stores(tmp_path):
    valkey = EmbeddedValkey(tmp_path / "valkey")
    url = valkey.start()
    server = None
    try:
        data = tmp_path / "data"
        # the key is written to ClickHouse and indexed in the shared Valkey, where the ingest
        # server authenticates it
        created = run_cli(data, "keys", "create", "ingest", redis_url=url)
        assert created.returncode == 0, created.stderr
        key = {"Authorization": f"Bearer {json.loads(created.stdout)['key']}"}
        server = ServerProcess(data, "--role", "ingest", "--workers", "2", redis_url=url).start()

        ready = httpx.get(f"{server.url}/readyz", timeout=10).json()
        assert ready["status"] == "ready" and ready["clickhouse"] == "not used (ingest role)"
        assert ready["flushers"] == {}
        events = [ad_event(), ad_event("start"), content_event()]
        answer = httpx.post(f"{server.url}/v1/events", json=batch(events), headers=key, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["accepted"] == 3
        pixel = httpx.get(f"{server.url}/v1/px", params={"k": key["Authorization"][7:]},
                          timeout=10)
        assert pixel.status_code == 200 and pixel.headers["content-type"] == "image/gif"
        for path in QUERY_ROUTES:
            assert httpx.get(f"{server.url}{path}", headers=key, timeout=10).status_code == 404, path

        stream = layout_for(1, False).partitions[0].stream
        buffered = redis.Redis.from_url(url)
        assert buffered.xlen(stream) >= 1  # accepted into Valkey, nothing stored yet
        assert _stored(data, url) == 0

        # While the ingest server runs: it holds neither ClickHouse nor the data dir, so a
        # flusher process can open both.
        flushed = run_cli(data, "flush", "--once", redis_url=url)
        assert flushed.returncode == 0, flushed.stderr
        assert _stored(data, url) == 3
        assert buffered.xlen(stream) == 0  # acknowledged and trimmed
        buffered.close()
    finally:
        if server is not None:
            server.stop()
        valkey.stop()


@pytest.mark.slow
def test_several_ingest_workers_need_an_external_valkey(tmp_path):
    out = run_cli(tmp_path / "data", "serve", "--role", "ingest", "--workers", "2")
    assert out.returncode == 2 and "embedded Valkey" in out.stderr
