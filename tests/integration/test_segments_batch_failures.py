"""Batched builds (``build_many``) when a store fails mid-build, on real chDB and Valkey.

Failures are induced in the real stores, never mocked: the ``segments`` table is renamed away
while a batch commits (ClickHouse writes fail), the live hash is made a string (Valkey's HSET
fails with WRONGTYPE), and a failed build's leftover rows are left under a version number
(``next_version`` then skips it).
"""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from adtier.segments import build as B
from adtier.segments import build_lock
from adtier.segments import members as M
from adtier.segments import store
from adtier.segments.restore import restore_redis
from adtier.segments.rules import parse_rule, to_json
from tests.helpers import ad_event, batch

RULE_2 = {"feature": "ad_impressions", "op": ">=", "value": 2}
RULE_3 = {"feature": "ad_impressions", "op": ">=", "value": 3}


def _create(ch, sid: str, kind: str, definition: dict) -> None:
    store.write_state(ch, store.SegmentRow(
        segment_id=sid, name=sid, kind=kind, owner="", definition=json.dumps(definition),
        created_at=dt.datetime.now(dt.timezone.utc)))


def _static(ch, sid: str, ids: list[str]) -> None:
    _create(ch, sid, "static", {"profile_count": len(ids)})
    store.insert_members(ch, sid, 0, ids)


def _rules(api, flush, ch) -> None:
    """pf-i sees i % 4 impressions; two rule segments (built together: one shared pass)."""
    events = [ad_event("impression", profile_id=f"pf-{i}", ad_serving_id=f"a-{i}-{k}")
              for i in range(20) for k in range(i % 4)]
    assert api.post_events(batch(events)).status_code == 200
    flush()
    _create(ch, "seg_r2", "rule", {"rule": to_json(parse_rule(RULE_2))})
    _create(ch, "seg_r3", "rule", {"rule": to_json(parse_rule(RULE_3))})


def _locks(rds, sids) -> list[str]:
    return [sid for sid in sids if rds.exists(store.lock_key(sid))]


def _versions(ch, sid: str) -> set[int]:
    return {int(v) for (v,) in ch.query(
        "SELECT DISTINCT version FROM segment_members WHERE segment_id = {id:String}",
        parameters={"id": sid}).result_rows}


def _wait_for_deletes(ch) -> None:
    """The cleanup's DELETE is not waited for by the build: wait for it here."""
    deadline = time.monotonic() + 60
    while ch.query("SELECT count() FROM system.mutations WHERE table = 'segment_members' "
                   "AND NOT is_done").result_rows[0][0]:
        assert time.monotonic() < deadline, "the cleanup DELETE did not finish"
        time.sleep(0.1)


def test_on_done_raising_releases_every_lock(api, flush, ch, rds) -> None:
    _rules(api, flush, ch)
    _static(ch, "seg_s", ["pf-1", "pf-2"])
    sids = ["seg_r2", "seg_r3", "seg_s"]

    def boom(row: store.SegmentRow) -> None:
        raise RuntimeError("on_done failed")

    with pytest.raises(RuntimeError, match="on_done failed"):
        B.build_many(ch, rds, sids, on_done=boom)
    assert _locks(rds, sids) == []
    # nothing left locked: the next build runs
    assert all(r.status == "ready" for r in B.build_many(ch, rds, sids))


def test_clickhouse_failing_at_commit_releases_every_lock(ch, rds) -> None:
    sids = ["seg_a", "seg_b", "seg_c"]
    for sid in sids:
        _static(ch, sid, ["pf-1", "pf-2"])
    builds = []
    for sid in sids:
        b = B._begin(ch, rds, sid, None)
        b.version = store.next_version(ch, b.row)
        B._stage(ch, rds, b, 0, None, (M.static_members(ch, sid), None, None), "", None)
        assert b.error is None
        builds.append(b)
    assert _locks(rds, sids) == sids
    done: dict[str, store.SegmentRow] = {}
    released: set[str] = set()
    ch.command("RENAME TABLE segments TO segments_away")  # every ClickHouse write fails
    try:
        B._commit_many(ch, rds, builds, "test", "", [], done, None, released)
    finally:
        ch.command("RENAME TABLE segments_away TO segments")
    assert _locks(rds, sids) == []
    assert released == set(sids)
    # answered as failed, keeping the previous (none) version
    assert {sid: (row.status, row.version) for sid, row in done.items()} == {
        sid: ("failed", 0) for sid in sids}


