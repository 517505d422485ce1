"""Feature feed over HTTP on the real stores: live counters, look-up, batch, export."""

from __future__ import annotations

import hashlib
import io

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from adtier.features import batch as features_batch
from adtier.features.schema import EXPORT_SCHEMA, FEATURE_SCHEMA_VERSION, KEY_COLUMNS
from tests.helpers import ad_event, batch, content_event

CAMPAIGN = {
    "campaign_id": "cmp-1", "advertiser_id": "adv-1", "name": "Spring launch",
    "ad_category": "IAB18", "start_date": "2025-03-01", "end_date": "2035-03-31",
    "frequency_cap": 3, "holdout_percent": 0.0,
}
TITLE = {"content_id": "title-1", "name": "A Film", "kind": "film", "genres": ["drama"],
         "maturity": "PG-13", "duration_ms": 5_400_000}


def put(api, path: str, items: list[dict]):
    answer = api.client.put(path, json={"items": items}, headers=api.admin)
    assert answer.status_code == 200, answer.text
    return answer


@pytest.fixture
def recs(api) -> dict[str, str]:
    created = api.client.post("/v1/keys", json={"role": "recs", "name": "recs"}, headers=api.admin)
    assert created.status_code == 201, created.text
    return {"Authorization": f"Bearer {created.json()['key']}"}


def seed(api) -> None:
    put(api, "/v1/catalog/advertisers", [{"advertiser_id": "adv-1", "name": "Acme"}])
    put(api, "/v1/catalog/campaigns", [CAMPAIGN])
    put(api, "/v1/catalog/titles", [TITLE])


def send(api, events: list[dict]) -> None:
    answer = api.post_events(batch(events))
    assert answer.status_code == 200 and answer.json()["accepted"] == len(events), answer.text


def ad_play(profile: str, serving: str, complete: bool = True) -> list[dict]:
    events = [ad_event("impression", profile_id=profile, ad_serving_id=serving)]
    events.append(ad_event("complete" if complete else "skip", profile_id=profile,
                           ad_serving_id=serving))
    return events


