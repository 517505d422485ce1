"""``adtier serve --demo`` end to end, on embedded defaults, with a tiny world."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.integration.server_process import free_port


@pytest.mark.slow
def test_serve_demo_replays_a_week_and_prints_where_to_look(tmp_path):
    port = free_port()
    env = {**os.environ, "ADTIER_DATA_DIR": str(tmp_path / "data"), "ADTIER_LOG_LEVEL": "warning",
           "ADTIER_DEMO_PROFILES": "60", "ADTIER_FLUSH_MAX_SECONDS": "0.2"}
    for name in ("ADTIER_CLICKHOUSE_URL", "ADTIER_REDIS_URL", "ADTIER_ADMIN_KEY"):
        env.pop(name, None)
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "adtier", "serve", "--demo", "--port",
                                 str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        text = ""
        while time.monotonic() < deadline:
            text = log_path.read_text(errors="replace")
            if "adtier demo ready" in text and text.rstrip().endswith("=" * 78):
                break
            if "adtier demo: stopped" in text or proc.poll() is not None:
                pytest.fail(text[-3000:])
            time.sleep(0.3)
        else:
            pytest.fail("no demo summary:\n" + text[-3000:])
        summary = text[text.index("adtier demo ready"):]
        assert f"http://127.0.0.1:{port}/docs" in summary
        assert f"http://127.0.0.1:{port}/console" in summary
        assert "deliberate re-sends" in summary and "all stored in ClickHouse" in summary
        for what in ("admin key:", "ingest key:", "advertiser key:", "recs key:"):
            assert what in summary
        assert "/report?" in summary and "/v1/segments" in summary and "/v1/features/export" in summary
        # the printed batch-status command works as printed
        line = next(x for x in summary.splitlines() if "/v1/ingest/batches/" in x)
        url, key = re.search(r"curl -s (\S+) -H 'Authorization: Bearer (\S+)'", line).groups()
        answer = httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert answer.status_code == 200 and answer.json()["state"] == "stored"
        assert (tmp_path / "data" / "demo-truth" / "effects.parquet").exists()
        # every printed command works as printed: no placeholders, every answer a 2xx
        assert "<" not in summary and "\u2039" not in summary
        commands = [x.strip() for x in summary.splitlines() if x.startswith("  curl ")]
        assert len(commands) >= 7
        for command in commands:
            done = subprocess.run(["bash", "-c", command.replace("curl -s", "curl -sS --fail", 1)],
                                  cwd=tmp_path, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, f"{command}\n{done.stderr}"
        assert (tmp_path / "features.parquet").stat().st_size > 0
        segment = next(x for x in commands if "/v1/segments/seg_" in x)
        assert '"status":"ready"' in subprocess.run(["bash", "-c", segment], capture_output=True,
                                                    text=True, timeout=60).stdout
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
