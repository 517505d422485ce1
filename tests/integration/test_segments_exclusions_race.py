"""Exclusions recorded while a build runs never go live with the version it builds (docs/privacy.md).

A build computes its members against the exclusions of that moment, then writes them and
swaps. An erasure, opt-out or kids' profile recorded in between would be in the new version:
the erasure's own clean-up removes the profile from the versions served then, not from one
being built. The build re-checks right before its commit; here the exclusions are recorded
at exactly that moment (``before_commit``), through the admin API, with real stores.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from adtier.segments import build as B
from adtier.segments import store
from adtier.segments.rules import parse_rule, to_json
from tests.helpers import ad_event, batch

RULE = {"feature": "ad_impressions", "op": ">=", "value": 1}
ERASED, OPTED_OUT, KIDS = "pf-3", "pf-5", "pf-7"
LATE = {ERASED, OPTED_OUT, KIDS}


def _create(ch, sid: str, kind: str, definition: dict) -> None:
    store.write_state(ch, store.SegmentRow(
        segment_id=sid, name=sid, kind=kind, owner="", definition=json.dumps(definition),
        created_at=dt.datetime.now(dt.timezone.utc)))


def _world(api, flush, ch) -> None:
    """pf-0..pf-19 with one impression each: every one is in the rule segments and in the
    static list."""
    events = [ad_event("impression", profile_id=f"pf-{i}", ad_serving_id=f"a-{i}")
              for i in range(20)]
    assert api.post_events(batch(events)).status_code == 200
    flush()
    for sid in ("seg_a", "seg_b"):  # two rule segments: build_many's shared, batched path
        _create(ch, sid, "rule", {"rule": to_json(parse_rule(RULE))})
    _create(ch, "seg_static", "static", {"profile_count": 20})
    store.insert_members(ch, "seg_static", 0, [f"pf-{i}" for i in range(20)])


def _staged(ch, sid: str) -> set[str]:
    """Members of the newest version written (staged, not yet served)."""
    return {r[0] for r in ch.query(
        "SELECT profile_id FROM segment_members WHERE segment_id = {s:String} AND version = "
        "(SELECT max(version) FROM segment_members WHERE segment_id = {s:String})",
        parameters={"s": sid}).result_rows}


def _exclude_now(api, ch, sids: list[str]) -> None:
    """The hook: the staged versions hold the three profiles; now erase one, opt one out and
    declare one a kids' profile, as an admin would while the build runs."""
    for sid in sids:
        assert LATE <= _staged(ch, sid), sid  # computed before the exclusions: they are in
    assert api.client.delete(f"/v1/privacy/profiles/{ERASED}",
                             headers=api.admin).status_code == 202
    assert api.client.post("/v1/privacy/opt-out", json={"profile_ids": [OPTED_OUT]},
                           headers=api.admin).status_code == 200
    assert api.client.put("/v1/profiles", json={"items": [
        {"profile_id": KIDS, "account_id": "acc-7", "kind": "kids"}]},
        headers=api.admin).status_code == 200


def _served(ch, rds, sid: str) -> tuple[store.SegmentRow, set[str], set[str]]:
    """(row, ClickHouse members of the served version, the live Valkey set)."""
    row = store.get_segment(ch, sid)
    assert row is not None and row.status == "ready", row
    live = rds.hget(store.LIVE, sid).decode().split("|")[0]
    assert int(live) == row.version
    in_valkey = {m.decode() for m in rds.smembers(store.member_key(sid, row.version))}
    return row, set(store.member_ids(ch, sid, row.version)), in_valkey


@pytest.mark.parametrize("batched", [True, False], ids=["build_many", "build_segment"])
def test_exclusions_recorded_before_the_swap_are_not_members(api, flush, ch, rds,
                                                             batched: bool) -> None:
    _world(api, flush, ch)
    sids = ["seg_a", "seg_b", "seg_static"]
    calls: list[int] = []

    def once(staged: list[str]):
        def hook() -> None:
            calls.append(1)
            if len(calls) == 1:
                _exclude_now(api, ch, staged)
        return hook

    if batched:
        # the rule segments commit together (first call), then the static one on its own
        B.build_many(ch, rds, sids, by="test", before_commit=once(sids[:2]))
        assert len(calls) == 2
    else:
        B.build_segment(ch, rds, "seg_a", by="test", before_commit=once(["seg_a"]))
        for sid in sids[1:]:  # computed after the exclusions: left out as always
            B.build_segment(ch, rds, sid, by="test")

    everyone = {f"pf-{i}" for i in range(20)}
    for sid in sids:
        row, in_ch, in_valkey = _served(ch, rds, sid)
        assert in_ch == in_valkey == everyone - LATE, sid
        assert row.size == len(everyone - LATE)
    for pid in LATE:
        looked_up = api.client.get(f"/v1/profiles/{pid}/segments", headers=api.admin)
        assert looked_up.status_code == 200
        assert looked_up.json()["segments"] == [], pid
    # the audit log counts the members served
    rows = ch.query("SELECT row_count FROM audit_log WHERE endpoint = {e:String} "
                    "AND status = 200", parameters={"e": B.AUDIT_ENDPOINT}).result_rows
    assert sorted(r[0] for r in rows) == [len(everyone - LATE)] * len(sids)


def test_exclusions_recorded_long_before_are_not_rechecked_away(api, flush, ch, rds) -> None:
    """The re-check only drops what is excluded; members that are not stay (and an old
    exclusion was already applied when the members were computed)."""
    _world(api, flush, ch)
    assert api.client.post("/v1/privacy/opt-out", json={"profile_ids": ["pf-1"]},
                           headers=api.admin).status_code == 200
    B.build_many(ch, rds, ["seg_a", "seg_b"], by="test")
    for sid in ("seg_a", "seg_b"):
        _, in_ch, in_valkey = _served(ch, rds, sid)
        assert in_ch == in_valkey == {f"pf-{i}" for i in range(20)} - {"pf-1"}
