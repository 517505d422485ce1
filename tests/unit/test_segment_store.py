"""Bulk encodings of the segment store: Arrow member blocks, RESP SADD commands, bucket SQL."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from adtier.segments import aggregate as F
from adtier.segments import store, valkey_bulk
from adtier.segments.rules import parse_rule, predicates


def _parse_resp(raw: bytes) -> list[bytes]:
    assert raw.startswith(b"*")
    head, rest = raw[1:].split(b"\r\n", 1)
    out = []
    for _ in range(int(head)):
        assert rest.startswith(b"$")
        size, rest = rest[1:].split(b"\r\n", 1)
        out.append(rest[:int(size)])
        assert rest[int(size):int(size) + 2] == b"\r\n"
        rest = rest[int(size) + 2:]
    assert rest == b""
    return out


@pytest.mark.parametrize("ids", [
    ["pf-1"],
    ["pf-1", "pf-22", "ü-é", "x" * 64],
    np.array(["a", "bb", "ccc"], dtype=object),
    np.array(["a", "bb", "ccc"]),
])
def test_resp_sadd_is_the_command(ids) -> None:
    arrow = store.as_arrow_ids(ids)
    for start in range(len(arrow)):  # sliced arrays (non-zero offsets) too
        part = arrow.slice(start)
        parts = _parse_resp(b"".join(valkey_bulk.resp_sadd(b"adtier:seg:m:s:1", part)))
        assert parts == [b"SADD", b"adtier:seg:m:s:1"] + [s.encode() for s in part.to_pylist()]


def test_members_table_columns() -> None:
    table = store.members_table("seg_a", 7, store.as_arrow_ids(["p1", "p2"]))
    assert table.column("segment_id").to_pylist() == ["seg_a", "seg_a"]
    assert table.column("version").type == pa.uint64()
    assert table.column("profile_id").to_pylist() == ["p1", "p2"]


def test_plan_buckets_cover_every_window() -> None:
    rule = parse_rule({"all": [
        {"feature": "sessions", "window_days": 7, "op": ">=", "value": 1},
        {"feature": "ad_impressions", "op": ">=", "value": 1},
        {"feature": "days_since_active", "op": "<=", "value": 3}]})
    plan = F.plan_for(predicates(rule))
    assert plan.bounds == [7, 30, 90] and plan.lookback_days == 90
    sql = F._bucket_sql(plan)
    assert sql == "toInt32(multiIf(d < 7, 0, d < 30, 7, 30))"
    assert F._bucket_sql(F.Plan(labels={}, lookback_days=30)) == "d"  # day-level (decay)


def test_key_map_routes_campaigns_and_titles_to_labels() -> None:
    labels = ["", "cat:IAB2", "cmp:c9", "cmp:gone"]
    ids, keys = F._key_map(labels, "cmp:", {"c1": ["IAB2"], "c9": ["IAB2"], "c3": ["IAB8"]},
                           "cat:")
    assert dict(zip(ids, keys)) == {"c1": [1], "c9": [2, 1], "gone": [3]}
