"""The README's tour, command for command, against a real ``adtier serve`` on a fresh data dir.

The tour's shell blocks are taken from README.md as they are; only the server's address is
pointed at this test's port. The server starts as the README starts it (no admin key in the
environment, data under ``./adtier-data``), so the tour reads the generated key from the file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.server_process import free_port

README = Path(__file__).resolve().parents[2] / "README.md"
ADDRESS = "A=http://127.0.0.1:8000"


def tour_script() -> str:
    text = README.read_text()
    section = text.split("## A 10-minute tour", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert blocks, "the README's tour has no ```bash blocks"
    return "\n".join(blocks)


def test_the_tour_has_the_server_address_once():
    assert tour_script().count(ADDRESS) == 1


@pytest.fixture
def readme_server(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("ADTIER_ADMIN_KEY", "ADTIER_DATA_DIR", "ADTIER_CLICKHOUSE_URL",
                        "ADTIER_REDIS_URL")}
    env.update(ADTIER_LOG_LEVEL="warning", ADTIER_FLUSH_MAX_SECONDS="0.2")
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "adtier", "serve", "--port", str(port)],
                                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            raise TimeoutError(log_path.read_text())
        yield port, tmp_path, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(10)


@pytest.mark.slow
def test_the_readme_tour_runs_verbatim(readme_server):
    port, cwd, log_path = readme_server
    script = tour_script().replace(ADDRESS, f"A=http://127.0.0.1:{port}")
    done = subprocess.run(["bash", "-eu", "-c", script], cwd=cwd, capture_output=True,
                          text=True, timeout=240)
    out = done.stdout
    assert done.returncode == 0, f"{out}\n{done.stderr}\n{log_path.read_text()[-3000:]}"
    assert done.stderr == "", done.stderr
    lines = out.splitlines()
    assert lines[:3] == ['{"upserted":1}'] * 3  # advertiser, campaign, creative
    status = json.loads(next(line for line in lines if '"batch_id"' in line))
    assert status["state"] == "stored" and status["stored"] == status["accepted"] == 2500
    report = json.loads(next(line for line in lines if '"report_id"' in line))
    assert {row["device"] for row in report["rows"]} == {"tv", "mobile"}
    assert all(row["reach"] > 0 for row in report["rows"])
    size = int(next(line for line in lines if line.strip().isdigit()))
    # the 500 mobile profiles completed the ad; an advertiser's size carries noise of scale 10
    assert abs(size - 500) <= 150
    lookup = json.loads(next(x for x in lines if x.startswith('{"profile_id":"pf-1","segments"')))
    assert len(lookup["segments"]) == 1
    assert re.search(r"^x-adtier-rows: (\d+)", out, flags=re.M | re.I).group(1) == "1000"
    assert (cwd / "features.parquet").stat().st_size > 0
    features = json.loads(lines[-1])
    assert features["profile_id"] == "pf-1" and features["batch"]["impressions"] >= 1
    # the first start showed the generated key once, boxed, after the server was ready
    key = (cwd / "adtier-data" / "admin_key").read_text().strip()
    log = log_path.read_text()
    assert log.count(key) == 1
    box = log[log.index("adtier is ready"):]
    assert "admin key (shown once" in box and f"| {key}" in box
