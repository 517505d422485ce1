"""Flushers racing each other: recovery after crashes, and a slow-but-alive flusher whose work
another flusher redoes. Each acknowledged event must be stored exactly once, and the buffered
counter must come back to zero. A "gated" ClickHouse client makes an insert hang on purpose."""

from __future__ import annotations

import threading
import time

from adtier.ingest.flusher import Flusher, build_blocks, token_for
from adtier.store import connect
from tests.helpers import ad_event, batch
from tests.integration.conftest import count


class GatedClickHouse:
    """The real client, with inserts that wait for a gate (a slow or hung insert)."""

    def __init__(self, real):
        self.real = real
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()

    def __getattr__(self, name):  # reads (e.g. loading profile ordinals) are not gated
        return getattr(self.real, name)

    def raw_insert(self, *args, **kwargs):
        self.waiting.set()
        self.gate.wait(30)
        return self.real.raw_insert(*args, **kwargs)


def _send(api, n: int) -> None:
    for _ in range(n):
        assert api.post_events(batch([ad_event()])).status_code == 200


def _distinct(ch) -> int:
    return ch.query("SELECT uniqExact(event_id) FROM ad_events").result_rows[0][0]


def test_restart_redoes_own_plan_before_taking_over_others(api, settings, ch, rds):
    b = Flusher(connect(settings.clickhouse_dsn), rds, "host-b")
    b.buffer.ensure_group()
    _send(api, 1200)
    entries = b.buffer.read_new(2000, 100)
    entries.sort(key=lambda e: tuple(map(int, e.entry_id.split("-"))))
    b.buffer.save_plan([e.entry_id for e in entries])
    b._insert(build_blocks(entries), token_for(entries))  # ...and host-b dies here
    a = Flusher(connect(settings.clickhouse_dsn), rds, "host-a")
    _send(api, 5)
    a.buffer.read_new(100, 100)  # ...and host-a dies holding these
    time.sleep(0.4)
    Flusher(connect(settings.clickhouse_dsn), rds, "host-b", claim_idle_ms=300).drain()
    assert count(ch, "ad_events") == _distinct(ch) == 1205
    assert int(rds.get("adtier:buffered")) == 0
    assert rds.get("adtier:plan:host-b") is None


def test_slow_flusher_and_the_one_that_takes_over_store_each_event_once(api, settings, ch, rds):
    gate_a = GatedClickHouse(connect(settings.clickhouse_dsn))
    gate_b = GatedClickHouse(connect(settings.clickhouse_dsn))
    a = Flusher(gate_a, rds, "A", claim_idle_ms=300)
    b = Flusher(gate_b, rds, "B", claim_idle_ms=300)
    a.buffer.ensure_group()
    _send(api, 10)
    first = a.buffer.read_new(100, 100)
    gate_a.gate.clear()
    gate_b.gate.clear()
    slow_a = threading.Thread(target=a.flush, args=(first,))
    slow_a.start()
    assert gate_a.waiting.wait(10)
    time.sleep(0.5)  # A now looks dead
    taking_over = threading.Thread(target=b.recover)
    taking_over.start()
    assert gate_b.waiting.wait(10)  # B redoes A's plan (same token)
    gate_a.gate.set()
    slow_a.join()
    _send(api, 300)  # A, alive after all, takes new work
    gate_a.waiting.clear()
    gate_a.gate.clear()
    second = a.buffer.read_new(1000, 100)
    slow_a = threading.Thread(target=a.flush, args=(second,))
    slow_a.start()
    assert gate_a.waiting.wait(10)
    time.sleep(0.5)
    gate_b.gate.set()
    taking_over.join()  # B must not touch A's new plan
    gate_a.gate.set()
    slow_a.join()
    Flusher(connect(settings.clickhouse_dsn), rds, "C").drain()
    assert count(ch, "ad_events") == _distinct(ch) == 310
    assert count(ch, "ingest_batches") == 310
    assert int(rds.get("adtier:buffered")) == 0
    assert rds.xlen("adtier:events") == 0


def test_idle_consumer_is_forgotten_only_when_it_holds_nothing(api, settings, ch, rds):
    survivor = Flusher(connect(settings.clickhouse_dsn), rds, "survivor", claim_idle_ms=200)
    survivor.buffer.ensure_group()
    idle = Flusher(connect(settings.clickhouse_dsn), rds, "idle", claim_idle_ms=200)
    idle.buffer.read_new(10, 10)  # registers the consumer, reads nothing
    _send(api, 3)
    held = idle.buffer.read_new(10, 100)
    assert len(held) == 3
    assert survivor.buffer.forget_consumer("idle") is False  # it holds entries
    time.sleep(0.3)
    survivor.drain()
    assert count(ch, "ad_events") == 3
    assert "idle" not in [c.name for c in survivor.buffer.consumers()]


def _stream_reads(rds) -> int:
    return int(rds.info("commandstats").get("cmdstat_xreadgroup", {}).get("calls", 0))


def test_a_trickle_is_read_a_few_times_a_round_not_once_per_append(api, settings, rds):
    """A round flushes at its end (or at max_rows) whenever its entries came in, so a trickle
    of appends (pixels: one per group of concurrent pixels) is read every ``POLL_SECONDS``,
    not once per append: each read wakes the flusher's Python and Valkey for a few rows."""
    flusher = Flusher(connect(settings.clickhouse_dsn), rds, "host-t", max_seconds=1.0)
    flusher.buffer.ensure_group()
    got: list[int] = []
    reads = _stream_reads(rds)
    collecting = threading.Thread(target=lambda: got.append(len(flusher._collect())))
    collecting.start()
    sent = 0
    stop = time.monotonic() + 0.7
    while time.monotonic() < stop:
        _send(api, 1)
        sent += 1
        time.sleep(0.01)
    collecting.join()
    reads = _stream_reads(rds) - reads
    assert sent >= 15
    assert got == [sent]  # every entry of the round, in the round
    assert reads <= 1 + 1.0 / Flusher.POLL_SECONDS + 2, (reads, sent)


def test_flushers_of_one_process_take_turns_collecting(api, settings, rds):
    """Each flush has a fixed cost whatever its size: two flushers collecting side by side
    at a trickle would flush twice per ``max_seconds``; in turn, the second starts collecting
    when the first's round ends, and the entries go to one flush."""
    a = Flusher(connect(settings.clickhouse_dsn), rds, "host-a", max_seconds=0.5)
    b = Flusher(connect(settings.clickhouse_dsn), rds, "host-b", max_seconds=0.5)
    for flusher in (a, b):
        flusher.buffer.ensure_group()
    _send(api, 3)
    done: dict[str, tuple[float, int]] = {}

    def collect(flusher: Flusher) -> None:
        rounds = flusher._collect_turn()
        done[flusher.consumer] = (time.monotonic(), sum(len(e) for _, e in rounds))

    first = threading.Thread(target=collect, args=(a,))
    first.start()
    time.sleep(0.1)
    started = time.monotonic()
    collect(b)
    first.join()
    # b waited for the rest of a's round (~0.4 s), then collected for its own 0.5 s
    assert done["host-b"][0] - started >= 0.8
    assert done["host-a"][1] == 3 and done["host-b"][1] == 0
