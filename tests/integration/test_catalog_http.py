"""Catalog, profiles and privacy over HTTP, on the real stores (chdb or a server, and Valkey)."""

from __future__ import annotations

import hashlib

import pytest

from adtier.catalog.store import delete_profile_rows
from adtier.privacy.exclusions import excluded_profile_hashes_sql, excluded_profiles_sql
from tests.helpers import ad_event, batch, content_event
from tests.integration.conftest import count

CAMPAIGN = {
    "campaign_id": "cmp-1", "advertiser_id": "adv-1", "name": "Spring launch",
    "ad_category": "IAB18", "start_date": "2025-03-01", "end_date": "2025-03-31",
    "frequency_cap": 3, "holdout_percent": 10.0,
}
TITLE = {"content_id": "film-1", "name": "A Film", "kind": "film", "genres": ["drama"],
         "maturity": "PG-13", "duration_ms": 5_400_000}


def put(api, path: str, items: list[dict], headers: dict | None = None):
    return api.client.put(path, json={"items": items}, headers=headers or api.admin)


def seed_campaign(api) -> None:
    assert put(api, "/v1/catalog/advertisers", [{"advertiser_id": "adv-1", "name": "Acme"}]
               ).json() == {"upserted": 1}
    assert put(api, "/v1/catalog/campaigns", [CAMPAIGN]).json() == {"upserted": 1}


def excluded(ch) -> set[str]:
    return {row[0] for row in ch.query(excluded_profiles_sql()).result_rows}


def excluded_hashes(ch) -> set[int]:
    return {row[0] for row in ch.query(excluded_profile_hashes_sql()).result_rows}


def city_hash(ch, profile_id: str) -> int:
    return ch.query("SELECT cityHash64({p:String})", parameters={"p": profile_id}).result_rows[0][0]


# ---- upserts ---------------------------------------------------------------------------------


def test_upsert_and_reupsert_latest_wins(api, ch):
    seed_campaign(api)
    changed = {**CAMPAIGN, "name": "Spring launch v2", "frequency_cap": 0,
               "promoted_title_id": "film-1", "promoted_genre": "drama"}
    assert put(api, "/v1/catalog/campaigns", [changed]).json() == {"upserted": 1}
    got = api.client.get("/v1/catalog/campaigns/cmp-1", headers=api.admin)
    assert got.status_code == 200
    body = got.json()
    assert {k: body[k] for k in changed} == changed
    assert body["updated_at"].endswith(("Z", "+00:00"))
    assert count(ch, "campaigns FINAL") == 1

    # a repeated id inside one request: the last item wins, and it counts once
    answer = put(api, "/v1/catalog/advertisers", [{"advertiser_id": "adv-2", "name": "first"},
                                                  {"advertiser_id": "adv-2", "name": "second"}])
    assert answer.json() == {"upserted": 1}
    renamed = api.client.get("/v1/catalog/advertisers/adv-2", headers=api.admin).json()
    assert renamed["name"] == "second"


def test_titles_and_creatives(api, ch):
    seed_campaign(api)
    titles = [TITLE,
              {"content_id": "show-1", "name": "A Show", "kind": "series",
               "genres": ["comedy", "kids"], "maturity": "TV-Y7", "duration_ms": 0},
              {"content_id": "show-1-e1", "name": "Pilot", "kind": "episode", "series_id": "show-1",
               "genres": ["comedy"], "maturity": "TV-Y7", "duration_ms": 1_320_000}]
    assert put(api, "/v1/catalog/titles", titles).json() == {"upserted": 3}
    episode = api.client.get("/v1/catalog/titles/show-1-e1", headers=api.admin).json()
    assert episode["series_id"] == "show-1" and episode["genres"] == ["comedy"]
    film = api.client.get("/v1/catalog/titles/film-1", headers=api.admin).json()
    assert film["series_id"] is None and film["maturity"] == "PG-13"
    creatives = [{"creative_id": "cr-1", "campaign_id": "cmp-1", "name": "30s",
                  "duration_ms": 30_000}]
    assert put(api, "/v1/catalog/creatives", creatives).json() == {"upserted": 1}
    assert count(ch, "creatives FINAL", "campaign_id = 'cmp-1'") == 1


