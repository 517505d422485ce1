"""Segments over HTTP on the real stores: rule, static and lookalike builds, exclusions,
overlap, the Redis look-up (and its OpenRTB form) and advertiser scoping."""

from __future__ import annotations

import time

import pytest

from adtier.segments import store
from tests.helpers import ad_event, batch, content_event, now_ms

CAMPAIGNS = [
    {"campaign_id": "cmp-auto", "advertiser_id": "adv-1", "name": "Cars", "ad_category": "IAB2",
     "start_date": "2025-01-01", "end_date": "2030-12-31", "frequency_cap": 0,
     "holdout_percent": 0.0},
    {"campaign_id": "cmp-food", "advertiser_id": "adv-2", "name": "Food", "ad_category": "IAB8",
     "start_date": "2025-01-01", "end_date": "2030-12-31", "frequency_cap": 0,
     "holdout_percent": 0.0},
]
TITLES = [
    {"content_id": "t-drama", "name": "D", "kind": "film", "genres": ["drama"],
     "maturity": "PG-13", "duration_ms": 5_400_000},
    {"content_id": "t-comedy", "name": "C", "kind": "film", "genres": ["comedy"],
     "maturity": "PG", "duration_ms": 5_400_000},
]
MIN = 60_000


def put(api, path: str, items: list[dict]) -> None:
    answer = api.client.put(path, json={"items": items}, headers=api.admin)
    assert answer.status_code == 200, answer.text


def ads(profile: str, campaign: str, impressions: int, completes: int = 0, skips: int = 0,
        device: str = "tv") -> list[dict]:
    out = []
    for i in range(impressions):
        common = {"profile_id": profile, "campaign_id": campaign, "ad_serving_id": f"{profile}-{i}",
                  "session_id": f"s-{profile}", "device": device}
        out.append(ad_event("impression", **common))
        if i < completes:
            out.append(ad_event("complete", **common))
        elif i < completes + skips:
            out.append(ad_event("skip", **common))
    return out


def watch(profile: str, title: str, minutes: int, device: str = "tv") -> list[dict]:
    common = {"profile_id": profile, "content_id": title, "session_id": f"s-{profile}",
              "device": device}
    return [content_event("content_start", position_ms=0, watched_ms=0, **common),
            content_event("content_heartbeat", position_ms=minutes * MIN,
                          watched_ms=minutes * MIN, **common)]


def send(api, flush, events: list[dict]) -> None:
    for start in range(0, len(events), 5000):
        answer = api.post_events(batch(events[start:start + 5000]))
        assert answer.status_code == 200, answer.text
        assert answer.json()["rejected"] == [], answer.json()["rejected"][:2]
    flush()


@pytest.fixture
def world(api, flush):
    """A handful of profiles with known behaviour, a kids' and an opted-out profile."""
    put(api, "/v1/catalog/advertisers", [{"advertiser_id": "adv-1", "name": "A"},
                                         {"advertiser_id": "adv-2", "name": "B"}])
    put(api, "/v1/catalog/campaigns", CAMPAIGNS)
    put(api, "/v1/catalog/titles", TITLES)
    put(api, "/v1/profiles", [{"profile_id": "pf-kid", "account_id": "acc-1", "kind": "kids"},
                              {"profile_id": "pf-a", "account_id": "acc-1", "kind": "adult"}])
    answer = api.client.post("/v1/privacy/opt-out", json={"profile_ids": ["pf-opt"]},
                             headers=api.admin)
    assert answer.status_code == 200, answer.text
    events = (
        ads("pf-a", "cmp-auto", 3, completes=2) + watch("pf-a", "t-drama", 30)
        + ads("pf-b", "cmp-food", 1, skips=1, device="mobile")
        + watch("pf-b", "t-comedy", 10, device="mobile")
        + watch("pf-c", "t-drama", 20)
        + ads("pf-kid", "cmp-auto", 5) + watch("pf-kid", "t-drama", 50)
        + ads("pf-opt", "cmp-auto", 5) + watch("pf-opt", "t-drama", 50)
    )
    send(api, flush, events)
    return api


def key_for(api, advertiser: str) -> dict[str, str]:
    answer = api.client.post("/v1/keys", json={"role": "advertiser", "advertiser_id": advertiser},
                             headers=api.admin)
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['key']}"}


