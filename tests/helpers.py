"""Event builders shared by tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from typing import Any

AD_BASE: dict[str, Any] = {
    "account_id": "acc-1", "profile_id": "pf-1", "session_id": "ses-1", "device": "tv",
    "country": "US", "campaign_id": "cmp-1", "creative_id": "cr-1", "ad_serving_id": "as-1",
}
CONTENT_BASE: dict[str, Any] = {
    "account_id": "acc-1", "profile_id": "pf-1", "session_id": "ses-1", "device": "tv",
    "country": "US", "content_id": "title-1",
}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ad_event(type_: str = "impression", **fields: Any) -> dict[str, Any]:
    event = {"type": type_, "event_id": str(uuid.uuid4()), "ts": now_ms(), **AD_BASE, **fields}
    if type_ == "error":
        event.setdefault("error_code", 402)
    if type_ == "progress":  # VAST requires the Tracking offset of a progress event
        event.setdefault("progress_offset", "00:00:05")
    return event


def content_event(type_: str = "content_start", **fields: Any) -> dict[str, Any]:
    event = {"type": type_, "event_id": str(uuid.uuid4()), "ts": now_ms(), **CONTENT_BASE, **fields}
    if type_ == "rating":
        event.setdefault("value", 1)
    return event


def batch(events: list[dict[str, Any]], sent_at: int | None = None) -> dict[str, Any]:
    return {"sent_at": now_ms() if sent_at is None else sent_at, "events": events}


def run_cli(data_dir: object, *args: str, timeout: float = 120,
            redis_url: str = "") -> "subprocess.CompletedProcess[str]":
    """``adtier ARGS`` in a subprocess on its own embedded data dir (``redis_url``: an
    external Valkey instead of the embedded one)."""
    env = {**os.environ, "ADTIER_DATA_DIR": str(data_dir), "ADTIER_LOG_LEVEL": "warning"}
    env.pop("ADTIER_CLICKHOUSE_URL", None)
    env.pop("ADTIER_REDIS_URL", None)
    if redis_url:
        env["ADTIER_REDIS_URL"] = redis_url
    return subprocess.run([sys.executable, "-m", "adtier", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


# Columns that later migrations added to a table after an older migration's backfill was
# written (0013: the MRC viewability counters of the campaign rollups). They default to 0.
LATER_COLUMNS = {"ad_campaign_daily": ("not_viewable_impressions", "undetermined"),
                 "ad_campaign_cells": ("not_viewable_impressions", "undetermined")}


def as_first_written(ch: Any, statement: str) -> str:
    """An old migration's ``INSERT INTO <table> SELECT ...`` with the table's columns named as
    that migration knew them, so tests can re-run it after later migrations added columns."""
    table = statement.split()[2]
    if table not in LATER_COLUMNS:
        return statement
    names = [r[0] for r in ch.query(
        "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = {t:String} "
        "ORDER BY position", parameters={"t": table}).result_rows
        if r[0] not in LATER_COLUMNS[table]]
    return statement.replace(f"INSERT INTO {table}", f"INSERT INTO {table} ({', '.join(names)})", 1)


def use_noise_secret(api: Any, secret: str) -> None:
    """Run the app under test with this noise secret (``ADTIER_PRIVACY_NOISE_SECRET``): one
    deployment of many, for tests that look at the noise across deployments."""
    import msgspec

    state = api.client.app.state.adtier
    state.settings = msgspec.structs.replace(state.settings, privacy_noise_secret=secret)
