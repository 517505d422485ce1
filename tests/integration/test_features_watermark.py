"""The export never skips a row stamped before its bound but committed after it read:
a deterministic interleaving (a writer holds a stamp in flight), on the real stores."""

from __future__ import annotations

import time

import pytest

from adtier.features import batch as features_batch
from adtier.features.export import iter_batches, plan_export, select_columns
from adtier.features.watermark import (
    INFLIGHT_KEY,
    LEASE_NS,
    RedisStamps,
    stamped,
    stamps_for,
)
from tests.integration.test_features_http import ad_play, seed, send

_LATE_ROW = """
INSERT INTO profile_features (profile_hash, profile_id, profile_sha256, deleted, schema_version,
                              as_of, window_days, computed_at, watermark)
SELECT cityHash64({p:String}), {p:String}, lower(hex(SHA256({p:String}))), 0, 2, today(), 30,
       now64(3), {w:UInt64}"""


def exported(ch, plan) -> list[str]:
    return sorted(p for b in iter_batches(ch, plan) for p in b.column("profile_id").to_pylist())


@pytest.mark.parametrize("shared", [True, False], ids=["valkey-registry", "process-registry"])
def test_a_row_committed_after_the_export_read_reaches_the_next_export(api, flush, ch, rds,
                                                                       shared):
    r = rds if shared else None
    columns = select_columns(None)
    seed(api)
    send(api, ad_play("pf-a", "a1") + ad_play("pf-b", "b1"))
    flush()
    with stamped(stamps_for(r)) as late:  # writer 1 stamped its row, not inserted yet
        result = features_batch.compute(ch, redis_client=r)  # writer 2: later stamps, committed
        assert result.written == 2 and result.watermark > late
        first = plan_export(ch, 0, columns, r)  # the export reads while writer 1 is in flight
        assert first.watermark < late  # held below the in-flight stamp...
        assert first.rows == 0 and exported(ch, first) == []  # ...so writer 2's rows wait too
        ch.command(_LATE_ROW, parameters={"p": "pf-late", "w": late})  # writer 1 commits now
    second = plan_export(ch, first.watermark, columns, r)
    assert second.watermark == result.watermark
    assert exported(ch, second) == ["pf-a", "pf-b", "pf-late"]
    assert plan_export(ch, second.watermark, columns, r).rows == 0


def test_a_dead_writers_stamp_stops_holding_exports_back(rds):
    stamps = RedisStamps(rds)
    stale = time.time_ns() - LEASE_NS - 1
    rds.zadd(INFLIGHT_KEY, {str(stale): stale})  # a writer that died long ago
    assert stamps.floor() is None and rds.zcard(INFLIGHT_KEY) == 0
    first = stamps.issue()
    second = stamps.issue()
    assert second > first and stamps.floor() == first
    stamps.release(first)
    assert stamps.floor() == second
    stamps.release(second)
    assert stamps.floor() is None