def create(api, body: dict, headers: dict | None = None) -> dict:
    answer = api.client.post("/v1/segments", json=body, headers=headers or api.admin)
    assert answer.status_code == 201, answer.text
    assert answer.json()["status"] == "pending"
    return answer.json()


def build(api, segment_id: str, headers: dict | None = None, timeout: float = 120.0) -> dict:
    headers = headers or api.admin
    answer = api.client.post(f"/v1/segments/{segment_id}/build", headers=headers)
    assert answer.status_code == 202, answer.text
    return build_wait(api, segment_id, headers, timeout)


def build_wait(api, segment_id: str, headers: dict | None = None,
               timeout: float = 120.0) -> dict:
    """Poll the segment until its build is ready or failed."""
    headers = headers or api.admin
    deadline = time.monotonic() + timeout
    while True:
        seg = api.client.get(f"/v1/segments/{segment_id}", headers=headers).json()
        if seg["status"] in ("ready", "failed"):
            return seg
        assert time.monotonic() < deadline, seg
        time.sleep(0.1)


def members(ch, seg: dict) -> set[str]:
    return set(store.member_ids(ch, seg["segment_id"], seg["version"]))


def rule_segment(api, rule: dict, headers: dict | None = None) -> dict:
    seg = create(api, {"name": "r", "kind": "rule", "rule": rule}, headers)
    built = build(api, seg["segment_id"], headers)
    assert built["status"] == "ready", built
    return built


@pytest.mark.parametrize("rule, expected", [
    ({"feature": "ad_impressions", "op": ">=", "value": 1}, {"pf-a", "pf-b"}),
    ({"feature": "ad_impressions", "key": "IAB2", "op": ">=", "value": 3}, {"pf-a"}),
    ({"feature": "campaign_exposures", "key": "cmp-food", "op": "==", "value": 1}, {"pf-b"}),
    # Beta(1,1): pf-a (2+1)/(3+2) = 0.6; pf-b 1/3; pf-c (no ads) 1/2 -> not above 0.5
    ({"feature": "ad_completion_rate", "op": ">", "value": 0.5}, {"pf-a"}),
    ({"feature": "ad_skip_rate", "op": "between", "value": [0.6, 0.7]}, {"pf-b"}),
    ({"feature": "genre_share", "key": "drama", "op": ">=", "value": 0.5}, {"pf-a", "pf-c"}),
    ({"feature": "watch_minutes", "op": ">", "value": 15}, {"pf-a", "pf-c"}),
    ({"feature": "watched_title", "key": "t-comedy", "op": "==", "value": True}, {"pf-b"}),
    ({"feature": "device_share", "key": "mobile", "op": "==", "value": 1}, {"pf-b"}),
    ({"feature": "days_since_active", "op": "==", "value": 0}, {"pf-a", "pf-b", "pf-c"}),
    ({"feature": "active_days", "window_days": 7, "op": "in", "value": [1, 2]},
     {"pf-a", "pf-b", "pf-c"}),
    ({"feature": "sessions", "op": "==", "value": 1}, {"pf-a", "pf-b", "pf-c"}),
    ({"not": {"feature": "ad_impressions", "op": ">", "value": 0}}, {"pf-c"}),
    ({"any": [{"feature": "ad_clicks", "op": ">", "value": 0},
              {"all": [{"feature": "genre_share", "key": "comedy", "op": ">", "value": 0.9},
                       {"feature": "ad_ctr", "op": "<", "value": 0.05}]}]}, {"pf-b"}),
])
def test_rule_segment_membership_is_exact(world, ch, rule, expected) -> None:
    seg = rule_segment(world, rule)
    assert members(ch, seg) == expected
    assert seg["size"] == len(expected) and seg["version"] == 1
    assert seg["built_at"] and seg["data_through"] and seg["error"] is None


def test_bad_rule_answers_400_naming_the_node(api) -> None:
    answer = api.client.post("/v1/segments", headers=api.admin, json={
        "name": "bad", "kind": "rule",
        "rule": {"all": [{"feature": "ad_impressions", "op": ">", "value": 1},
                         {"any": [{"feature": "genre_share", "op": ">", "value": 0.2}]}]}})
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_rule"
    assert answer.json()["detail"].startswith("rule.all[1].any[0].key:")
    answer = api.client.post("/v1/segments", headers=api.admin,
                             json={"name": "x", "kind": "static"})
    assert answer.status_code == 400 and "profile_ids" in answer.json()["detail"]


