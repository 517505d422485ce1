"""The CLI against its own data dir: migrate, keys, flush --once (embedded stores)."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_cli


@pytest.mark.slow
def test_cli_migrate_keys_and_flush(tmp_path):
    data = tmp_path / "data"
    migrate = run_cli(data, "migrate")
    assert migrate.returncode == 0, migrate.stderr
    assert "applied 0001_events" in migrate.stdout
    again = run_cli(data, "migrate")
    assert "schema up to date (0 applied)" in again.stdout

    created = run_cli(data, "keys", "create", "advertiser", "--advertiser-id", "adv-7", "--name", "acme")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert key["role"] == "advertiser" and key["advertiser_id"] == "adv-7" and key["key"]
    listed = [json.loads(line) for line in run_cli(data, "keys", "list").stdout.splitlines()]
    assert [k["key_id"] for k in listed] == [key["key_id"]]
    assert run_cli(data, "keys", "revoke", key["key_id"]).returncode == 0
    assert run_cli(data, "keys", "revoke", key["key_id"]).returncode == 1
    bad = run_cli(data, "keys", "create", "advertiser")
    assert bad.returncode == 2 and "advertiser_id" in bad.stderr

    flushed = run_cli(data, "flush", "--once")
    assert flushed.returncode == 0, flushed.stderr


@pytest.mark.slow
def test_serve_refuses_several_workers_on_embedded_clickhouse(tmp_path):
    out = run_cli(tmp_path / "data", "serve", "--workers", "2")
    assert out.returncode == 2 and "one process" in out.stderr
