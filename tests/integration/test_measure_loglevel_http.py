"""The log-level verification feed over HTTP on the real stores: a Parquet round trip of one
campaign-day, keyed profile pseudonyms (stable per advertiser, different across advertisers,
derived from the secret kept in Valkey or the configured one), no raw profile id in the bytes,
kids/opted-out/erased profiles left out, 404 isolation, 400 on a bad date, the audit record;
the verifier key (its advertiser's feeds, the owner's pseudonyms, nothing else)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import re

import msgspec
import pyarrow.parquet as pq
import pytest
from litestar.testing import TestClient

from adtier.app import create_app
from adtier.measure.loglevel import SECRET_KEY
from tests.helpers import ad_event, batch
from tests.integration.conftest import Api, count
from tests.integration.test_measure_report_http import key, put

DAY_MS = 86_400_000
CAMPAIGNS = [
    {"campaign_id": cid, "advertiser_id": adv, "name": cid, "ad_category": "IAB2",
     "start_date": "2025-01-01", "end_date": "2030-12-31", "frequency_cap": 0,
     "holdout_percent": 0.0}
    for cid, adv in (("cmp-a", "adv-a"), ("cmp-a2", "adv-a"), ("cmp-b", "adv-b"))
]


def _noon(days_ago: int) -> int:
    """Noon UTC ``days_ago`` days back, in epoch ms (events a few seconds after it stay on
    that day whatever the time of the run)."""
    today = dt.datetime.now(dt.timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0)
    return int((today - dt.timedelta(days=days_ago)).timestamp() * 1000)


def _day(days_ago: int) -> str:
    return dt.datetime.fromtimestamp(_noon(days_ago) / 1000, dt.timezone.utc).date().isoformat()


def _events() -> list[dict]:
    """Yesterday: profiles pf-00..pf-09 see cmp-a (impression + start + complete) on tv,
    pf-00..pf-04 also see cmp-a2 (same advertiser) and cmp-b (another); pf-kid, pf-out and
    pf-gone see cmp-a too. Two days ago: pf-00 sees cmp-a once (another day)."""
    base, events = _noon(1), []
    profiles = [f"pf-{i:02d}" for i in range(10)] + ["pf-kid", "pf-out", "pf-gone"]
    for i, profile in enumerate(profiles):
        for t, offset in (("impression", 0), ("start", 10), ("complete", 20_000)):
            events.append(ad_event(t, profile_id=profile, campaign_id="cmp-a",
                                   creative_id="cr-a", ad_serving_id=f"as-a-{i}",
                                   session_id=f"ses-{profile}", account_id=f"acc-{profile}",
                                   break_position="mid", pod_position=1, ad_duration_ms=15_000,
                                   device="tv", country="US", ts=base + i * 1000 + offset))
    for i in range(5):
        for cid in ("cmp-a2", "cmp-b"):
            events.append(ad_event("impression", profile_id=f"pf-{i:02d}", campaign_id=cid,
                                   ad_serving_id=f"as-{cid}-{i}", ts=base + 60_000 + i))
    events.append(ad_event("impression", profile_id="pf-00", campaign_id="cmp-a",
                           ad_serving_id="as-old", ts=_noon(2)))
    return events


@pytest.fixture
def world(api, flush, ch):
    put(api, "/v1/catalog/advertisers", [{"advertiser_id": "adv-a", "name": "A"},
                                          {"advertiser_id": "adv-b", "name": "B"}])
    put(api, "/v1/catalog/campaigns", CAMPAIGNS)
    assert api.client.put("/v1/profiles", headers=api.admin, json={"items": [
        {"profile_id": "pf-kid", "account_id": "acc-pf-kid", "kind": "kids"}]}).status_code == 200
    assert api.client.post("/v1/privacy/opt-out", headers=api.admin,
                           json={"profile_ids": ["pf-out"]}).status_code == 200
    answer = api.post_events(batch(_events()))
    assert answer.status_code == 200 and not answer.json()["rejected"], answer.text
    flush()
    assert api.client.delete("/v1/privacy/profiles/pf-gone", headers=api.admin).status_code == 202
    # a late event of the erased profile, stored after its erasure, stays out as well
    late = ad_event("impression", profile_id="pf-gone", campaign_id="cmp-a",
                    ad_serving_id="as-late", ts=_noon(1) + 90_000)
    assert api.post_events(batch([late])).status_code == 200
    flush()
    assert count(ch, "ad_events", "profile_id IN ('pf-gone', 'pf-kid', 'pf-out')") == 7


def _feed(api, campaign_id: str, headers: dict, day: str | None = None):
    return api.client.get(f"/v1/campaigns/{campaign_id}/log-level",
                          params={"date": day or _day(1)}, headers=headers)


def _table(answer):
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/vnd.apache.parquet")
    return pq.read_table(io.BytesIO(answer.content))


def _hash_of(secret: bytes, advertiser_id: str, profile_id: str) -> str:
    derived = hmac.new(secret, b"adtier/log-level/v1/" + advertiser_id.encode(),
                       hashlib.sha256).digest()
    return hmac.new(derived, profile_id.encode(), hashlib.sha256).hexdigest()


def test_parquet_round_trip_of_one_campaign_day(api, world, rds):
    answer = _feed(api, "cmp-a", api.admin)
    table = _table(answer)
    rows = table.to_pylist()
    # 10 eligible profiles x 3 events; kids, opted-out and erased profiles left out; the other
    # day and the other campaigns are not in it
    assert len(rows) == 30 == int(answer.headers["x-adtier-rows"])
    assert sorted(r["event_type"] for r in rows) == sorted(["impression", "start",
                                                            "complete"] * 10)
    assert {r["campaign_id"] for r in rows} == {"cmp-a"}
    assert {r["ts"].date().isoformat() for r in rows} == {_day(1)}
    assert [r["ts"] for r in rows] == sorted(r["ts"] for r in rows)
    first = next(r for r in rows if r["ad_serving_id"] == "as-a-0" and r["event_type"] == "start")
    assert first["creative_id"] == "cr-a" and first["device"] == "tv"
    assert first["country"] == "US" and first["break_position"] == "mid"
    assert first["pod_position"] == 1 and first["ad_duration_ms"] == 15_000
    assert first["ts"] == dt.datetime.fromtimestamp((_noon(1) + 10) / 1000, dt.timezone.utc)
    assert "profile_id" not in table.column_names and "session_id" not in table.column_names
    assert "account_id" not in table.column_names
    # the pseudonym is HMAC-SHA256 under the advertiser's key derived from the stored secret
    secret = rds.get(SECRET_KEY)
    assert secret and len(secret) == 64
    expected = {_hash_of(secret, "adv-a", f"pf-{i:02d}") for i in range(10)}
    assert {r["hashed_profile_id"] for r in rows} == expected
    excluded = {_hash_of(secret, "adv-a", p) for p in ("pf-kid", "pf-out", "pf-gone")}
    assert not excluded & {r["hashed_profile_id"] for r in rows}
    # no raw id anywhere in the bytes (data, statistics, metadata), nor its plain SHA-256
    for i in range(10):
        raw = f"pf-{i:02d}"
        assert raw.encode() not in answer.content
        assert hashlib.sha256(raw.encode()).hexdigest().encode() not in answer.content
    assert b"ses-pf" not in answer.content and b"acc-pf" not in answer.content
    # a day without events: an empty file with the same schema
    empty = _table(_feed(api, "cmp-a", api.admin, "2025-06-01"))
    assert empty.num_rows == 0 and empty.schema.equals(table.schema)


def test_pseudonyms_stable_per_advertiser_different_across(api, world):
    def by_profile(campaign_id: str) -> dict[str, str]:
        rows = _table(_feed(api, campaign_id, api.admin)).to_pylist()
        return {r["ad_serving_id"].rsplit("-", 1)[1]: r["hashed_profile_id"] for r in rows
                if r["event_type"] == "impression"}

    a = by_profile("cmp-a")
    a2 = by_profile("cmp-a2")
    b = by_profile("cmp-b")
    assert len(set(a.values())) == 10
    # same advertiser, another campaign and another call: the same pseudonym per profile
    assert all(a2[i] == a[i] for i in a2) and len(a2) == 5
    assert by_profile("cmp-a") == a
    # another advertiser's feed cannot be joined with this one
    assert len(b) == 5 and not set(b.values()) & set(a.values())


def test_configured_secret_is_used_and_survives_a_restart(settings, world, rds, tmp_path):
    # another data dir: the fixture's app still holds its own (same stores, explicit URLs)
    configured = msgspec.structs.replace(settings, log_level_secret="s3cret-for-the-fleet",
                                         data_dir=tmp_path / "node-2")
    hashes = []
    for _ in range(2):  # two app instances (a restart, or two nodes of a fleet)
        with TestClient(create_app(configured)) as client:
            api = Api(client, configured)
            hashes.append({r["hashed_profile_id"] for r in
                           _table(_feed(api, "cmp-a", api.admin)).to_pylist()})
    assert hashes[0] == hashes[1] == {_hash_of(b"s3cret-for-the-fleet", "adv-a", f"pf-{i:02d}")
                                      for i in range(10)}
    assert rds.get(SECRET_KEY) is None  # nothing generated when one is configured


def test_isolation_bad_date_and_audit(api, world):
    adv_a = key(api, "adv-a")
    foreign = _feed(api, "cmp-b", adv_a)
    unknown = _feed(api, "cmp-nope", adv_a)
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json()["error"] == "not_found"
    assert b"pf-" not in foreign.content
    # even the owner's advertiser key: per-event rows are released by the platform only
    own = _feed(api, "cmp-a", adv_a)
    assert own.status_code == 403 and own.json()["error"] == "forbidden"
    assert b"pf-" not in own.content
    for bad in ("2026-13-01", "yesterday", ""):
        answer = _feed(api, "cmp-a", api.admin, bad or " ")
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"
    assert api.client.get("/v1/campaigns/cmp-a/log-level", headers=api.admin).status_code == 400
    assert _feed(api, "cmp-a", api.ingest).status_code == 403
    assert api.client.get("/v1/campaigns/cmp-a/log-level").status_code == 401
    good = _feed(api, "cmp-a", api.admin)
    assert good.status_code == 200
    records = api.client.get("/v1/audit", headers=api.admin).json()["records"]
    feed = [r for r in records if r["endpoint"] == "campaign_log_level"]
    by_id = {r["audit_id"]: r for r in feed}
    mine = by_id[good.headers["x-adtier-report-id"]]
    assert mine["status"] == 200 and mine["row_count"] == 30
    assert mine["answer_sha256"] == hashlib.sha256(good.content).hexdigest()
    assert mine["answer_sha256"] == good.headers["x-adtier-answer-sha256"]
    assert mine["parameters"] == {"campaign_id": "cmp-a", "date": _day(1)}
    assert sorted(r["status"] for r in feed) == [200, 400, 400, 400, 400, 403, 404, 404]
    assert {r["advertiser_id"] for r in feed if r["status"] in (403, 404)} == {"adv-a"}


def _verifier(api, advertiser_id: str) -> tuple[dict[str, str], str]:
    made = api.client.post("/v1/keys", headers=api.admin, json={
        "role": "verifier", "advertiser_id": advertiser_id, "name": "verification vendor"})
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['key']}"}, made.json()["key_id"]


def test_verifier_gets_its_advertisers_feeds_with_the_owners_pseudonyms(api, world):
    verifier, key_id = _verifier(api, "adv-a")
    mine = _feed(api, "cmp-a", verifier)
    # the very file an admin gets: same rows, same pseudonyms (the campaign owner's)
    assert _table(mine).equals(_table(_feed(api, "cmp-a", api.admin)))
    assert _table(mine).num_rows == 30
    assert _table(_feed(api, "cmp-a2", verifier)).num_rows == 5  # any campaign of adv-a
    # another advertiser's campaign looks like no campaign at all
    foreign = _feed(api, "cmp-b", verifier)
    unknown = _feed(api, "cmp-nope", verifier)
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json()["error"] == "not_found" and b"pf-" not in foreign.content
    # a verifier of adv-b gets cmp-b, under adv-b's pseudonyms (not joinable with adv-a's)
    other, _ = _verifier(api, "adv-b")
    b_rows = _table(_feed(api, "cmp-b", other)).to_pylist()
    a_hashes = {r["hashed_profile_id"] for r in _table(mine).to_pylist()}
    assert len(b_rows) == 5 and not {r["hashed_profile_id"] for r in b_rows} & a_hashes
    assert _feed(api, "cmp-a", other).status_code == 404
    # every call audited under the verifier's own key
    records = api.client.get(f"/v1/audit?key_id={key_id}", headers=api.admin).json()["records"]
    assert sorted(r["status"] for r in records) == [200, 200, 404, 404]
    assert {(r["endpoint"], r["role"], r["advertiser_id"]) for r in records} == {
        ("campaign_log_level", "verifier", "adv-a")}
    answered = next(r for r in records if r["audit_id"] == mine.headers["x-adtier-report-id"])
    assert answered["row_count"] == 30
    assert answered["answer_sha256"] == hashlib.sha256(mine.content).hexdigest()


def test_advertiser_and_other_keys_are_refused_the_feed_naming_the_verifier(api, world):
    own = _feed(api, "cmp-a", key(api, "adv-a"))
    assert own.status_code == 403 and "verifier" in own.json()["detail"]
    ingest = _feed(api, "cmp-a", api.ingest)
    assert ingest.status_code == 403
    assert ingest.json()["detail"] == ("this endpoint needs a verifier or admin key, "
                                       "not an ingest key")


# Endpoints anyone may call, and the feed itself; every other route must refuse a verifier.
_OPEN = {"/healthz", "/readyz", "/metrics", "/v1/px"}
_FEED = "/v1/campaigns/{campaign_id:str}/log-level"
# what the framework validates before the handler runs (so the role check is reached)
_VALID = {
    ("GET", "/v1/px/template"): {"params": {"campaign_id": "cmp-a", "creative_id": "cr-a"}},
    ("GET", "/v1/vast/tracking"): {"params": {"campaign_id": "cmp-a", "creative_id": "cr-a"}},
    ("GET", "/v1/segments/overlap"): {"params": {"ids": "s1,s2"}},
    ("POST", "/v1/keys"): {"json": {"role": "verifier", "advertiser_id": "adv-b"}},
    ("POST", "/v1/events"): {"json": batch([ad_event()])},
}


def test_verifier_is_refused_every_other_endpoint(api, world):
    verifier, key_id = _verifier(api, "adv-a")
    checked = set()
    for route in api.client.app.routes:
        if (route.path in _OPEN or route.path == _FEED
                or route.path.startswith(("/docs", "/console"))):  # pages and assets, no data
            continue
        path = re.sub(r"\{\w+:\w+\}", "cmp-a", route.path)
        for method in sorted(set(getattr(route, "methods", ())) - {"HEAD", "OPTIONS"}):
            extra = _VALID.get((method, route.path), {"json": {}})
            answer = api.client.request(method, path, headers=verifier, **extra)
            assert answer.status_code == 403, (method, route.path, answer.text)
            detail = answer.json()["detail"]
            assert re.fullmatch(r"this endpoint needs an? [a-z ]+ key, not a verifier key",
                                detail), detail
            checked.add(f"{method} {route.path}")
    # the ones the brief names are among them (the walk did not silently skip them)
    for name in ("/report", "/frequency", "/content-effects", "/v1/segments", "/v1/features",
                 "/v1/events", "/v1/audit", "/v1/keys", "/v1/forecast/reach"):
        assert any(name in c for c in checked), name
    assert len(checked) > 30
    # refused by role before any campaign is looked at: nothing else was done or released
    listed = api.client.get("/v1/keys", headers=api.admin).json()
    assert [k["role"] for k in listed].count("verifier") == 1