def test_static_segment_excludes_kids_and_opted_out_and_lookup(world, ch, rds) -> None:
    seg = create(world, {"name": "crm", "kind": "static",
                         "profile_ids": ["pf-a", "pf-kid", "pf-opt", "pf-new", "pf-a"]})
    assert seg["definition"] == {"profile_count": 4}  # ids are never echoed back
    built = build(world, seg["segment_id"])
    assert built["status"] == "ready"
    assert members(ch, built) == {"pf-a", "pf-new"} and built["size"] == 2
    other = rule_segment(world, {"feature": "ad_impressions", "op": ">=", "value": 0})
    assert members(ch, other) == {"pf-a", "pf-b", "pf-c"}  # never pf-kid / pf-opt

    got = world.client.get("/v1/profiles/pf-a/segments", headers=world.admin)
    assert got.status_code == 200
    assert got.json() == {"profile_id": "pf-a",
                          "segments": sorted([seg["segment_id"], other["segment_id"]]),
                          "holdout_campaigns": []}  # its campaigns have no holdout
    rtb = world.client.get("/v1/profiles/pf-a/segments?format=openrtb", headers=world.admin)
    assert rtb.json() == [{"id": "adtier", "name": "adtier", "segment": [
        {"id": s} for s in sorted([seg["segment_id"], other["segment_id"]])]}]
    for excluded in ("pf-kid", "pf-opt", "nobody"):
        assert world.client.get(f"/v1/profiles/{excluded}/segments", headers=world.admin
                                ).json()["segments"] == []
        assert world.client.get(f"/v1/profiles/{excluded}/segments?format=openrtb",
                                headers=world.admin).json() == []

    # overlap: a segment with itself is its size; the pair is the exact intersection
    answer = world.client.get(
        f"/v1/segments/overlap?ids={seg['segment_id']},{other['segment_id']}",
        headers=world.admin)
    assert answer.status_code == 200, answer.text
    pairs = {(p["a"], p["b"]): p["intersection"] for p in answer.json()["pairs"]}
    assert pairs == {(seg["segment_id"], seg["segment_id"]): 2,
                     (seg["segment_id"], other["segment_id"]): 1,
                     (other["segment_id"], other["segment_id"]): 3}


def test_ready_is_answered_once_the_build_is_served_and_its_lock_released(world, ch,
                                                                          monkeypatch) -> None:
    """A build writes its ``ready`` row, then switches Valkey's live pointer and releases
    its lock: a poller that saw ``ready`` in between found the look-up without the segment
    and a new build refused (409). The swap is slowed here to hold that moment open."""
    real_swap = store.swap_many

    def slow_swap(r, swaps):
        time.sleep(1.0)
        real_swap(r, swaps)

    monkeypatch.setattr(store, "swap_many", slow_swap)
    seg = rule_segment(world, {"feature": "ad_impressions", "op": ">=", "value": 1})
    got = world.client.get("/v1/profiles/pf-a/segments", headers=world.admin)
    assert got.json()["segments"] == [seg["segment_id"]]
    again = world.client.post(f"/v1/segments/{seg['segment_id']}/build", headers=world.admin)
    assert again.status_code == 202, again.text
    assert build_wait(world, seg["segment_id"])["version"] == 2


def test_rebuild_swaps_versions_and_failed_build_keeps_previous(world, ch, rds, flush) -> None:
    seg = rule_segment(world, {"feature": "watch_minutes", "op": ">", "value": 15})
    assert members(ch, seg) == {"pf-a", "pf-c"}
    send(world, flush, watch("pf-b", "t-drama", 40))  # pf-b now watched 50 minutes
    again = build(world, seg["segment_id"])
    assert again["status"] == "ready" and again["version"] == 2
    assert members(ch, again) == {"pf-a", "pf-b", "pf-c"}
    assert world.client.get("/v1/profiles/pf-b/segments", headers=world.admin
                            ).json()["segments"] == [seg["segment_id"]]
    assert rds.exists(store.member_key(seg["segment_id"], 1)) == 0  # old set dropped

    # break the definition behind the API's back: the build fails, version 2 stays served
    row = store.get_segment(ch, seg["segment_id"])
    store.write_state(ch, row, definition='{"rule": {"feature": "nope", "op": ">", "value": 1}}')
    failed = build(world, seg["segment_id"])
    assert failed["status"] == "failed" and "nope" in failed["error"]
    assert failed["version"] == 2 and failed["size"] == 3
    assert world.client.get("/v1/profiles/pf-b/segments", headers=world.admin
                            ).json()["segments"] == [seg["segment_id"]]
    assert members(ch, failed) == {"pf-a", "pf-b", "pf-c"}