def test_listing_pages_in_id_order(api):
    items = [{"advertiser_id": f"adv-{i:02d}", "name": f"Advertiser {i}"} for i in range(25)]
    assert put(api, "/v1/catalog/advertisers", items).json() == {"upserted": 25}
    assert put(api, "/v1/catalog/advertisers", [{"advertiser_id": "adv-03", "name": "renamed"}]
               ).status_code == 200
    first = api.client.get("/v1/catalog/advertisers?limit=10", headers=api.admin).json()
    assert first["total"] == 25 and first["limit"] == 10 and first["offset"] == 0
    assert [r["advertiser_id"] for r in first["items"]] == [f"adv-{i:02d}" for i in range(10)]
    assert first["items"][3]["name"] == "renamed"
    last = api.client.get("/v1/catalog/advertisers?limit=10&offset=20", headers=api.admin).json()
    assert [r["advertiser_id"] for r in last["items"]] == [f"adv-{i:02d}" for i in range(20, 25)]
    empty = api.client.get("/v1/catalog/titles", headers=api.admin).json()
    assert empty == {"items": [], "total": 0, "limit": 100, "offset": 0}
    assert api.client.get("/v1/catalog/advertisers?limit=0", headers=api.admin).status_code == 400
    missing = api.client.get("/v1/catalog/campaigns/nope", headers=api.admin)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


# ---- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "where"), [
    ({"campaign_id": "x" * 65}, "$.items[1].campaign_id"),
    ({"campaign_id": ""}, "$.items[1].campaign_id"),
    ({"ad_category": "Sports"}, "$.items[1].ad_category"),
    ({"ad_category": "IAB27"}, "$.items[1].ad_category"),
    ({"start_date": "2025-02-30"}, "$.items[1].start_date"),
    ({"end_date": "2025-02-01"}, "$.items[1]"),             # before start_date
    ({"frequency_cap": -1}, "$.items[1].frequency_cap"),
    ({"frequency_cap": "3"}, "$.items[1].frequency_cap"),   # strict types, no coercion
    ({"holdout_percent": 50.5}, "$.items[1].holdout_percent"),
    ({"holdout_percent": -1}, "$.items[1].holdout_percent"),
    ({"surprise": 1}, "$.items[1]"),                        # unknown fields are refused
    ({"promoted_title_id": "t" * 65}, "$.items[1].promoted_title_id"),
])
def test_bad_campaign_item_names_index_and_field(api, ch, change, where):
    seed_campaign(api)
    bad = {**CAMPAIGN, "campaign_id": "cmp-2", **change}
    answer = put(api, "/v1/catalog/campaigns", [CAMPAIGN, bad])
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["error"] == "invalid_item"
    assert f"`{where}`" in body["detail"]
    if where == "$.items[1]" and "end_date" in change:
        assert "end_date" in body["detail"]
    assert count(ch, "campaigns") == 1  # nothing of a refused request is written


@pytest.mark.parametrize(("item", "fragment"), [
    ({**TITLE, "kind": "episode"}, "series_id"),
    ({**TITLE, "series_id": "show-1"}, "series_id"),
    ({**TITLE, "maturity": "PG13"}, "$.items[0].maturity"),
    ({**TITLE, "kind": "short"}, "$.items[0].kind"),
    ({**TITLE, "genres": "drama"}, "$.items[0].genres"),
    ({k: v for k, v in TITLE.items() if k != "name"}, "`name`"),
])
def test_bad_title_item(api, item, fragment):
    answer = put(api, "/v1/catalog/titles", [item])
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_item"
    assert fragment in answer.json()["detail"] and "$.items[0]" in answer.json()["detail"]


