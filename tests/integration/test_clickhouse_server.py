"""The ClickHouse-server path (clickhouse-connect over HTTP).

Every integration test already runs against ``ADTIER_CLICKHOUSE_URL`` when it is set (see the
``clickhouse_dsn`` fixture); these checks are specific to a server and say why they skip."""

from __future__ import annotations

import os
import uuid

import pytest

from adtier.store import connect
from adtier.store.migrate import apply_migrations

SERVER = os.environ.get("ADTIER_CLICKHOUSE_URL", "")
needs_server = pytest.mark.skipif(
    not SERVER.startswith("http"),
    reason="ADTIER_CLICKHOUSE_URL is not set to a ClickHouse server (http://host:8123): the "
    "server path is not exercised here; chdb ran the same contract tests",
)


def _insert_twice(client, batch_id: str) -> None:
    """One impression sent twice under the same token, as a flusher retries a flush."""
    row = (
        '{"event_id":"%s","type":"impression","ts":1764285855.123,"client_ts":1764285855.123,'
        '"received_at":1764285855.2,"account_id":"a","profile_id":"p","device":"tv",'
        '"country":"US","campaign_id":"c","creative_id":"cr","ad_serving_id":"as",'
        '"source":"batch","batch_id":"%s","key_id":"k"}\n' % (uuid.uuid4(), batch_id)
    ).encode()
    for _ in range(2):
        client.raw_insert("ad_events", insert_block=row, fmt="JSONEachRow",
                          settings={"insert_deduplication_token": batch_id})


@needs_server
def test_migrations_and_dedup_token_on_a_server():
    client = connect(SERVER)
    apply_migrations(client)
    assert apply_migrations(client) == []  # idempotent
    batch_id = "srv-" + uuid.uuid4().hex
    _insert_twice(client, batch_id)
    got = client.query("SELECT count() FROM ad_events WHERE batch_id = {b:String}",
                       parameters={"b": batch_id}).result_rows
    assert got == [(1,)]


# ---- cluster mode: ON CLUSTER migrations, Replicated tables (one shard, N replicas) -----------

CLUSTER = os.environ.get("ADTIER_CLICKHOUSE_CLUSTER", "")
needs_cluster = pytest.mark.skipif(
    not (SERVER.startswith("http") and CLUSTER),
    reason="needs ADTIER_CLICKHOUSE_URL (a node of the cluster, http://host:8123) and "
    "ADTIER_CLICKHOUSE_CLUSTER (its name in remote_servers: one shard, N replicas, with Keeper "
    "and the {shard}/{replica} macros); no cluster here. The rewrite of every migration is "
    "checked by ClickHouse's parser in tests/unit/test_migrate.py",
)


@pytest.fixture
def cluster_db():
    """A fresh database on every replica, dropped afterwards (SYNC frees its Keeper paths)."""
    from adtier.store.cluster import validate_cluster

    validate_cluster(CLUSTER)  # it goes into DDL below
    name = "adtier_cluster_" + uuid.uuid4().hex[:12]
    admin = connect(SERVER)
    admin.command(f"CREATE DATABASE {name} ON CLUSTER {CLUSTER}")
    base = SERVER.split("?")[0].rstrip("/")
    scheme, rest = base.split("://", 1)
    client = connect(f"{scheme}://{rest.split('/')[0]}/{name}")
    try:
        yield name, client
    finally:
        client.close()
        admin.command(f"DROP DATABASE IF EXISTS {name} ON CLUSTER {CLUSTER} SYNC")
        admin.close()


@needs_cluster
def test_migrations_on_a_cluster_replicate_every_table_and_keep_the_dedup_token(cluster_db):
    from adtier.store.migrate import MigrationError, discover

    name, client = cluster_db
    applied = apply_migrations(client, cluster=CLUSTER)
    assert [m.version for m in applied] == [m.version for m in discover()]
    assert apply_migrations(client, cluster=CLUSTER) == []  # idempotent
    replicas = client.query("SELECT count() FROM system.clusters WHERE cluster = {c:String}",
                            parameters={"c": CLUSTER}).result_rows[0][0]
    # every table exists on every replica, with a Replicated engine (views have no data of
    # their own; their targets are replicated tables)
    rows = client.query(
        f"SELECT name, engine, count() FROM clusterAllReplicas({CLUSTER}, system.tables) "
        "WHERE database = {d:String} GROUP BY name, engine", parameters={"d": name}).result_rows
    assert rows
    for table, engine, copies in rows:
        assert copies == replicas, (table, copies, replicas)
        assert engine.startswith("Replicated") or engine == "MaterializedView", (table, engine)
    # the ledger replicated too: every replica knows what was applied
    client.command(f"SYSTEM SYNC REPLICA ON CLUSTER {CLUSTER} {name}.schema_migrations")
    ledgers = client.query(
        f"SELECT hostName(), count() FROM clusterAllReplicas({CLUSTER}, {name}.schema_migrations) "
        "GROUP BY 1").result_rows
    assert len(ledgers) == replicas and {n for _, n in ledgers} == {len(discover())}
    # the flusher's retried insert (same token) is dropped on a Replicated table
    batch_id = "cl-" + uuid.uuid4().hex
    _insert_twice(client, batch_id)
    client.command(f"SYSTEM SYNC REPLICA ON CLUSTER {CLUSTER} {name}.ad_events")
    counts = client.query(
        f"SELECT hostName(), count() FROM clusterAllReplicas({CLUSTER}, {name}.ad_events) "
        "WHERE batch_id = {b:String} GROUP BY 1", parameters={"b": batch_id}).result_rows
    assert len(counts) == replicas and {n for _, n in counts} == {1}
    # a lightweight delete on one replica reaches all of them (it is a replicated mutation)
    client.command("DELETE FROM ad_events WHERE batch_id = {b:String}", parameters={"b": batch_id})
    client.command(f"SYSTEM SYNC REPLICA ON CLUSTER {CLUSTER} {name}.ad_events")
    left = client.query(
        f"SELECT count() FROM clusterAllReplicas({CLUSTER}, {name}.ad_events) "
        "WHERE batch_id = {b:String}", parameters={"b": batch_id}).result_rows[0][0]
    assert left == 0
    # the ledger says "cluster": a single-node run on this database is refused
    with pytest.raises(MigrationError, match="migrated ON CLUSTER"):
        apply_migrations(client)


def test_cluster_mode_refuses_an_unknown_cluster(ch_session):
    """chdb (or a server) without that cluster: refused before any DDL, with a clear message."""
    from adtier.store.migrate import MigrationError

    name = "no_such_cluster_" + uuid.uuid4().hex[:8]
    before = ch_session.query("SELECT count() FROM system.tables "
                              "WHERE database = currentDatabase()").result_rows
    with pytest.raises(MigrationError, match=f"no cluster named '{name}'"):
        apply_migrations(ch_session, cluster=name)
    with pytest.raises(MigrationError, match="cluster name"):
        apply_migrations(ch_session, cluster="bad name; DROP TABLE ad_events")
    after = ch_session.query("SELECT count() FROM system.tables "
                             "WHERE database = currentDatabase()").result_rows
    assert before == after
