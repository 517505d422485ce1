"""A simulated world served over real HTTP for the browser tests.

The app runs in this process (uvicorn in a thread) on the test session's own chDB and Valkey,
so the world is loaded straight into ClickHouse first (``load_world``) and the browser then
talks to a real socket: the same server, routes and stores as ``adtier serve``.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from adtier.app import create_app
from adtier.settings import Settings, load_settings
from tests.integration.server_process import free_port

__all__ = ["ServedWorld", "serve_app"]


@dataclass
class ServedWorld:
    url: str
    admin_key: str
    advertiser_key: str
    advertiser_id: str
    own_campaign: str  # the advertiser's campaign with the most impressions
    foreign_campaign: str  # another advertiser's campaign
    segment_ids: list[str]

    @property
    def promoted_campaign(self) -> str:
        return self.own_campaign  # the house advertiser's campaigns all promote a title

    def headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def get(self, path: str, key: str | None = None) -> dict:
        answer = httpx.get(self.url + path, headers=self.headers(key or self.advertiser_key),
                           timeout=60)
        answer.raise_for_status()
        return answer.json()


def settings_for(data_dir: Path, clickhouse_dsn: str, redis_url: str) -> Settings:
    return load_settings({}, data_dir=data_dir, clickhouse_url=clickhouse_dsn,
                         redis_url=redis_url, admin_key="adt_browser_admin_" + uuid.uuid4().hex,
                         flusher_enabled=False, log_level="warning",
                         features_compute_interval_s=0.0,
                         # fixed, as in tests/conftest.py: without it each run draws a new
                         # secret, so which rows fold (and whether a remainder is released)
                         # changes from run to run and a failure cannot be replayed
                         privacy_noise_secret="adt-browser-noise-secret")


class serve_app:
    """``with serve_app(settings) as url:`` the app on a free loopback port until the block ends."""

    def __init__(self, settings: Settings):
        self.port = free_port()
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port,
                                log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError("the app did not become ready")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