def test_bad_bodies(api):
    too_many = [{"advertiser_id": f"a{i}", "name": "n"} for i in range(10_001)]
    answer = put(api, "/v1/catalog/advertisers", too_many)
    assert answer.status_code == 400 and "10000" in answer.json()["detail"]
    not_json = api.client.put("/v1/catalog/advertisers", content=b"{nope", headers=api.admin)
    assert not_json.status_code == 400 and not_json.json()["error"] == "bad_json"
    no_items = api.client.put("/v1/catalog/advertisers", json={"rows": []}, headers=api.admin)
    assert no_items.status_code == 400 and no_items.json()["error"] == "invalid_request"
    assert put(api, "/v1/catalog/advertisers", []).json() == {"upserted": 0}


def test_a_full_batch_of_10000_items(api, ch):
    items = [{"advertiser_id": f"adv-{i}", "name": f"n{i}"} for i in range(10_000)]
    assert put(api, "/v1/catalog/advertisers", items).json() == {"upserted": 10_000}
    campaigns = [{**CAMPAIGN, "campaign_id": f"cmp-{i}", "advertiser_id": f"adv-{i}"}
                 for i in range(10_000)]
    assert put(api, "/v1/catalog/campaigns", campaigns).json() == {"upserted": 10_000}
    assert count(ch, "campaigns FINAL") == 10_000


# ---- references ------------------------------------------------------------------------------


def test_campaigns_need_a_known_advertiser(api, ch):
    seed_campaign(api)
    orphans = [{**CAMPAIGN, "campaign_id": "cmp-2"},
               {**CAMPAIGN, "campaign_id": "cmp-3", "advertiser_id": "adv-missing"},
               {**CAMPAIGN, "campaign_id": "cmp-4", "advertiser_id": "adv-missing"}]
    answer = put(api, "/v1/catalog/campaigns", orphans)
    assert answer.status_code == 400
    body = answer.json()
    assert body["error"] == "unknown_reference"
    assert "adv-missing" in body["detail"] and "`$.items[1].advertiser_id`" in body["detail"]
    assert "1 more" in body["detail"]
    assert count(ch, "campaigns") == 1
    # once the advertiser exists (an earlier request), the same campaigns are accepted
    put(api, "/v1/catalog/advertisers", [{"advertiser_id": "adv-missing", "name": "Late"}])
    assert put(api, "/v1/catalog/campaigns", orphans).json() == {"upserted": 3}


def test_creatives_need_a_known_campaign(api):
    seed_campaign(api)
    items = [{"creative_id": "cr-1", "campaign_id": "cmp-1", "name": "ok", "duration_ms": 15_000},
             {"creative_id": "cr-2", "campaign_id": "cmp-nope", "name": "bad",
              "duration_ms": 15_000}]
    answer = put(api, "/v1/catalog/creatives", items)
    assert answer.status_code == 400 and answer.json()["error"] == "unknown_reference"
    assert "`$.items[1].campaign_id`" in answer.json()["detail"]
    assert "cmp-nope" in answer.json()["detail"]


# ---- auth ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), [
    ("PUT", "/v1/catalog/advertisers", {"items": []}),
    ("PUT", "/v1/catalog/campaigns", {"items": []}),
    ("PUT", "/v1/catalog/creatives", {"items": []}),
    ("PUT", "/v1/catalog/titles", {"items": []}),
    ("GET", "/v1/catalog/advertisers", None),
    ("GET", "/v1/catalog/campaigns/cmp-1", None),
    ("PUT", "/v1/profiles", {"items": []}),
    ("GET", "/v1/profiles", None),
    ("POST", "/v1/privacy/opt-out", {"profile_ids": []}),
    ("DELETE", "/v1/privacy/profiles/pf-1", None),
    ("GET", "/v1/privacy/profiles/pf-1", None),
])
def test_admin_only(api, method, path, body):
    advertiser = api.client.post("/v1/keys", json={"role": "advertiser", "advertiser_id": "adv-1"},
                                 headers=api.admin).json()["key"]
    for headers, status in ((api.ingest, 403), ({"Authorization": f"Bearer {advertiser}"}, 403),
                            ({}, 401)):
        answer = api.client.request(method, path, json=body, headers=headers)
        assert answer.status_code == status, (headers, answer.text)
        assert answer.json()["error"] in ("forbidden", "unauthorized")


