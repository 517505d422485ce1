"""Fixtures for the browser tests: one simulated world served over HTTP for the whole module,
and Debian's Chromium driven by Playwright (never a downloaded browser)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.browser.world import ServedWorld, serve_app, settings_for
from tests.conftest import TABLES
from tests.integration.conftest import load_world

CHROMIUM = Path(os.environ.get("ADTIER_CHROMIUM", "/usr/bin/chromium"))
SHOTS = Path(__file__).resolve().parents[2] / "screenshots"
_SEGMENTS = (
    {"name": "sci-fi fans", "kind": "rule", "rule": {"all": [
        {"feature": "genre_share", "key": "sci_fi", "window_days": 30, "op": ">=",
         "value": 0.2}]}},
    {"name": "heavy viewers", "kind": "rule", "rule": {"all": [
        {"feature": "watch_minutes", "window_days": 30, "op": ">=", "value": 120}]}},
)


def _need_chromium() -> None:
    """In CI a missing browser is a failure (the run must not look green without these tests);
    on a developer's machine the tests skip and say why."""
    if CHROMIUM.exists():
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"no Chromium at {CHROMIUM} in CI: .ci/run installs it "
                    "(apt-get install -y chromium chromium-driver) before the tests")
    pytest.skip(reason=f"no Chromium at {CHROMIUM}, so the console's browser tests cannot run "
                "here: apt-get install -y chromium chromium-driver (in CI they fail instead)")


@pytest.fixture(scope="module")
def world(tmp_path_factory, ch_session, valkey, clickhouse_dsn) -> Iterator[ServedWorld]:
    _need_chromium()
    for table in TABLES:
        ch_session.command(f"TRUNCATE TABLE IF EXISTS {table}")
    rds = redis.Redis.from_url(valkey.url)
    rds.flushall()
    sim = load_world(ch_session, seed=21, profiles=1_500, days=6, rds=rds)
    rds.close()
    settings = settings_for(tmp_path_factory.mktemp("console") / "data", clickhouse_dsn,
                            valkey.url)
    with serve_app(settings) as url, httpx.Client(base_url=url, timeout=120) as client:
        admin = {"Authorization": f"Bearer {settings.admin_key}"}
        # the house advertiser: its campaigns promote titles with a holdout (content effects)
        advertiser_id = "adv-house"
        mine = [c for c in sim.catalog.campaigns if c["advertiser_id"] == advertiser_id]
        own = _busiest_campaign(client, admin, mine)
        foreign = next(c["campaign_id"] for c in sim.catalog.campaigns
                       if c["advertiser_id"] != advertiser_id)
        key = client.post("/v1/keys", headers=admin, json={
            "role": "advertiser", "advertiser_id": advertiser_id, "name": "browser"}).json()
        segment_ids = _built_segments(client, admin)
        yield ServedWorld(url, settings.admin_key, key["key"], advertiser_id, own, foreign,
                          segment_ids)


def _busiest_campaign(client: httpx.Client, admin: dict, campaigns: list[dict]) -> str:
    best, most = "", -1
    for campaign in campaigns:
        cid = campaign["campaign_id"]
        totals = client.get(f"/v1/campaigns/{cid}/report?by=country", headers=admin).json()
        impressions = (totals.get("totals") or {}).get("impressions") or 0
        if impressions > most:
            best, most = cid, impressions
    return best


def _built_segments(client: httpx.Client, admin: dict) -> list[str]:
    ids = []
    for body in _SEGMENTS:
        created = client.post("/v1/segments", headers=admin, json=body)
        assert created.status_code == 201, created.text
        ids.append(created.json()["segment_id"])
        assert client.post(f"/v1/segments/{ids[-1]}/build", headers=admin).status_code == 202
    deadline = time.monotonic() + 120
    for segment_id in ids:
        while client.get(f"/v1/segments/{segment_id}", headers=admin).json()["status"] != "ready":
            assert time.monotonic() < deadline, f"segment {segment_id} not built"
            time.sleep(0.2)
    return ids
