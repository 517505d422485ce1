"""``adtier export features`` in a subprocess on its own embedded data dir."""

from __future__ import annotations

import json

import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from adtier.features.schema import EXPORT_SCHEMA
from tests.helpers import run_cli


def test_export_features_writes_parquet_and_arrow(tmp_path):
    out = tmp_path / "features.parquet"
    done = run_cli(tmp_path / "data", "export", "features", "--out", str(out), "--compute")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["rows"] == 0 and summary["watermark"] == 0
    table = pq.read_table(out)
    assert table.schema.remove_metadata().equals(EXPORT_SCHEMA.remove_metadata())
    assert "export" in done.stderr  # the progress bar

    arrow = tmp_path / "features.arrow"
    done = run_cli(tmp_path / "data", "export", "features", "--out", str(arrow),
                   "--columns", "impressions")
    assert done.returncode == 0, done.stderr
    with ipc.open_stream(str(arrow)) as reader:
        assert reader.schema.names == ["profile_id", "profile_sha256", "deleted", "impressions",
                                       "watermark"]
    bad = run_cli(tmp_path / "data", "export", "features", "--out", str(out), "--columns", "x")
    assert bad.returncode == 2 and "unknown columns" in bad.stderr


def test_cli_export_and_compute_are_audited(tmp_path):
    import hashlib
    import subprocess
    import sys

    out = tmp_path / "features.parquet"
    done = run_cli(tmp_path / "data", "export", "features", "--out", str(out), "--compute")
    assert done.returncode == 0, done.stderr
    # the CLI's embedded chdb is free again: read its audit log from another process
    read = subprocess.run([sys.executable, "-c", (
        "import json, sys\n"
        "from adtier.store import connect\n"
        "c = connect('chdb://' + sys.argv[1])\n"
        "rows = c.query('SELECT key_id, role, endpoint, row_count, answer_sha256 FROM audit_log"
        " ORDER BY ts').result_rows\n"
        "print(json.dumps(rows))\n"), str(tmp_path / "data" / "clickhouse")],
        capture_output=True, text=True, timeout=120)
    assert read.returncode == 0, read.stderr
    rows = json.loads(read.stdout.strip().splitlines()[-1])
    assert [r[2] for r in rows] == ["features_compute", "features_export_cli"]
    assert all(r[0].startswith("cli") and r[1] == "cli" for r in rows)
    assert rows[1][3] == 0 and rows[1][4] == hashlib.sha256(out.read_bytes()).hexdigest()