# ---- profiles and privacy --------------------------------------------------------------------


def test_profiles_kids_flag_and_opt_out(api, ch):
    profiles = [{"profile_id": "pf-adult", "account_id": "acc-1", "kind": "adult"},
                {"profile_id": "pf-kid", "account_id": "acc-1", "kind": "kids"},
                {"profile_id": "pf-grows-up", "account_id": "acc-1", "kind": "kids"}]
    assert put(api, "/v1/profiles", profiles).json() == {"upserted": 3}
    bad = put(api, "/v1/profiles", [{"profile_id": "p", "account_id": "a", "kind": "teen"}])
    assert bad.status_code == 400 and "$.items[0].kind" in bad.json()["detail"]
    # a kids profile re-declared adult is no longer excluded: the latest version counts
    put(api, "/v1/profiles",
        [{"profile_id": "pf-grows-up", "account_id": "acc-1", "kind": "adult"}])
    listed = api.client.get("/v1/profiles", headers=api.admin).json()
    assert {p["profile_id"]: p["kind"] for p in listed["items"]} == {
        "pf-adult": "adult", "pf-kid": "kids", "pf-grows-up": "adult"}
    assert excluded(ch) == {"pf-kid"}

    answer = api.client.post("/v1/privacy/opt-out", json={"profile_ids": ["pf-adult", "pf-other",
                                                                          "pf-adult"]},
                             headers=api.admin)
    assert answer.status_code == 200 and answer.json() == {"opted_out": 2, "already_opted_out": 0}
    first_time = api.client.get("/v1/privacy/profiles/pf-adult", headers=api.admin).json()
    assert first_time["opted_out"] and first_time["excluded"] and first_time["kind"] == "adult"
    # sticky: opting out again keeps the first time; re-upserting the profile changes nothing
    again = api.client.post("/v1/privacy/opt-out", json={"profile_ids": ["pf-adult"]},
                            headers=api.admin)
    assert again.json() == {"opted_out": 1, "already_opted_out": 1}
    put(api, "/v1/profiles", [{"profile_id": "pf-adult", "account_id": "acc-1", "kind": "adult"}])
    later = api.client.get("/v1/privacy/profiles/pf-adult", headers=api.admin).json()
    assert later["opted_out_at"] == first_time["opted_out_at"] and later["excluded"]
    assert excluded(ch) == {"pf-kid", "pf-adult", "pf-other"}
    assert excluded_hashes(ch) == {city_hash(ch, p) for p in ("pf-kid", "pf-adult", "pf-other")}
    grown = api.client.get("/v1/privacy/profiles/pf-grows-up", headers=api.admin).json()
    assert grown == {"profile_id": "pf-grows-up", "kind": "adult", "opted_out": False,
                     "opted_out_at": None, "erased": False, "last_erased_at": None,
                     "excluded": False}
    bad = api.client.post("/v1/privacy/opt-out", json={"profile_ids": ["x" * 65]},
                          headers=api.admin)
    assert bad.status_code == 400 and "$.profile_ids[0]" in bad.json()["detail"]


def test_excluded_profiles_sql_works_as_a_filter(api, ch, flush):
    put(api, "/v1/profiles", [{"profile_id": "pf-kid", "account_id": "acc-1", "kind": "kids"}])
    sent = api.post_events(batch([ad_event(profile_id=p) for p in ("pf-kid", "pf-a", "pf-b")]))
    assert sent.status_code == 200 and sent.json()["accepted"] == 3, sent.text
    flush()
    assert count(ch, "ad_events") == 3
    rows = ch.query("SELECT DISTINCT profile_id FROM ad_events "
                    f"WHERE profile_id NOT IN ({excluded_profiles_sql()}) ORDER BY profile_id"
                    ).result_rows
    assert rows == [("pf-a",), ("pf-b",)]
    rows = ch.query("SELECT DISTINCT profile_id FROM ad_events "
                    f"WHERE profile_hash NOT IN ({excluded_profile_hashes_sql()}) "
                    "ORDER BY profile_id"
                    ).result_rows
    assert rows == [("pf-a",), ("pf-b",)]