def test_failed_valkey_swap_keeps_the_committed_version(api, flush, ch, rds) -> None:
    _rules(api, flush, ch)
    _static(ch, "seg_s", ["pf-1", "pf-2", "pf-3"])
    sids = ["seg_r2", "seg_r3", "seg_s"]  # two batched (_commit_many), one alone (_finish)
    first = {r.segment_id: r for r in B.build_many(ch, rds, sids)}
    assert {sid: (r.status, r.version) for sid, r in first.items()} == {
        sid: ("ready", 1) for sid in sids}
    rds.delete(store.LIVE)
    rds.set(store.LIVE, "not a hash")  # the swap's HSET fails (WRONGTYPE)
    second = {r.segment_id: r for r in B.build_many(ch, rds, sids)}
    for sid in sids:
        row = store.get_segment(ch, sid)
        assert row is not None
        assert (second[sid].status, second[sid].version) == ("ready", 2), second[sid]
        assert (row.status, row.version, row.size) == ("ready", 2, first[sid].size), row
        # the version the row names is there, and so is the previous one
        assert set(store.member_ids(ch, sid, 2)) == set(store.member_ids(ch, sid, 1))
        assert len(store.member_ids(ch, sid, 2)) == row.size
    assert _locks(rds, sids) == []
    # Valkey is repaired from ClickHouse, the record
    rds.delete(store.LIVE)
    restored = restore_redis(ch, rds)
    assert restored == {sid: first[sid].size for sid in sids}
    assert {k.decode(): v.decode().split("|")[0]
            for k, v in rds.hgetall(store.LIVE).items()} == {sid: "2" for sid in sids}


def test_cleanup_keeps_the_previous_version_when_numbers_skip(api, flush, ch, rds) -> None:
    _rules(api, flush, ch)
    _static(ch, "seg_s", ["pf-1", "pf-2"])
    sids = ["seg_r2", "seg_r3", "seg_s"]
    assert all(r.version == 1 for r in B.build_many(ch, rds, sids))
    # a failed build whose discard failed left version 2 behind: the next build is version 3
    for sid in sids:
        store.insert_members(ch, sid, 2, ["pf-1"])
    assert all(r.version == 3 for r in B.build_many(ch, rds, sids))
    _wait_for_deletes(ch)
    for sid in sids:
        assert {1, 3} <= _versions(ch, sid), sid  # the previously served version is kept
    assert all(r.version == 4 for r in B.build_many(ch, rds, sids))
    _wait_for_deletes(ch)
    for sid in sids:
        assert _versions(ch, sid) & {1, 2} == set(), sid  # older than the previous: gone
        assert {3, 4} <= _versions(ch, sid), sid


def test_sets_filled_during_the_shared_pass_end_as_versions_or_are_unlinked(api, flush, ch,
                                                                            rds) -> None:
    """The shared pass fills the new Valkey sets under private keys as it goes: a built
    segment's set is its version's (no time to live left), and a segment another build holds
    leaves no key behind."""
    _rules(api, flush, ch)
    token = build_lock.acquire(rds, "seg_r3")  # another build holds seg_r3
    assert token is not None
    with pytest.raises(build_lock.BuildBusy):
        B.build_many(ch, rds, ["seg_r2", "seg_r3"])
    build_lock.release(rds, "seg_r3", token)
    assert list(rds.scan_iter("adtier:{seg}:fill:*")) == []
    built = B.build_many(ch, rds, ["seg_r2", "seg_r3"])
    assert [r.status for r in built] == ["ready", "ready"]
    assert list(rds.scan_iter("adtier:{seg}:fill:*")) == []
    for row in built:
        key = store.member_key(row.segment_id, row.version)
        assert rds.ttl(key) == -1  # a set that does not expire
        assert {m.decode() for m in rds.smembers(key)} == set(
            store.member_ids(ch, row.segment_id, row.version))
        assert rds.scard(key) == row.size == (10 if row.segment_id == "seg_r2" else 5)
