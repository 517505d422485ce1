"""Direct mode: exactly the generated rows land in ClickHouse; the holdout rule in SQL is the
simulator's; the CLI's direct mode and its refusal to share a busy data dir."""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import uuid

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.helpers import run_cli

from adtier.simulate.direct import load_catalog_direct, run_direct
from adtier.simulate.ids import HOLDOUT_SQL
from adtier.simulate.truth import TruthRecorder
from adtier.simulate.world import build_world
from tests.integration.conftest import count


def test_direct_mode_inserts_exactly_the_generated_counts(ch):
    world = build_world(31, 1_200, 4, dt.date(2026, 11, 2))
    loaded = load_catalog_direct(ch, world)
    assert loaded["profiles"] == 1_200 and loaded["opt_outs"] == int(world.opted_out.sum())
    recorder = TruthRecorder(world)
    seen = []
    tag = uuid.uuid4().hex[:8]  # fresh deduplication tokens even on a reused server
    result = run_direct(world, ch, recorder, progress=seen.append, tag=tag)
    truth = recorder.finish()
    assert len(seen) == result.blocks == 4 and result.already_stored == 0
    assert result.ad_rows == truth.n_ad_events and result.content_rows == truth.n_content_events
    assert count(ch, "ad_events") == truth.n_ad_events
    assert count(ch, "content_events") == truth.n_content_events
    stored = dict(ch.query(
        "SELECT type, count() FROM (SELECT type FROM ad_events UNION ALL "
        "SELECT type FROM content_events) GROUP BY type").result_rows)
    assert stored == truth.events_by_type
    assert count(ch, "ingest_batches", "source = 'simulate'") == 4
    assert count(ch, "ad_events", "profile_id IN (SELECT profile_id FROM profiles FINAL "
                 "WHERE kind = 'kids')") == 0
    impressions = dict(ch.query("SELECT campaign_id, count() FROM ad_events "
                                "WHERE type = 'impression' GROUP BY campaign_id").result_rows)
    truth_imps = dict(zip(truth.campaigns["campaign_id"].to_pylist(),
                          truth.campaigns["impressions"].to_pylist()))
    assert impressions == {c: n for c, n in truth_imps.items() if n}

    # the same run again: recognised, and ClickHouse drops every block as a duplicate
    again = run_direct(world, ch, tag=tag)
    assert again.already_stored == 4
    assert count(ch, "ad_events") == truth.n_ad_events


def test_holdout_rule_in_clickhouse_is_the_simulators(ch):
    world = build_world(32, 3_000, 1, dt.date(2026, 11, 2))
    load_catalog_direct(ch, world)
    for c, campaign_id in enumerate(world.catalog.campaign_ids):
        percent = float(world.catalog.cmp_holdout[c])
        if not percent:
            continue
        rows = ch.query(f"SELECT profile_id FROM profiles FINAL WHERE {HOLDOUT_SQL}",
                        parameters={"campaign_id": campaign_id,
                                    "holdout_percent": percent}).result_rows
        in_sql = sorted(int(r[0][2:]) for r in rows)
        assert in_sql == np.nonzero(world.holdout[:, c])[0].tolist(), campaign_id


@pytest.mark.slow
def test_cli_simulate_direct_and_busy_data_dir(tmp_path):
    data = tmp_path / "data"
    truth = tmp_path / "truth"
    args = ("simulate", "--direct", "--profiles", "300", "--days", "2", "--seed", "4",
            "--start", "2026-11-01", "--truth", str(truth), "--no-progress")
    out = run_cli(data, *args)
    assert out.returncode == 0, out.stderr
    assert "simulated 300 profiles" in out.stdout and "events/s" in out.stdout
    assert "inserted:" in out.stdout and "impression" in out.stdout
    for name in ("profiles", "exposures", "campaigns", "effects"):
        assert pq.read_table(truth / f"{name}.parquet").num_rows > 0
    assert pq.read_table(truth / "profiles.parquet").num_rows == 300
    assert (truth / "summary.json").exists()

    # a server (here: this test) holding the data dir -> a clear refusal
    fd = os.open(data / "adtier.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        busy = run_cli(data, *args)
    finally:
        os.close(fd)
    assert busy.returncode == 2
    assert "in use" in busy.stderr and "--url" in busy.stderr

    missing = run_cli(data, "simulate", "--profiles", "10")
    assert missing.returncode == 2 and "--direct" in missing.stderr