def export(api, headers, since: int = 0, fmt: str = "arrow", columns: str | None = None):
    params = {"since": since, "format": fmt}
    if columns is not None:
        params["columns"] = columns
    answer = api.client.get("/v1/features/export", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    watermark = int(answer.headers["x-adtier-watermark"])
    if fmt == "arrow":
        table = ipc.open_stream(io.BytesIO(answer.content)).read_all()
    else:
        table = pq.read_table(io.BytesIO(answer.content))
    return table, watermark


def test_new_event_shows_in_lookup_right_after_a_flush(api, flush, ch, rds, recs):
    seed(api)
    assert api.client.get("/v1/features/profiles/pf-1", headers=recs).status_code == 404
    send(api, ad_play("pf-1", "as-1") + [ad_event("click", profile_id="pf-1")])
    flush()
    got = api.client.get("/v1/features/profiles/pf-1", headers=recs)
    assert got.status_code == 200, got.text
    body = got.json()
    live = body["live"]
    assert (live["impressions"], live["completes"], live["skips"], live["clicks"]) == (1, 1, 0, 1)
    assert live["by_category"]["IAB18"]["impressions"] == 1
    assert live["last_ad"]["campaign_id"] == "cmp-1" and live["last_ad"]["creative_id"] == "cr-1"
    assert body["batch"] is None and body["computed_at"] is None
    # admin may read too; other roles may not
    assert api.client.get("/v1/features/profiles/pf-1", headers=api.admin).status_code == 200
    assert api.client.get("/v1/features/profiles/pf-1", headers=api.ingest).status_code == 403
    assert api.client.get("/v1/features/profiles/pf-1").status_code == 401

    send(api, [content_event("content_heartbeat", profile_id="pf-1", watched_ms=600_000),
               content_event("rating", profile_id="pf-1", value=2)])
    flush()
    result = features_batch.compute(ch, redis_client=rds)
    assert (result.profiles, result.written) == (1, 1)
    body = api.client.get("/v1/features/profiles/pf-1", headers=recs).json()
    b = body["batch"]
    assert body["computed_at"] is not None and b["schema_version"] == FEATURE_SCHEMA_VERSION
    assert (b["impressions"], b["completes"], b["clicks"]) == (1, 1, 1)
    assert b["completion_rate"] == pytest.approx(2 / 3, rel=1e-6)
    assert b["skip_propensity"] == pytest.approx(1 / 3, rel=1e-6)
    assert b["ad_category_affinity"] == {"IAB18": 1.0}
    assert b["genre_affinity"] == {"drama": 1.0}
    assert b["watch_minutes"] == pytest.approx(10.0)
    assert b["ratings"] == 1 and b["rating_sentiment"] == pytest.approx(2 / 3, rel=1e-6)


def test_ad_fatigue_is_negative_when_repeats_are_skipped(api, flush, ch):
    seed(api)
    events = ad_play("pf-f", "as-1") + ad_play("pf-f", "as-2") + \
        ad_play("pf-f", "as-3", complete=False) + ad_play("pf-f", "as-4", complete=False)
    for i, event in enumerate(events):  # plays in order: ordinals 1..4
        event["ts"] = event["ts"] - 10_000 + (i // 2) * 1000
    send(api, events)
    flush()
    features_batch.compute(ch)
    fatigue = ch.query("SELECT ad_fatigue FROM profile_features FINAL").result_rows[0][0]
    # OLS slope of y = (1, 1, 0, 0) on x = (1, 2, 3, 4) is -0.4; shrunk by 4 / 14
    assert fatigue == pytest.approx(-0.4 * 4 / 14, rel=1e-5)


def test_kids_opted_out_and_erased_profiles_get_nothing(api, flush, ch, rds, recs):
    seed(api)
    put(api, "/v1/profiles", [{"profile_id": "pf-kid", "account_id": "acc-1", "kind": "kids"},
                              {"profile_id": "pf-ok", "account_id": "acc-1", "kind": "adult"}])
    assert api.client.post("/v1/privacy/opt-out", json={"profile_ids": ["pf-opt"]},
                           headers=api.admin).status_code in (200, 202)
    send(api, ad_play("pf-kid", "k1") + ad_play("pf-opt", "o1") + ad_play("pf-ok", "ok1"))
    flush()
    keys = {k.decode() for k in rds.scan_iter("adtier:fl:*")}
    assert keys and all("{pf-ok}" in k for k in keys), keys
    for profile in ("pf-kid", "pf-opt"):
        assert api.client.get(f"/v1/features/profiles/{profile}", headers=recs).status_code == 404
    assert api.client.get("/v1/features/profiles/pf-ok", headers=recs).status_code == 200
    features_batch.compute(ch, redis_client=rds)
    assert [r[0] for r in ch.query("SELECT profile_id FROM profile_features FINAL").result_rows] \
        == ["pf-ok"]
    table, _ = export(api, recs)
    assert table.column("profile_id").to_pylist() == ["pf-ok"]

    assert api.client.delete("/v1/privacy/profiles/pf-ok", headers=api.admin).status_code == 202
    assert api.client.get("/v1/features/profiles/pf-ok", headers=recs).status_code == 404


def test_incremental_export_returns_exactly_the_changed_profiles(api, flush, ch, rds, recs):
    seed(api)
    send(api, ad_play("pf-a", "a1") + ad_play("pf-b", "b1") + ad_play("pf-c", "c1"))
    flush()
    first = features_batch.compute(ch, redis_client=rds)
    assert first.written == 3
    table, w1 = export(api, recs)
    assert sorted(table.column("profile_id").to_pylist()) == ["pf-a", "pf-b", "pf-c"]
    assert set(table.column("deleted").to_pylist()) == {0}
    assert w1 == first.watermark

    # nothing changed: nothing written, nothing exported, the watermark stays
    assert features_batch.compute(ch, redis_client=rds).written == 0
    table, w2 = export(api, recs, since=w1)
    assert table.num_rows == 0 and w2 == w1

    # one profile changes
    send(api, ad_play("pf-a", "a2", complete=False))
    flush()
    assert features_batch.compute(ch, redis_client=rds).written == 1
    table, w3 = export(api, recs, since=w2)
    assert table.column("profile_id").to_pylist() == ["pf-a"] and w3 > w2
    assert table.column("skips").to_pylist() == [1]

    # opt-out and erasure propagate to the next export as deletions
    assert api.client.post("/v1/privacy/opt-out", json={"profile_ids": ["pf-b"]},
                           headers=api.admin).status_code in (200, 202)
    assert api.client.delete("/v1/privacy/profiles/pf-c", headers=api.admin).status_code == 202
    table, w4 = export(api, recs, since=w3)
    rows = sorted(table.to_pylist(), key=lambda r: r["profile_sha256"])
    want = sorted([("pf-b", hashlib.sha256(b"pf-b").hexdigest()),
                   ("", hashlib.sha256(b"pf-c").hexdigest())], key=lambda r: r[1])
    assert [(r["profile_id"], r["profile_sha256"]) for r in rows] == want
    assert all(r["deleted"] == 1 for r in rows) and w4 > w3
    # and their live counters are gone
    profiles = {k.decode().split("{")[1].split("}")[0] for k in rds.scan_iter("adtier:fl:*")}
    assert profiles == {"pf-a"}
    # the erased id is gone from the table, not only hidden
    assert ch.query("SELECT count() FROM profile_features WHERE profile_id = 'pf-c'"
                    ).result_rows[0][0] == 0
    # a full snapshot: the live profile and the two tombstones
    table, _ = export(api, recs)
    assert sorted(zip(table.column("profile_id").to_pylist(), table.column("deleted").to_pylist())
                  ) == [("", 1), ("pf-a", 0), ("pf-b", 1)]
    table, w5 = export(api, recs, since=w4)
    assert table.num_rows == 0 and w5 == w4


def test_export_round_trips_through_pyarrow_with_a_stable_schema(api, flush, ch, recs):
    seed(api)
    send(api, ad_play("pf-1", "as-1") + ad_play("pf-2", "as-2", complete=False))
    flush()
    features_batch.compute(ch, chunk_profiles=1)
    arrow, wa = export(api, recs)
    parquet, wp = export(api, recs, fmt="parquet")
    assert wa == wp
    assert arrow.schema.equals(EXPORT_SCHEMA, check_metadata=True)
    assert parquet.schema.remove_metadata().equals(EXPORT_SCHEMA.remove_metadata())
    assert arrow.sort_by("profile_id").equals(parquet.sort_by("profile_id").cast(arrow.schema))
    rows = {r["profile_id"]: r for r in arrow.to_pylist()}
    assert rows["pf-1"]["completes"] == 1 and rows["pf-2"]["skips"] == 1
    assert dict(rows["pf-1"]["ad_category_affinity"]) == {"IAB18": 1.0}

    narrow, _ = export(api, recs, columns="impressions,skip_propensity")
    assert narrow.schema.names == [*KEY_COLUMNS[:3], "impressions", "skip_propensity",
                                   "watermark"]
    bad = api.client.get("/v1/features/export", params={"columns": "nope"}, headers=recs)
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_request"
    assert api.client.get("/v1/features/export", params={"format": "csv"},
                          headers=recs).status_code == 400
    assert api.client.get("/v1/features/export", headers=api.ingest).status_code == 403
    empty = pa.Table.from_batches([], schema=EXPORT_SCHEMA)
    assert empty.num_rows == 0


def test_compute_endpoint_runs_in_the_background(api, flush, ch, recs):
    from tests.conftest import wait_until

    seed(api)
    send(api, ad_play("pf-1", "as-1"))
    flush()
    assert api.client.post("/v1/features/compute", headers=recs).status_code == 403
    started = api.client.post("/v1/features/compute", headers=api.admin)
    assert started.status_code == 202 and started.json()["running"] is True
    status = wait_until(lambda: (s := api.client.get("/v1/features/compute", headers=recs).json())
                        and not s["running"] and s)
    assert status["error"] is None and status["last"]["written"] == 1
    body = api.client.get("/v1/features/profiles/pf-1", headers=recs).json()
    assert body["batch"]["completion_rate"] == 0.6666667


def test_export_read_in_many_hash_slices_returns_every_row_once(api, flush, ch, rds, recs,
                                                                 monkeypatch):
    from adtier.features import export as features_export

    seed(api)
    profiles = [f"pf-{i}" for i in range(7)]
    send(api, [e for i, p in enumerate(profiles) for e in ad_play(p, f"as-{i}")])
    flush()
    features_batch.compute(ch, redis_client=rds)
    whole, w1 = export(api, recs)
    monkeypatch.setattr(features_export, "_SLICE_ROWS", 2)  # 7 rows: 4 slices of the hash space
    assert len(features_export._slices(7)) == 4
    sliced, w2 = export(api, recs)
    assert w1 == w2 and sorted(sliced.column("profile_id").to_pylist()) == profiles
    assert sliced.sort_by("profile_id").equals(whole.sort_by("profile_id"))
