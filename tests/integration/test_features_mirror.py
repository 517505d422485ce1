"""The point look-up's Valkey mirror on the real stores: served without ClickHouse, exclusions
published by the catalog routes at once, rebuilt after Valkey is replaced, newest row wins."""

from __future__ import annotations

import hashlib

import pytest
import redis

from adtier.features import batch as features_batch
from adtier.features import mirror
from adtier.features.scheduler import FeatureScheduler
from tests.integration.test_features_http import ad_play, put, recs, seed, send  # noqa: F401


def lookup(api, headers, profile: str):
    return api.client.get(f"/v1/features/profiles/{profile}", headers=headers)


def sha(profile: str) -> bytes:
    return hashlib.sha256(profile.encode()).hexdigest().encode()


def test_lookup_is_served_from_valkey_alone(api, flush, ch, rds, recs):
    seed(api)
    send(api, ad_play("pf-1", "as-1") + ad_play("pf-2", "as-2", complete=False))
    flush()
    features_batch.compute(ch, redis_client=rds)
    assert mirror.is_ready(rds) and rds.exists(mirror.row_key("pf-1"))
    before = lookup(api, recs, "pf-1").json()
    # ClickHouse no longer has the row: the answer cannot have come from there
    ch.command("TRUNCATE TABLE profile_features")
    after = lookup(api, recs, "pf-1")
    assert after.status_code == 200 and after.json() == before
    assert after.json()["batch"]["completes"] == 1
    assert lookup(api, recs, "pf-2").json()["batch"]["skips"] == 1


def test_unknown_means_no_batch_row_and_no_live_counters(api, flush, ch, rds, recs):
    seed(api)
    # in the catalog, but nothing to serve: unknown
    put(api, "/v1/profiles", [{"profile_id": "pf-cat", "account_id": "acc-1", "kind": "adult"}])
    mirror.rebuild(ch, rds)  # answered from the mirror (the fallback would agree)
    assert lookup(api, recs, "pf-cat").status_code == 404
    assert lookup(api, recs, "pf-nobody").status_code == 404
    assert lookup(api, recs, "x" * 65).status_code == 404


@pytest.mark.parametrize("how", ["kids", "opt_out", "erase"])
def test_exclusions_are_published_at_once(api, flush, ch, rds, recs, how):
    seed(api)
    send(api, ad_play("pf-x", "x1") + ad_play("pf-y", "y1"))
    flush()
    features_batch.compute(ch, redis_client=rds)
    assert lookup(api, recs, "pf-x").json()["batch"]["impressions"] == 1
    if how == "kids":
        put(api, "/v1/profiles", [{"profile_id": "pf-x", "account_id": "acc-1", "kind": "kids"}])
    elif how == "opt_out":
        assert api.client.post("/v1/privacy/opt-out", json={"profile_ids": ["pf-x"]},
                               headers=api.admin).status_code == 200
    else:
        assert api.client.delete("/v1/privacy/profiles/pf-x", headers=api.admin).status_code == 202
    # no compute, no export in between: the route itself told the mirror
    assert lookup(api, recs, "pf-x").status_code == 404
    assert rds.sismember(mirror.EXCLUDED_KEY, sha("pf-x"))
    assert not rds.exists(mirror.row_key("pf-x"))
    assert not [k for k in rds.scan_iter("adtier:fl:{pf-x}*")]  # live counters gone too
    assert lookup(api, recs, "pf-y").status_code == 200


def test_a_replaced_valkey_falls_back_then_is_rebuilt(api, flush, ch, rds, recs):
    seed(api)
    put(api, "/v1/profiles", [{"profile_id": "pf-kid", "account_id": "acc-1", "kind": "kids"}])
    send(api, ad_play("pf-1", "as-1") + ad_play("pf-kid", "k1"))
    flush()
    features_batch.compute(ch, redis_client=rds)
    expected = lookup(api, recs, "pf-1").json()
    rds.flushall()  # Valkey replaced: counters, mirror and the ready mark are all gone
    # not ready: ClickHouse answers (same batch row, still no data for the kid). The app's own
    # scheduler may rebuild at any moment (it checks every few seconds): either way, the same.
    fallback = lookup(api, recs, "pf-1")
    assert fallback.status_code == 200 and fallback.json()["batch"] == expected["batch"]
    assert lookup(api, recs, "pf-kid").status_code == 404
    scheduler = FeatureScheduler(api.settings.clickhouse_dsn, rds, interval_s=0)
    assert scheduler.tick() in ("rebuilt", "idle")  # "idle": the app's scheduler was first
    assert scheduler.tick() == "idle"
    assert mirror.is_ready(rds) and rds.sismember(mirror.EXCLUDED_KEY, sha("pf-kid"))
    assert not rds.exists(mirror.row_key("pf-kid"))
    assert lookup(api, recs, "pf-1").json()["batch"] == expected["batch"]


def test_a_rebuild_never_replaces_a_newer_row(ch, rds):
    newer = mirror.encode_row(20, None, [0] * len(mirror.BATCH_NAMES))
    older = mirror.encode_row(10, None, [1] * len(mirror.BATCH_NAMES))
    mirror.put_rows(rds, [("pf-1", newer)])
    mirror.put_rows(rds, [("pf-1", older), ("pf-2", older)])
    assert rds.get(mirror.row_key("pf-1")) == newer
    assert rds.get(mirror.row_key("pf-2")) == older
    # a compute whose snapshot predates an exclusion does not write the row back
    mirror.exclude(rds, ["pf-1"])
    mirror.put_rows(rds, [("pf-1", mirror.encode_row(30, None, [0] * len(mirror.BATCH_NAMES)))])
    assert not rds.exists(mirror.row_key("pf-1"))


def test_sync_excluded_follows_clickhouse_and_keeps_concurrent_additions(api, ch, rds):
    put(api, "/v1/profiles", [{"profile_id": "pf-k", "account_id": "acc-1", "kind": "kids"}])
    assert rds.sismember(mirror.EXCLUDED_KEY, sha("pf-k"))
    # the profile is made adult: it stays excluded until the set is re-derived (conservative)
    put(api, "/v1/profiles", [{"profile_id": "pf-k", "account_id": "acc-1", "kind": "adult"}])
    assert rds.sismember(mirror.EXCLUDED_KEY, sha("pf-k"))
    added, removed = mirror.sync_excluded(ch, rds)
    assert (added, removed) == (0, 1) and not rds.sismember(mirror.EXCLUDED_KEY, sha("pf-k"))



def test_a_failed_mirror_write_marks_the_mirror_not_ready(ch, rds):
    """A compute's rows are in ClickHouse when the copy to Valkey fails, and the next compute
    skips them as unchanged: the mirror must stop claiming to be ready (look-ups then read
    ClickHouse and the scheduler rebuilds it) rather than serve the older row."""
    mirror.rebuild(ch, rds)
    assert mirror.is_ready(rds)
    row = mirror.encode_row(5, None, [0] * len(mirror.BATCH_NAMES))
    rds.config_set("maxmemory", "1")  # Valkey refuses writes (DEL still works)
    try:
        with pytest.raises(redis.ResponseError):
            features_batch._mirror(rds, [("pf-1", row)])
    finally:
        rds.config_set("maxmemory", "0")
    assert not mirror.is_ready(rds) and not rds.exists(mirror.row_key("pf-1"))
