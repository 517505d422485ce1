"""Campaign holdouts reach ad decisioning through the segment look-up (Valkey only), with the
same assignment ClickHouse computes for measurement (``HOLDOUT_SQL``), scoped per advertiser,
only while the flight runs (ended flights leave the mirror), kept in step with catalog upserts,
restored at start-up and repaired by the server's periodic restore."""

from __future__ import annotations

import datetime as dt

import msgspec
from litestar.testing import TestClient

from adtier.app import create_app
from adtier.catalog import holdout_mirror, store
from adtier.catalog.holdouts import HOLDOUT_SQL
from adtier.catalog.models import Campaign
from tests.conftest import wait_until

ADV1, ADV2 = holdout_mirror.advertiser_key("adv-1"), holdout_mirror.advertiser_key("adv-2")

TODAY = dt.datetime.now(dt.timezone.utc).date()
PROFILES = [f"pf-{i:04d}" for i in range(400)]


def campaign(campaign_id: str, advertiser_id: str, holdout: float,
             end: dt.date = dt.date(2030, 12, 31)) -> dict:
    return {"campaign_id": campaign_id, "advertiser_id": advertiser_id, "name": campaign_id,
            "ad_category": "IAB1", "start_date": "2025-01-01", "end_date": end.isoformat(),
            "frequency_cap": 0, "holdout_percent": holdout}


CAMPAIGNS = [
    campaign("cmp-hold", "adv-1", 20.0),
    campaign("cmp-ended", "adv-1", 30.0, end=TODAY - dt.timedelta(days=1)),
    campaign("cmp-plain", "adv-1", 0.0),
    campaign("cmp-other", "adv-2", 10.0),
]


def put(api, path: str, items: list[dict]) -> None:
    answer = api.client.put(path, json={"items": items}, headers=api.admin)
    assert answer.status_code == 200, answer.text


def key_for(api, advertiser: str) -> dict[str, str]:
    answer = api.client.post("/v1/keys", json={"role": "advertiser", "advertiser_id": advertiser},
                             headers=api.admin)
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['key']}"}


def in_holdout_sql(ch, campaign_id: str, percent: float) -> set[str]:
    """What measurement computes: ClickHouse's HOLDOUT_SQL over the same ids."""
    rows = ch.query(
        f"SELECT profile_id FROM (SELECT arrayJoin({{ids:Array(String)}}) AS profile_id) "
        f"WHERE {HOLDOUT_SQL}",
        parameters={"ids": PROFILES, "campaign_id": campaign_id,
                    "holdout_percent": percent}).result_rows
    return {r[0] for r in rows}


def holdouts_of(client: TestClient, headers: dict, profiles=PROFILES) -> dict[str, list[str]]:
    out = {}
    for profile_id in profiles:
        answer = client.get(f"/v1/profiles/{profile_id}/segments", headers=headers)
        assert answer.status_code == 200, answer.text
        out[profile_id] = answer.json()["holdout_campaigns"]
    return out


def held(answers: dict[str, list[str]], campaign_id: str) -> set[str]:
    return {p for p, campaigns in answers.items() if campaign_id in campaigns}


def setup_catalog(api) -> None:
    put(api, "/v1/catalog/advertisers", [{"advertiser_id": "adv-1", "name": "A"},
                                         {"advertiser_id": "adv-2", "name": "B"}])
    put(api, "/v1/catalog/campaigns", CAMPAIGNS)


def test_lookup_names_the_holdouts_clickhouse_computes(api, ch, rds):
    setup_catalog(api)
    rds.script_flush()  # the first look-up finds the membership script unloaded (NOSCRIPT)
    admin = holdouts_of(api.client, api.admin)

    expected = in_holdout_sql(ch, "cmp-hold", 20.0)
    assert held(admin, "cmp-hold") == expected
    assert 0.14 < len(expected) / len(PROFILES) < 0.26
    assert held(admin, "cmp-other") == in_holdout_sql(ch, "cmp-other", 10.0)
    # the ended flight's holdout would hold profiles, but it is no longer listed
    assert in_holdout_sql(ch, "cmp-ended", 30.0)
    assert not held(admin, "cmp-ended")
    assert not held(admin, "cmp-plain")
    assert all(c == sorted(c) for c in admin.values())

    # advertisers see only their own campaigns' holdouts
    someone = sorted(p for p, c in admin.items() if c)
    adv1 = holdouts_of(api.client, key_for(api, "adv-1"), someone)
    adv2 = holdouts_of(api.client, key_for(api, "adv-2"), someone)
    assert held(adv1, "cmp-hold") == expected and not held(adv1, "cmp-other")
    assert held(adv2, "cmp-other") == held(admin, "cmp-other") and not held(adv2, "cmp-hold")

    # holdout back to 0: removed from the mirror and from every answer
    put(api, "/v1/catalog/campaigns", [campaign("cmp-hold", "adv-1", 0.0)])
    assert not rds.hexists(holdout_mirror.HOLDOUTS_KEY, "cmp-hold")
    assert not held(holdouts_of(api.client, api.admin, sorted(expected)), "cmp-hold")
    # and a larger holdout takes effect at once
    put(api, "/v1/catalog/campaigns", [campaign("cmp-hold", "adv-1", 40.0)])
    assert held(holdouts_of(api.client, api.admin), "cmp-hold") == in_holdout_sql(
        ch, "cmp-hold", 40.0)


