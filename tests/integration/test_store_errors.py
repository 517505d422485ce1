"""A store failure answers 503 with Retry-After (a retry is safe) on every route, the same way:
ClickHouse and Redis errors are answered by exception handlers registered once on the app
(``adtier.errors``), logged with the answer's request id; no route has a try/except of its own."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis.asyncio as aredis

from adtier.features.mirror import READY_KEY
from adtier.features.scheduler import REBUILD_KEY
from tests.helpers import ad_event, batch
from tests.integration.test_features_http import recs  # noqa: F401 - the fixture


@contextmanager
def detached(ch, table: str) -> Iterator[None]:
    """The table gone for a moment, as on a ClickHouse that cannot serve it."""
    ch.command(f"DETACH TABLE {table}")
    try:
        yield
    finally:
        ch.command(f"ATTACH TABLE {table}")


def unavailable(answer) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "5"
    assert answer.json()["error"] == "store_unavailable"
    assert answer.headers["x-request-id"]


def test_a_features_lookup_answers_503_when_clickhouse_fails(api, ch, rds, recs):  # noqa: F811
    # The mirror not built, so the look-up asks ClickHouse. The app's feature scheduler builds
    # it at start-up and rebuilds it within seconds when it goes: wait for the first build to
    # end, then hold the rebuild lock (as another worker would) so it stays unbuilt.
    deadline = time.monotonic() + 60
    while not rds.exists(READY_KEY) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rds.set(REBUILD_KEY, "a-test", nx=True, ex=60)
    try:
        rds.delete(READY_KEY)
        with detached(ch, "privacy_optouts"):
            answer = api.client.get("/v1/features/profiles/pf-1", headers=recs)
    finally:
        rds.delete(REBUILD_KEY)
    unavailable(answer)


def test_a_measure_report_answers_503_when_clickhouse_fails(api, ch):
    with detached(ch, "campaigns"):
        answer = api.client.get("/v1/campaigns/cmp-1/report", headers=api.admin)
    unavailable(answer)


def test_a_batch_status_answers_503_when_clickhouse_fails(api, ch):
    sent = api.post_events(batch([ad_event()]))
    assert sent.status_code == 200, sent.text
    with detached(ch, "ad_events"):
        answer = api.client.get(f"/v1/ingest/batches/{sent.json()['batch_id']}",
                                headers=api.ingest)
    unavailable(answer)


def test_a_features_lookup_answers_503_when_redis_fails(api, recs, monkeypatch):  # noqa: F811
    state = api.client.app.state.adtier
    recs_ok = api.client.get("/v1/features/profiles/pf-1", headers=recs)  # key now cached
    assert recs_ok.status_code == 404, recs_ok.text
    dead = aredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    monkeypatch.setattr(state, "redis", dead)
    unavailable(api.client.get("/v1/features/profiles/pf-1", headers=recs))


def test_a_keys_listing_answers_503_when_clickhouse_fails(api, ch):
    with detached(ch, "api_keys"):
        answer = api.client.get("/v1/keys", headers=api.admin)
    unavailable(answer)


def test_a_store_error_is_logged_with_the_request_id_it_answers(api, ch, capsys):
    from adtier.logs import configure_logging

    configure_logging("warning")  # log lines to this test's captured stderr
    with detached(ch, "campaigns"):
        answer = api.client.get("/v1/campaigns/cmp-1/report", headers=api.admin)
    unavailable(answer)
    logged = capsys.readouterr().err
    line = next(line for line in logged.splitlines() if "store_error" in line)
    assert answer.headers["x-request-id"] in line and "campaigns" in line


def test_the_console_campaigns_answer_503_when_clickhouse_fails(api, ch):
    with detached(ch, "campaigns"):
        answer = api.client.get("/v1/campaigns", headers=api.admin)
    unavailable(answer)


def test_the_pipeline_view_answers_503_when_redis_fails(api, monkeypatch):
    """The buffer's lag and stream status come from the buffer, on the app's Redis client."""
    state = api.client.app.state.adtier
    dead = aredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    monkeypatch.setattr(state.ingest.buffer, "_client", dead)
    unavailable(api.client.get("/v1/ops/pipeline", headers=api.admin))