def test_erasure_removes_only_that_profiles_rows(api, ch, flush):
    put(api, "/v1/profiles", [{"profile_id": "pf-1", "account_id": "acc-1", "kind": "adult"},
                              {"profile_id": "pf-2", "account_id": "acc-1", "kind": "adult"}])
    events = ([ad_event(t, profile_id=p)
               for p in ("pf-1", "pf-2") for t in ("impression", "complete")]
              + [content_event(profile_id=p) for p in ("pf-1", "pf-2", "pf-2")])
    assert api.post_events(batch(events)).json()["accepted"] == len(events)
    flush()
    assert count(ch, "ad_events", "profile_id = 'pf-1'") == 2
    assert count(ch, "content_events", "profile_id = 'pf-1'") == 1

    answer = api.client.delete("/v1/privacy/profiles/pf-1", headers=api.admin)
    assert answer.status_code == 202 and answer.json() == {"profile_id": "pf-1", "erased": True}
    assert count(ch, "ad_events", "profile_id = 'pf-1'") == 0
    assert count(ch, "content_events", "profile_id = 'pf-1'") == 0
    assert count(ch, "profiles FINAL", "profile_id = 'pf-1'") == 0
    # everyone else is untouched
    assert count(ch, "ad_events", "profile_id = 'pf-2'") == 2
    assert count(ch, "content_events", "profile_id = 'pf-2'") == 2
    assert count(ch, "profiles FINAL", "profile_id = 'pf-2'") == 1
    # the erasure is recorded by hash, never by id
    recorded = ch.query("SELECT profile_hash, profile_sha256 FROM erasures").result_rows
    assert recorded == [(city_hash(ch, "pf-1"), hashlib.sha256(b"pf-1").hexdigest())]
    assert count(ch, "erasures", "position(profile_sha256, 'pf-1') > 0") == 0
    status = api.client.get("/v1/privacy/profiles/pf-1", headers=api.admin).json()
    assert status["erased"] and status["excluded"] and status["kind"] is None

    # an event of the erased profile that arrives later is stored, but never targeted
    assert api.post_events(batch([ad_event(profile_id="pf-1")])).json()["accepted"] == 1
    flush()
    assert count(ch, "ad_events", "profile_id = 'pf-1'") == 1
    assert excluded(ch) == {"pf-1"}
    assert city_hash(ch, "pf-1") in excluded_hashes(ch)

    # idempotent, and an unknown profile is "erased" too (no existence oracle)
    assert api.client.delete("/v1/privacy/profiles/pf-1", headers=api.admin).status_code == 202
    assert api.client.delete("/v1/privacy/profiles/pf-never", headers=api.admin).status_code == 202
    assert count(ch, "ad_events", "profile_id = 'pf-1'") == 0
    assert count(ch, "erasures") == 3
    too_long = api.client.delete("/v1/privacy/profiles/" + "x" * 65, headers=api.admin)
    assert too_long.status_code == 400


def test_mutation_fallback_deletes_too(api, ch, flush):
    """The fallback path (ALTER TABLE ... DELETE, synchronous) used where lightweight DELETE is
    refused; exercised directly since chdb and current servers accept lightweight DELETE."""
    assert api.post_events(batch([ad_event(profile_id=p) for p in ("pf-1", "pf-2")])
                           ).json()["accepted"] == 2
    flush()
    assert delete_profile_rows(ch, "ad_events", "pf-1", lightweight=False) == "mutation"
    assert count(ch, "ad_events", "profile_id = 'pf-1'") == 0
    assert count(ch, "ad_events", "profile_id = 'pf-2'") == 1
    assert delete_profile_rows(ch, "ad_events", "pf-2") == "lightweight"
    assert count(ch, "ad_events") == 0
