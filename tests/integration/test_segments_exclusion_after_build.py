"""An opt-out, a kids' profile or an erasure recorded AFTER a build leaves the served segments
at once (docs/privacy.md: kids' and opted-out profiles are never members), not at the next rebuild:
the look-up (JSON and OpenRTB), the overlap, the recorded size, the served version's ClickHouse
rows and its Valkey set all stop counting them. Through the admin API, on real stores."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from clickhouse_connect.driver.exceptions import DatabaseError

from adtier.segments import store
from tests.integration.test_segments_http import build, create, put

ADULTS = [f"pf-{i}" for i in range(1, 9)]
OPTED_OUT, KID = "pf-2", "pf-3"
GONE = {OPTED_OUT, KID}


def _lookup(api, profile_id: str) -> tuple[list[str], list[dict]]:
    """(segment ids of the JSON answer, the OpenRTB answer)."""
    got = api.client.get(f"/v1/profiles/{profile_id}/segments", headers=api.admin)
    rtb = api.client.get(f"/v1/profiles/{profile_id}/segments?format=openrtb",
                         headers=api.admin)
    assert got.status_code == 200 and rtb.status_code == 200, (got.text, rtb.text)
    return got.json()["segments"], rtb.json()


def _overlap(api, a: str, b: str) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """(size per segment as the overlap shows it, intersection per pair)."""
    answer = api.client.get(f"/v1/segments/overlap?ids={a},{b}", headers=api.admin)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return ({s["segment_id"]: s["size"] for s in body["segments"]},
            {(p["a"], p["b"]): p["intersection"] for p in body["pairs"]})


def _served(api, ch, rds, sid: str) -> tuple[dict, set[str], set[str]]:
    """(the segment as GET shows it, its served version's ClickHouse rows, its Valkey set)."""
    seg = api.client.get(f"/v1/segments/{sid}", headers=api.admin).json()
    assert seg["status"] == "ready", seg
    assert rds.hget(store.LIVE, sid).decode().split("|")[0] == str(seg["version"])
    in_valkey = {m.decode() for m in rds.smembers(store.member_key(sid, seg["version"]))}
    return seg, set(store.member_ids(ch, sid, seg["version"])), in_valkey


def _check(api, ch, rds, segs: dict[str, set[str]]) -> None:
    """Every view of every segment shows exactly ``segs[sid]``: rows, Valkey set, size,
    overlap and each profile's look-up."""
    for sid, expected in segs.items():
        seg, rows, in_valkey = _served(api, ch, rds, sid)
        assert rows == in_valkey == expected, sid
        assert seg["size"] == len(expected), seg
    a, b = segs
    sizes, pairs = _overlap(api, a, b)
    assert sizes == {a: len(segs[a]), b: len(segs[b])}
    assert pairs == {(a, a): len(segs[a]), (a, b): len(segs[a] & segs[b]),
                     (b, b): len(segs[b])}
    for profile in ADULTS:  # the excluded ones are in no expected set: they get nothing
        want = sorted(s for s, members in segs.items() if profile in members)
        rtb = [{"id": "adtier", "name": "adtier", "segment": [{"id": s} for s in want]}]
        assert _lookup(api, profile) == (want, rtb if want else []), profile


@pytest.fixture
def two_segments(api) -> tuple[str, str]:
    """Two static segments of adults, built: ``a`` holds pf-1..pf-8, ``b`` pf-1..pf-4."""
    put(api, "/v1/profiles", [{"profile_id": p, "account_id": "acc-1", "kind": "adult"}
                              for p in ADULTS])
    ids = []
    for name, members in (("a", ADULTS), ("b", ADULTS[:4])):
        sid = create(api, {"name": name, "kind": "static", "profile_ids": members})["segment_id"]
        assert build(api, sid)["status"] == "ready"
        ids.append(sid)
    return ids[0], ids[1]


def test_opt_out_and_kids_leave_served_segments_without_a_rebuild(api, ch, rds,
                                                                  two_segments) -> None:
    a, b = two_segments
    _check(api, ch, rds, {a: set(ADULTS), b: set(ADULTS[:4])})
    assert _lookup(api, OPTED_OUT)[0] == sorted([a, b])

    # many ids in one call (unknown ones too): bulk, and only the opted-out member changes
    others = [f"nobody-{i}" for i in range(2_000)]
    answer = api.client.post("/v1/privacy/opt-out", json={"profile_ids": [OPTED_OUT, *others]},
                             headers=api.admin)
    assert answer.status_code == 200, answer.text
    # one request makes pf-3 a kid and writes pf-1 as an adult again (it stays)
    put(api, "/v1/profiles", [{"profile_id": KID, "account_id": "acc-1", "kind": "kids"},
                              {"profile_id": "pf-1", "account_id": "acc-1", "kind": "adult"}])

    left_a, left_b = set(ADULTS) - GONE, set(ADULTS[:4]) - GONE
    _check(api, ch, rds, {a: left_a, b: left_b})  # no rebuild in between

    for sid in (a, b):  # and a rebuild leaves them out too
        rebuilt = build(api, sid)
        assert rebuilt["status"] == "ready" and rebuilt["version"] == 2, rebuilt
    _check(api, ch, rds, {a: left_a, b: left_b})


def test_exclusion_of_a_profile_in_no_segment_changes_nothing(api, ch, rds,
                                                              two_segments) -> None:
    a, b = two_segments
    before = {sid: api.client.get(f"/v1/segments/{sid}", headers=api.admin).json()
              for sid in (a, b)}
    answer = api.client.post("/v1/privacy/opt-out", json={"profile_ids": ["pf-none"]},
                             headers=api.admin)
    assert answer.status_code == 200, answer.text
    put(api, "/v1/profiles", [{"profile_id": "pf-kid", "account_id": "acc-2", "kind": "kids"}])
    for sid in (a, b):  # the segment rows were not rewritten
        assert api.client.get(f"/v1/segments/{sid}", headers=api.admin).json() == before[sid]
    _check(api, ch, rds, {a: set(ADULTS), b: set(ADULTS[:4])})


def test_erasure_leaves_built_segments_and_uploaded_lists_and_503s_without_redis(
        api, ch, rds, two_segments, monkeypatch) -> None:
    a, b = two_segments
    state = api.client.app.state.adtier
    # Valkey unreachable for the exclusion's publication: 503 with Retry-After, not a 500
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    with monkeypatch.context() as patch:
        patch.setattr(state.stores, "redis", dead)
        down = api.client.delete(f"/v1/privacy/profiles/{OPTED_OUT}", headers=api.admin)
    assert down.status_code == 503 and down.headers["retry-after"], down.text
    assert _lookup(api, OPTED_OUT)[0] == sorted([a, b])  # nothing published yet

    # the retry: out of the served segments and of the uploaded lists (version 0)
    erased = api.client.delete(f"/v1/privacy/profiles/{OPTED_OUT}", headers=api.admin)
    assert erased.status_code == 202, erased.text
    _check(api, ch, rds, {a: set(ADULTS) - {OPTED_OUT}, b: set(ADULTS[:4]) - {OPTED_OUT}})
    assert set(store.member_ids(ch, a, 0)) == set(ADULTS) - {OPTED_OUT}
    assert set(store.member_ids(ch, b, 0)) == set(ADULTS[:4]) - {OPTED_OUT}


class _RowLimited:
    """The ClickHouse client, refusing to read more than ``limit`` rows for a statement that
    looks profiles up in ``segment_members`` (``max_rows_to_read``; the recount of a served
    version reads that whole version, as it should)."""

    def __init__(self, client: Any, limit: int) -> None:
        self._client, self._limit = client, limit

    def query(self, sql: str, parameters: Any = None, settings: Any = None, **kw: Any) -> Any:
        if "profile_id IN" in sql:
            settings = {**(settings or {}), "max_rows_to_read": self._limit}
        return self._client.query(sql, parameters=parameters, settings=settings, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_forgetting_a_profile_reads_its_hash_range_not_the_whole_table(ch, rds,
                                                                       two_segments) -> None:
    """segment_members is sorted by (segment_id, version, profile_hash): the look-up of the
    profiles to forget reads a few granules of each version, not every profile_id."""
    a, b = two_segments
    ch.command("INSERT INTO segment_members (segment_id, version, profile_id) "
               "SELECT concat('seg_bulk_', toString(number % 4)), 1, "
               "concat('bulk-', toString(number)) FROM numbers(400000)")
    limited = _RowLimited(ch, 150_000)
    with pytest.raises(DatabaseError, match="TOO_MANY_ROWS"):  # the guard does bite
        limited.query("SELECT count() FROM segment_members WHERE profile_id IN {p:Array(String)}",
                      parameters={"p": [OPTED_OUT]})
    assert sorted(store.forget_profiles(limited, rds, [OPTED_OUT, "bulk-7"])) == sorted([a, b])
    assert set(store.member_ids(ch, a, 1)) == set(ADULTS) - {OPTED_OUT}
    assert "bulk-7" not in store.member_ids(ch, "seg_bulk_3", 1)
    assert len(store.member_ids(ch, "seg_bulk_3", 1)) == 99_999