def test_openrtb_form_adds_a_holdout_data_object(api, ch):
    setup_catalog(api)
    holds = sorted(in_holdout_sql(ch, "cmp-hold", 20.0) - in_holdout_sql(ch, "cmp-other", 10.0))
    free = sorted(set(PROFILES) - in_holdout_sql(ch, "cmp-hold", 20.0)
                  - in_holdout_sql(ch, "cmp-other", 10.0))
    # a static segment holding one holdout profile and one free one
    made = api.client.post("/v1/segments", headers=api.admin, json={
        "name": "list", "kind": "static", "profile_ids": [holds[0], free[0]]})
    assert made.status_code == 201, made.text
    sid = made.json()["segment_id"]
    assert api.client.post(f"/v1/segments/{sid}/build", headers=api.admin).status_code == 202
    wait_until(lambda: api.client.get(f"/v1/segments/{sid}", headers=api.admin
                                      ).json()["status"] == "ready")

    def rtb(profile_id: str):
        answer = api.client.get(f"/v1/profiles/{profile_id}/segments?format=openrtb",
                                headers=api.admin)
        assert answer.status_code == 200, answer.text
        return answer.json()

    holdout_object = {"id": "adtier-holdout", "name": "adtier holdout",
                      "segment": [{"id": "holdout:cmp-hold"}]}
    assert rtb(holds[0]) == [{"id": "adtier", "name": "adtier", "segment": [{"id": sid}]},
                             holdout_object]
    assert rtb(holds[1]) == [holdout_object]
    assert rtb(free[0]) == [{"id": "adtier", "name": "adtier", "segment": [{"id": sid}]}]
    assert rtb(free[1]) == []
    assert api.client.get(f"/v1/profiles/{holds[1]}/segments", headers=api.admin).json() == {
        "profile_id": holds[1], "segments": [], "holdout_campaigns": ["cmp-hold"]}


def test_mirror_is_restored_at_start_up_and_on_demand(api, ch, rds, settings):
    setup_catalog(api)
    mirror = rds.hgetall(holdout_mirror.HOLDOUTS_KEY)
    assert set(mirror) == {b"cmp-hold", b"cmp-other"}  # not the ended flight, nor 0 %
    before = holdouts_of(api.client, api.admin)

    # the mirror key lost (the versions hash kept): a restart re-applies campaigns FINAL
    rds.delete(holdout_mirror.HOLDOUTS_KEY)
    assert not any(holdouts_of(api.client, api.admin, PROFILES[:50]).values())
    second = msgspec.structs.replace(settings, data_dir=settings.data_dir.parent / "restart")
    with TestClient(create_app(second)) as client:
        assert rds.hgetall(holdout_mirror.HOLDOUTS_KEY) == mirror
        assert holdouts_of(client, api.admin) == before

    # Valkey emptied: restore on demand (what `adtier segments restore` runs)
    rds.delete(holdout_mirror.HOLDOUTS_KEY, holdout_mirror.VERSIONS_KEY, ADV1, ADV2)
    assert holdout_mirror.restore(ch, rds) == 2
    assert rds.hgetall(holdout_mirror.HOLDOUTS_KEY) == mirror
    assert rds.hgetall(ADV1) == {b"cmp-hold": mirror[b"cmp-hold"]}


def test_an_older_write_never_undoes_a_newer_one(rds):
    def item(percent: float) -> Campaign:
        return msgspec.convert(campaign("cmp-x", "adv-1", percent), Campaign)

    holdout_mirror.publish(rds, [item(0.0)], version=2_000)
    holdout_mirror.publish(rds, [item(20.0)], version=1_000)  # a late, older snapshot
    assert not rds.hexists(holdout_mirror.HOLDOUTS_KEY, "cmp-x")
    holdout_mirror.publish(rds, [item(20.0)], version=3_000)
    holdout_mirror.publish(rds, [item(0.0)], version=2_500)
    entry = msgspec.json.decode(rds.hget(holdout_mirror.HOLDOUTS_KEY, "cmp-x"))
    assert entry == {"advertiser_id": "adv-1", "holdout_percent": 20.0,
                     "start_date": "2025-01-01", "end_date": "2030-12-31"}


