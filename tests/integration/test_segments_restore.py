"""Valkey look-up sets rebuilt from ClickHouse, and every build in the audit log (docs/privacy.md).

Real stores only: the session's Valkey is emptied with FLUSHALL (what a replaced or wiped
Valkey looks like), then the look-up state comes back from ``segment_members`` at start-up
(the live hash is missing) or on demand (``adtier segments restore``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import msgspec
from litestar.testing import TestClient

from adtier.app import create_app
from adtier.segments import build as B
from adtier.segments import build_lock
from adtier.segments import store
from adtier.segments.restore import restore_redis
from adtier.segments.rules import parse_rule, to_json
from tests.helpers import ad_event, batch, run_cli

RULE = {"feature": "ad_impressions", "op": ">=", "value": 2}


def _create(ch, sid: str, kind: str, definition: dict, owner: str = "") -> None:
    store.write_state(ch, store.SegmentRow(
        segment_id=sid, name=sid, kind=kind, owner=owner, definition=json.dumps(definition),
        created_at=dt.datetime.now(dt.timezone.utc)))


def _world(api, flush, ch) -> None:
    """pf-0..pf-29: pf-i sees i % 4 impressions; a static list of 5 (one unknown id)."""
    events = [ad_event("impression", profile_id=f"pf-{i}", ad_serving_id=f"a-{i}-{k}")
              for i in range(30) for k in range(i % 4)]
    assert api.post_events(batch(events)).status_code == 200
    flush()
    _create(ch, "seg_rule", "rule", {"rule": to_json(parse_rule(RULE))}, owner="adv-1")
    _create(ch, "seg_static", "static", {"profile_count": 5})
    store.insert_members(ch, "seg_static", 0, ["pf-1", "pf-2", "pf-3", "pf-4", "pf-none"])
    _create(ch, "seg_never", "rule", {"rule": to_json(parse_rule(RULE))})  # never built


def _live_sets(rds) -> dict[str, set[str]]:
    out = {}
    for sid, value in rds.hgetall(store.LIVE).items():
        version = int(value.decode().split("|")[0])
        out[sid.decode()] = {m.decode() for m in
                             rds.smembers(store.member_key(sid.decode(), version))}
    return out


def _ch_sets(ch) -> dict[str, set[str]]:
    out = {}
    for row in store.list_segments(ch):
        if row.version:
            out[row.segment_id] = set(store.member_ids(ch, row.segment_id, row.version))
    return out


def test_flushed_valkey_is_restored_at_start_up_and_on_demand(api, flush, ch, rds, settings):
    _world(api, flush, ch)
    built = B.build_many(ch, rds, ["seg_rule", "seg_static"], by="test")
    assert [r.status for r in built] == ["ready", "ready"]
    before = _live_sets(rds)
    assert before == _ch_sets(ch)
    assert len(before["seg_rule"]) == 14 and before["seg_static"] == {"pf-1", "pf-2", "pf-3",
                                                                     "pf-4", "pf-none"}
    live_before = rds.hgetall(store.LIVE)

    # 1. start-up: the live hash is gone, so the app reloads every served version
    rds.flushall()
    assert not rds.exists(store.LIVE)
    second = msgspec.structs.replace(settings, data_dir=settings.data_dir.parent / "restart")
    with TestClient(create_app(second)) as client:
        assert rds.hgetall(store.LIVE) == live_before
        assert _live_sets(rds) == before
        looked_up = client.get("/v1/profiles/pf-3/segments", headers=api.admin).json()
        assert sorted(looked_up["segments"]) == ["seg_rule", "seg_static"]

    # 2. start-up with the hash present does nothing (a healthy Valkey is not reloaded)
    rds.delete(store.member_key("seg_static", 1))
    assert restore_redis(ch, rds, only_if_missing=True) == {}
    assert not rds.exists(store.member_key("seg_static", 1))

    # 3. on demand: every served set reloaded, sizes reported; unbuilt segments untouched
    restored = restore_redis(ch, rds)
    assert restored == {"seg_rule": 14, "seg_static": 5}
    assert _live_sets(rds) == before
    assert not rds.hexists(store.LIVE, "seg_never")

    # 4. a rebuild after a restore swaps as usual (the restored set is the "old" one)
    rebuilt = B.build_many(ch, rds, ["seg_rule"], by="test")[0]
    assert rebuilt.version == 2
    assert _live_sets(rds)["seg_rule"] == before["seg_rule"]
    assert not rds.exists(store.member_key("seg_rule", 1))


def test_restore_skips_a_segment_being_built(ch, rds):
    _create(ch, "seg_static", "static", {"profile_count": 2})
    store.insert_members(ch, "seg_static", 0, ["pf-1", "pf-2"])
    assert B.build_many(ch, rds, ["seg_static"])[0].status == "ready"
    rds.flushall()
    token = build_lock.acquire(rds, "seg_static")
    assert token
    try:
        assert restore_redis(ch, rds) == {}  # the build in flight writes its own set
    finally:
        build_lock.release(rds, "seg_static", token)
    assert restore_redis(ch, rds) == {"seg_static": 2}


def test_restore_racing_an_erasure_does_not_serve_the_erased_profile(ch, rds):
    _create(ch, "seg_static", "static", {"profile_count": 3})
    store.insert_members(ch, "seg_static", 0, ["pf-1", "pf-2", "pf-3"])
    assert B.build_many(ch, rds, ["seg_static"])[0].status == "ready"
    rds.flushall()
    # the erasure of pf-2 has recorded itself but not yet deleted its members (nor reached
    # the served set) when the restore reads them
    ch.command("INSERT INTO erasures (profile_hash, profile_sha256, erased_at) "
               "SELECT cityHash64({p:String}), lower(hex(SHA256({p:String}))), now64(3)",
               parameters={"p": "pf-2"})
    assert restore_redis(ch, rds) == {"seg_static": 3}
    assert _live_sets(rds)["seg_static"] == {"pf-1", "pf-3"}


def test_cli_restore_on_an_empty_data_dir(tmp_path):
    done = run_cli(tmp_path / "data", "segments", "restore")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"restored": {}}


def _audit_rows(ch) -> list[dict]:
    rows = ch.query("SELECT key_id, role, advertiser_id, endpoint, method, parameters, status, "
                    "row_count, answer_sha256 FROM audit_log WHERE endpoint = 'segments.build' "
                    "ORDER BY ts, audit_id").named_results()
    return [{**r, "parameters": json.loads(r["parameters"])} for r in rows]


def test_every_build_is_audited(api, flush, ch, rds):
    _world(api, flush, ch)
    _create(ch, "seg_like", "lookalike", {"seed_segment_id": "seg_never", "size_percent": 5})
    rows = {r.segment_id: r for r in B.build_many(ch, rds, ["seg_rule", "seg_like"],
                                                  by="key_abc", role="admin")}
    assert rows["seg_rule"].status == "ready" and rows["seg_like"].status == "failed"
    audited = {r["parameters"]["segment_id"]: r for r in _audit_rows(ch)}
    assert set(audited) == {"seg_rule", "seg_like"}

    ok = audited["seg_rule"]
    assert (ok["key_id"], ok["role"], ok["advertiser_id"], ok["method"], ok["status"]) == \
        ("key_abc", "admin", "adv-1", "BUILD", 200)
    assert ok["row_count"] == rows["seg_rule"].size == 14
    assert ok["parameters"]["version"] == 1 and ok["parameters"]["kind"] == "rule"
    # the hash of the answer: the member ids as written (rule members in profile-hash order)
    ids = [r[0] for r in ch.query(
        "SELECT profile_id FROM segment_members WHERE segment_id = 'seg_rule' AND version = 1 "
        "ORDER BY cityHash64(profile_id)").result_rows]
    assert ok["answer_sha256"] == hashlib.sha256("\n".join(ids).encode()).hexdigest()
    assert "pf-" not in json.dumps(ok["parameters"])  # never a profile id

    bad = audited["seg_like"]
    assert (bad["status"], bad["row_count"]) == (500, 0)
    assert "build it first" in bad["parameters"]["error"]

    # an API build is audited with the calling key
    answer = api.client.post("/v1/segments/seg_static/build", headers=api.admin)
    assert answer.status_code == 202, answer.text
    from tests.conftest import wait_until

    wait_until(lambda: any(r["parameters"]["segment_id"] == "seg_static"
                           for r in _audit_rows(ch)))
    api_row = [r for r in _audit_rows(ch) if r["parameters"]["segment_id"] == "seg_static"][0]
    assert api_row["role"] == "admin" and api_row["key_id"] not in ("", "unknown", "cli")
    assert api_row["row_count"] == 5
