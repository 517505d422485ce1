"""The CLI against its own data dir: migrate, keys, flush --once (embedded stores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _adtier(data_dir, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ADTIER_DATA_DIR": str(data_dir), "ADTIER_LOG_LEVEL": "warning"}
    env.pop("ADTIER_CLICKHOUSE_URL", None)
    env.pop("ADTIER_REDIS_URL", None)
    return subprocess.run([sys.executable, "-m", "adtier", *args], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow
def test_cli_migrate_keys_and_flush(tmp_path):
    data = tmp_path / "data"
    migrate = _adtier(data, "migrate")
    assert migrate.returncode == 0, migrate.stderr
    assert "applied 0001_events" in migrate.stdout
    again = _adtier(data, "migrate")
    assert "schema up to date (0 applied)" in again.stdout

    created = _adtier(data, "keys", "create", "advertiser", "--advertiser-id", "adv-7", "--name", "acme")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert key["role"] == "advertiser" and key["advertiser_id"] == "adv-7" and key["key"]
    listed = [json.loads(line) for line in _adtier(data, "keys", "list").stdout.splitlines()]
    assert [k["key_id"] for k in listed] == [key["key_id"]]
    assert _adtier(data, "keys", "revoke", key["key_id"]).returncode == 0
    assert _adtier(data, "keys", "revoke", key["key_id"]).returncode == 1
    bad = _adtier(data, "keys", "create", "advertiser")
    assert bad.returncode == 2 and "advertiser_id" in bad.stderr

    flushed = _adtier(data, "flush", "--once")
    assert flushed.returncode == 0, flushed.stderr


@pytest.mark.slow
def test_serve_refuses_several_workers_on_embedded_clickhouse(tmp_path):
    out = _adtier(tmp_path / "data", "serve", "--workers", "2")
    assert out.returncode == 2 and "one process" in out.stderr