def test_advertiser_scoping(world, ch) -> None:
    adv1, adv2 = key_for(world, "adv-1"), key_for(world, "adv-2")
    platform = rule_segment(world, {"feature": "ad_impressions", "op": ">", "value": 0})
    mine = rule_segment(world, {"feature": "ad_impressions", "op": ">", "value": 0}, adv1)
    assert mine["advertiser_id"] == "adv-1" and platform["advertiser_id"] is None
    seen1 = {s["segment_id"] for s in world.client.get("/v1/segments", headers=adv1).json()}
    seen2 = {s["segment_id"] for s in world.client.get("/v1/segments", headers=adv2).json()}
    assert seen1 == {platform["segment_id"], mine["segment_id"]}
    assert seen2 == {platform["segment_id"]}
    for path in (f"/v1/segments/{mine['segment_id']}",
                 f"/v1/segments/overlap?ids={mine['segment_id']}"):
        answer = world.client.get(path, headers=adv2)
        assert answer.status_code == 404 and answer.json()["error"] == "not_found"
    assert world.client.post(f"/v1/segments/{mine['segment_id']}/build", headers=adv2
                             ).status_code == 404
    assert world.client.post(f"/v1/segments/{platform['segment_id']}/build", headers=adv2
                             ).status_code == 403
    # look-up: memberships of one profile never reach an advertiser key, not even its own
    # segments' (docs/privacy.md); the admin (ad decisioning) sees them
    assert world.client.get("/v1/profiles/pf-a/segments", headers=adv1).json()["segments"] == []
    assert mine["segment_id"] in world.client.get("/v1/profiles/pf-a/segments",
                                                  headers=world.admin).json()["segments"]
    assert world.client.get("/v1/profiles/pf-a/segments", headers=adv2).json()["segments"] == []
    # small intersections are suppressed for advertisers (k = 50), exact for admin
    answer = world.client.get(f"/v1/segments/overlap?ids={mine['segment_id']}", headers=adv1)
    assert answer.json()["pairs"] == [{"a": mine["segment_id"], "b": mine["segment_id"],
                                       "intersection": None, "suppressed": True}]
    answer = world.client.post("/v1/segments", headers=adv2, json={
        "name": "x", "kind": "lookalike", "seed_segment_id": mine["segment_id"],
        "size_percent": 5})
    assert answer.status_code == 400 and answer.json()["error"] == "unknown_seed"
    ingest = world.client.get("/v1/segments", headers=world.ingest)
    assert ingest.status_code == 403


def test_lookalike_finds_profiles_like_the_seed(api, flush, ch) -> None:
    put(api, "/v1/catalog/advertisers", [{"advertiser_id": "adv-1", "name": "A"},
                                         {"advertiser_id": "adv-2", "name": "B"}])
    put(api, "/v1/catalog/campaigns", CAMPAIGNS)
    put(api, "/v1/catalog/titles", TITLES)
    drama = [f"d{i:03d}" for i in range(130)]
    comedy = [f"c{i:03d}" for i in range(130)]
    events = []
    for p in drama:
        events += watch(p, "t-drama", 30) + ads(p, "cmp-auto", 1)
    for p in comedy:
        events += watch(p, "t-comedy", 30) + ads(p, "cmp-food", 1)
    send(api, flush, events)
    put(api, "/v1/profiles", [{"profile_id": "d129", "account_id": "a", "kind": "kids"}])

    small = create(api, {"name": "tiny", "kind": "static", "profile_ids": drama[:50]})
    assert build(api, small["segment_id"])["size"] == 50
    answer = api.client.post("/v1/segments", headers=api.admin, json={
        "name": "x", "kind": "lookalike", "seed_segment_id": small["segment_id"],
        "size_percent": 5})
    assert answer.status_code == 400 and answer.json()["error"] == "seed_too_small"

    seed = create(api, {"name": "seed", "kind": "static", "profile_ids": drama[:100]})
    assert build(api, seed["segment_id"])["size"] == 100
    look = create(api, {"name": "like drama", "kind": "lookalike",
                        "seed_segment_id": seed["segment_id"], "size_percent": 10})
    built = build(api, look["segment_id"])
    assert built["status"] == "ready", built
    got = members(ch, built)
    eligible = 130 + 130 - 1 - 100  # universe minus the kids' profile, minus the seed
    assert built["size"] == round(0.10 * eligible) == len(got)
    assert got <= set(drama[100:129])  # the most similar are the other drama viewers
    assert not got & set(drama[:100])


