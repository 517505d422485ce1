"""Locust, headless, against a real ``adtier serve``: zero failures, and every event the
Player had acknowledged is stored (counted by the Player, by the server, and by the flushers)."""

from __future__ import annotations

import importlib.util
import json

import pytest
from loadtest.run import (
    locust_env,
    read_stats,
    run_locust,
    seed_catalog,
    server_figures,
    summary_table,
)

from tests.conftest import wait_until
from tests.integration.server_process import ServerProcess

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("locust") is None,
                       reason="locust is not installed (uv sync --group bench)"),
]


def test_locust_run_has_no_failures_and_stores_every_event(tmp_path, monkeypatch):
    for var in ("ADTIER_INGEST_KEY", "ADTIER_ADVERTISER_KEY", "ADTIER_RECS_KEY",
                "ADTIER_ADVERTISER_ID", "ADTIER_CAMPAIGN_IDS", "ADTIER_PROFILE_IDS"):
        monkeypatch.delenv(var, raising=False)
    server = ServerProcess(tmp_path / "data").start()
    try:
        seed_catalog(server.url, server.admin_key)
        env = locust_env(server.url, server.admin_key)
        env.update(ADTIER_LOCUST_SENT_FILE=str(tmp_path / "sent.json"),
                   ADTIER_LOCUST_ALLOW_404="1",  # a fresh server has no features yet
                   ADTIER_LOCUST_WEIGHTS="player=2,advertiser=1,recs=1")  # 4 users: every class
        done = run_locust(server.url, env, tmp_path / "locust", users=4, spawn_rate=4,
                          run_time="8s")
        assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:],
                                      (tmp_path / "locust_failures.csv").read_text()
                                      if (tmp_path / "locust_failures.csv").exists() else "")
        rows = read_stats(tmp_path / "locust")
        total = next(r for r in rows if r["Name"] == "Aggregated")
        names = {r["Name"] for r in rows}
        assert {"/v1/events", "/v1/px", "/v1/features/export"} <= names, names
        assert names & {"/v1/campaigns/{id}/report", "/v1/campaigns/{id}/frequency",
                        "/v1/forecast/reach", "/v1/segments"}, names
        assert int(total["Failure Count"]) == 0
        assert int(total["Request Count"]) > 0
        sent = json.loads((tmp_path / "sent.json").read_text())
        assert sent["batches"] > 0 and sent["pixels"] > 0, sent
        assert sent["accepted"] == sent["events"] and sent["duplicates"] == 0, sent
        assert sent["retry_mismatch"] == 0, sent

        expected = sent["events"] + sent["pixels"]

        def stored() -> bool:
            f = server_figures(server.url)
            return f["stored"] >= expected and f["lag_events"] == 0

        wait_until(stored, timeout=30)
        figures = server_figures(server.url)
        print(summary_table(rows, figures, sent))
        # every acknowledged event once: no more accepted than sent (retries were answered from
        # the idempotency record), and all of it flushed into ClickHouse
        assert figures["accepted"] == expected, (figures, sent)
        assert figures["stored"] == expected, (figures, sent)
    finally:
        server.stop()
