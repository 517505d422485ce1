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
