"""Faults: ClickHouse away, Redis restarted, flusher interrupted, server killed with SIGKILL.
In every case each acknowledged event ends up in ClickHouse exactly once."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from adtier.ingest.buffer import FlushBuffer
from adtier.ingest.flusher import Flusher, build_blocks, token_for
from adtier.store import connect
from tests.conftest import wait_until
from tests.helpers import ad_event, batch, content_event
from tests.integration.conftest import count
from tests.integration.server_process import ServerProcess, group_alive


def _send(api, batches: int, per_batch: int) -> int:
    accepted = 0
    for _ in range(batches):
        answer = api.post_events(batch([ad_event() for _ in range(per_batch)] + [content_event()]))
        assert answer.status_code == 200, answer.text
        accepted += answer.json()["accepted"]
    return accepted


def test_clickhouse_unavailable_then_back_loses_nothing(api, settings, ch, rds):
    ch.command("DETACH TABLE ad_events")
    flusher = Flusher(connect(settings.clickhouse_dsn), rds, "ch-outage", max_seconds=0.1)
    try:
        flusher.start()
        accepted = _send(api, 5, 20)
        # while the table is away the flusher keeps failing and the events stay buffered
        wait_until(lambda: flusher.buffer.lag()[0] == accepted and _failures() > 0, timeout=20)
        time.sleep(1.0)
        assert flusher.buffer.lag()[0] == accepted
    finally:
        ch.command("ATTACH TABLE ad_events")
    wait_until(lambda: count(ch, "ad_events") == 100 and count(ch, "content_events") == 5, timeout=60)
    flusher.stop()
    assert flusher.buffer.lag()[0] == 0
    assert count(ch, "ad_events") == 100  # retried inserts were not doubled


def _failures() -> float:
    from adtier import metrics

    return metrics.FLUSH_FAILURES._value.get()


def test_interrupted_flush_is_redone_once_by_a_restarted_flusher(api, settings, ch, rds):
    accepted = _send(api, 4, 25)
    # A flusher reads, writes its plan, inserts... and dies before acknowledging.
    dying = Flusher(connect(settings.clickhouse_dsn), rds, "host-a")
    dying.buffer.ensure_group()
    entries = dying.buffer.read_new(count=100, block_ms=100)
    entries.sort(key=lambda e: tuple(map(int, e.entry_id.split("-"))))
    dying.buffer.save_plan([e.entry_id for e in entries])
    dying._insert(build_blocks(entries), token_for(entries))
    assert count(ch, "ad_events") == 100
    # The same flusher, restarted, redoes its plan with the same token: nothing doubles.
    Flusher(connect(settings.clickhouse_dsn), rds, "host-a").drain()
    assert count(ch, "ad_events") == 100
    assert count(ch, "content_events") == 4
    assert count(ch, "ingest_batches") == 4
    assert accepted == 104
    assert rds.xlen("adtier:events") == 0


def test_another_flusher_takes_over_a_dead_consumers_entries(api, settings, ch, rds):
    _send(api, 3, 10)
    dead = FlushBuffer(rds, "dead-host")
    dead.ensure_group()
    entries = dead.read_new(count=100, block_ms=100)
    assert len(entries) == 3  # pending with "dead-host", never acknowledged
    survivor = Flusher(connect(settings.clickhouse_dsn), rds, "survivor", claim_idle_ms=200)
    time.sleep(0.3)
    survivor.drain()
    assert count(ch, "ad_events") == 30
    assert "dead-host" not in [c.name for c in survivor.buffer.consumers()]


def test_redis_killed_and_restarted_keeps_acknowledged_events(api, settings, ch, valkey, flush):
    accepted = _send(api, 5, 20)
    valkey.process.kill()  # SIGKILL: no chance to write anything more
    valkey.process.wait()
    valkey.process = None
    down = api.post_events(batch([ad_event()]))
    assert down.status_code == 503 and down.headers["retry-after"]
    valkey.start()
    flush()
    assert accepted == 105
    assert count(ch, "ad_events") == 100
    assert count(ch, "content_events") == 5
    # and the dedup memory survived too: a retry of a stored event is still a duplicate
    stored_id = ch.query("SELECT toString(event_id) FROM ad_events LIMIT 1").result_rows[0][0]
    again = api.post_events(batch([ad_event(event_id=stored_id)])).json()
    assert (again["accepted"], again["duplicates"]) == (0, 1)


# ---- real processes -------------------------------------------------------------------------

def _post(server: ServerProcess, key: dict[str, str], n_events: int) -> dict:
    answer = httpx.post(f"{server.url}/v1/events", json=batch([ad_event() for _ in range(n_events)]),
                        headers=key, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _stored(server: ServerProcess, batch_id: str) -> dict:
    return httpx.get(f"{server.url}/v1/ingest/batches/{batch_id}", headers=server.admin(),
                     timeout=30).json()


@pytest.mark.slow
def test_sigkill_right_after_ack_then_restart_stores_every_event_once(tmp_path):
    server = ServerProcess(tmp_path / "data").start()
    try:
        key = server.new_key()
        answers = [_post(server, key, 200) for _ in range(15)]
        server.kill_group()  # server, worker and Valkey, immediately after the last ack
        server.start()
        for answer in answers:
            wait_until(lambda a=answer: _stored(server, a["batch_id"]).get("stored") == a["accepted"],
                       timeout=60)
        totals = [_stored(server, a["batch_id"]) for a in answers]
        assert sum(t["stored"] for t in totals) == 15 * 200
        assert all(t["state"] == "stored" for t in totals)
    finally:
        server.stop()


@pytest.mark.slow
def test_killing_serve_takes_its_worker_and_valkey_along(tmp_path):
    server = ServerProcess(tmp_path / "data").start()
    try:
        key = server.new_key()
        first = _post(server, key, 50)
        os.kill(server.proc.pid, signal.SIGKILL)  # only the parent: children must not linger
        server.proc.wait(10)
        wait_until(lambda: not group_alive(server.proc.pid), timeout=20)
        server.start()  # and the data dir is usable again at once
        wait_until(lambda: _stored(server, first["batch_id"]).get("stored") == 50, timeout=60)
    finally:
        server.stop()


@pytest.mark.slow
def test_flusher_dying_between_insert_and_ack_is_redone_exactly_once(tmp_path):
    server = ServerProcess(tmp_path / "data", ADTIER_FAILPOINT="after_insert").start()
    try:
        key = server.new_key()
        answer = _post(server, key, 300)
        server.wait_exit(60)  # the worker inserted, then died before acknowledging
        server.extra_env.pop("ADTIER_FAILPOINT")
        server.start()
        wait_until(lambda: _stored(server, answer["batch_id"]).get("state") == "stored", timeout=60)
        status = _stored(server, answer["batch_id"])
        assert status["stored"] == status["accepted"] == 300
    finally:
        server.stop()


@pytest.mark.slow
def test_a_stuck_shutdown_is_ended_by_the_shutdown_timeout_and_loses_nothing(tmp_path):
    server = ServerProcess(tmp_path / "data", ADTIER_FAILPOINT="hang_on_shutdown",
                           ADTIER_SHUTDOWN_TIMEOUT_S="2").start()
    try:
        key = server.new_key()
        answer = _post(server, key, 120)
        os.kill(server.proc.pid, signal.SIGTERM)  # the worker's shutdown then hangs for an hour
        assert server.wait_exit(30) is not None
        wait_until(lambda: not group_alive(server.proc.pid), timeout=20)
        server.extra_env.pop("ADTIER_FAILPOINT")
        server.start()
        wait_until(lambda: _stored(server, answer["batch_id"]).get("stored") == 120, timeout=60)
    finally:
        server.stop()