def test_build_of_unknown_segment_is_404(api) -> None:
    assert api.client.post("/v1/segments/seg_nope/build", headers=api.admin).status_code == 404
    assert api.client.get("/v1/segments/seg_nope", headers=api.admin).status_code == 404


def test_now_ms_is_recent() -> None:
    assert now_ms() > 1_700_000_000_000


_DEFINE = """
import datetime as dt, sys
from adtier.segments import store
from adtier.store import connect
from adtier.store.migrate import apply_migrations
client = connect("chdb://" + sys.argv[1])
apply_migrations(client)
now = dt.datetime.now(dt.timezone.utc)
for sid in ("seg_cli_a", "seg_cli_b"):
    store.insert_members(client, sid, 0, ["p1", "p2", "p3"])
    store.write_state(client, store.SegmentRow(segment_id=sid, name=sid, kind="static", owner="",
                      definition='{"profile_count": 3}', created_at=now))
"""


@pytest.mark.slow
def test_cli_segments_build(tmp_path) -> None:
    import json
    import os
    import subprocess
    import sys

    data = tmp_path / "data"
    env = {**os.environ, "ADTIER_DATA_DIR": str(data), "ADTIER_LOG_LEVEL": "warning"}
    env.pop("ADTIER_CLICKHOUSE_URL", None)
    env.pop("ADTIER_REDIS_URL", None)
    made = subprocess.run([sys.executable, "-c", _DEFINE, str(data / "clickhouse")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    run = subprocess.run([sys.executable, "-m", "adtier", "segments", "build", "--all"], env=env,
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(x) for x in run.stdout.splitlines() if x.startswith("{")]
    assert {x["segment_id"]: (x["status"], x["size"], x["version"]) for x in lines} == {
        "seg_cli_a": ("ready", 3, 1), "seg_cli_b": ("ready", 3, 1)}
    assert "segments" in run.stderr  # the progress bar
    usage = subprocess.run([sys.executable, "-m", "adtier", "segments", "build"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2


def test_build_many_shares_one_pass_and_matches_single_builds(world, ch, rds) -> None:
    from adtier.segments.build import build_many

    rules = [{"feature": "ad_impressions", "op": ">=", "value": 1},
             {"feature": "genre_share", "key": "drama", "op": ">=", "value": 0.5},
             {"feature": "sessions", "op": "==", "value": 1}]
    ids = [create(world, {"name": f"m{i}", "kind": "rule", "rule": r})["segment_id"]
           for i, r in enumerate(rules)]
    static = create(world, {"name": "s", "kind": "static", "profile_ids": ["pf-c"]})["segment_id"]
    chunks = []
    rows = build_many(ch, rds, [*ids, static], progress=lambda i, n: chunks.append((i, n)),
                      chunk_profiles=1)  # tiny chunks: several hash ranges
    assert [r.status for r in rows] == ["ready"] * 4
    got = {r.segment_id: set(store.member_ids(ch, r.segment_id, r.version)) for r in rows}
    assert got == {ids[0]: {"pf-a", "pf-b"}, ids[1]: {"pf-a", "pf-c"},
                   ids[2]: {"pf-a", "pf-b", "pf-c"}, static: {"pf-c"}}
    assert chunks and chunks[-1][0] == chunks[-1][1] > 1