def test_mirror_holds_live_holdouts_only_one_hash_per_advertiser(api, ch, rds):
    """An ended flight is removed (not kept and skipped on every look-up), at its upsert and
    at a restore once it ends; its version stays, so extending the flight brings it back. Each
    advertiser's look-up reads only its own hash."""
    setup_catalog(api)
    entry = rds.hget(holdout_mirror.HOLDOUTS_KEY, "cmp-hold")
    assert rds.hgetall(ADV1) == {b"cmp-hold": entry}
    assert set(rds.hgetall(ADV2)) == {b"cmp-other"}
    assert rds.hexists(holdout_mirror.VERSIONS_KEY, "cmp-ended")  # removed, version kept

    # a restore after cmp-hold's last day drops it from both hashes, versions kept
    put(api, "/v1/catalog/campaigns", [campaign("cmp-hold", "adv-1", 20.0, end=TODAY)])
    assert rds.hexists(ADV1, "cmp-hold")
    assert holdout_mirror.restore(ch, rds, today=TODAY + dt.timedelta(days=1)) == 1
    assert set(rds.hgetall(holdout_mirror.HOLDOUTS_KEY)) == {b"cmp-other"}
    assert not rds.exists(ADV1)
    assert rds.hexists(holdout_mirror.VERSIONS_KEY, "cmp-hold")

    # an ended flight extended by an upsert returns at once
    put(api, "/v1/catalog/campaigns", [campaign("cmp-ended", "adv-1", 30.0)])
    assert set(rds.hgetall(ADV1)) == {b"cmp-ended"}
    assert held(holdouts_of(api.client, api.admin), "cmp-ended") == in_holdout_sql(
        ch, "cmp-ended", 30.0)

    # a campaign moved to another advertiser leaves the first one's hash
    put(api, "/v1/catalog/campaigns", [campaign("cmp-ended", "adv-2", 30.0)])
    assert not rds.exists(ADV1)
    assert set(rds.hgetall(ADV2)) == {b"cmp-other", b"cmp-ended"}

    # an advertiser's look-up reads its own hash only: another advertiser's entry planted in
    # the admin hash never reaches it
    rds.hset(holdout_mirror.HOLDOUTS_KEY, "cmp-planted", msgspec.json.encode(
        {"advertiser_id": "adv-1", "holdout_percent": 50.0, "start_date": "2025-01-01",
         "end_date": "2030-12-31"}))
    admin = holdouts_of(api.client, api.admin, PROFILES[:40])
    adv1 = holdouts_of(api.client, key_for(api, "adv-1"), PROFILES[:40])
    assert held(admin, "cmp-planted") and not any(adv1.values())


def test_periodic_restore_repairs_a_lost_publish(api, ch, rds, settings, monkeypatch):
    """The campaign reached ClickHouse but not Valkey (the upsert answered 503 and nobody
    retried): the server's loop repairs the mirror without a restart."""
    setup_catalog(api)
    lost = msgspec.convert(campaign("cmp-lost", "adv-2", 25.0), Campaign)
    store.upsert(ch, store.CATALOG["campaigns"], [lost])  # ClickHouse only
    assert not rds.hexists(holdout_mirror.HOLDOUTS_KEY, "cmp-lost")
    assert not held(holdouts_of(api.client, api.admin), "cmp-lost")

    assert holdout_mirror.refresh(ch, rds) == 3  # one pass of the loop
    assert set(rds.hgetall(ADV2)) == {b"cmp-other", b"cmp-lost"}
    assert held(holdouts_of(api.client, api.admin), "cmp-lost") == in_holdout_sql(
        ch, "cmp-lost", 25.0)

    # and the loop itself runs in the server, and stops with it
    rds.delete(holdout_mirror.HOLDOUTS_KEY, ADV2)
    monkeypatch.setattr(holdout_mirror, "REFRESH_S", 0.2)
    second = msgspec.structs.replace(settings, data_dir=settings.data_dir.parent / "loop")
    with TestClient(create_app(second)):
        rds.delete(holdout_mirror.HOLDOUTS_KEY, ADV2)  # after the start-up restore
        wait_until(lambda: rds.hexists(ADV2, "cmp-lost"), timeout=10)
