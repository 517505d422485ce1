"""The flusher: buffered entries -> large ClickHouse inserts -> acknowledgement.

Batches by rows and by time. Every insert carries a deduplication token derived from the exact
entry ids it contains, and the ids are written down (the plan) before the insert; after a crash
the plan is redone first, so a retried insert is recognised by ClickHouse and dropped. Entries
stay in the stream until acknowledged, so while ClickHouse is down they wait, and they are
retried with backoff. Entries held by a consumer that stopped answering are claimed after
``claim_idle_ms``.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable

import msgspec
import redis
from clickhouse_connect.driver.client import Client

from adtier import metrics
from adtier.ingest.buffer import Entry, FlushBuffer
from adtier.logs import get_logger

__all__ = ["Flusher", "FlushBlocks", "build_blocks"]

log = get_logger("adtier.flusher")
_json = msgspec.json.Encoder()


class FlushBlocks(msgspec.Struct):
    ad: bytes
    content: bytes
    rejected: bytes
    batches: bytes
    ad_rows: int
    content_rows: int


def _keep(rows: bytes, marks: bytes) -> tuple[bytes, int]:
    """Rows whose duplicate mark is '0' (lines and marks are in the same order)."""
    if not marks:
        return b"", 0
    if b"1" not in marks:
        return rows, len(marks)
    lines = rows.splitlines(keepends=True)
    kept = [line for line, mark in zip(lines, marks) if mark == 48]  # ord('0')
    return b"".join(kept), len(kept)


def _batch_row(entry: Entry) -> bytes:
    r = entry.record
    duplicates = entry.bitmap.count(b"1")
    return _json.encode({
        "batch_id": r.batch_id,
        "key_id": r.key_id,
        "source": r.source,
        "received_at": r.received_at_ms / 1000,
        "sent_at": None if r.sent_at_ms is None else r.sent_at_ms / 1000,
        "body_sha256": r.body_sha256,
        "events": r.events,
        "accepted": r.valid - duplicates,
        "duplicates": duplicates,
        "rejected": r.events - r.valid,
    }) + b"\n"


def build_blocks(entries: list[Entry]) -> FlushBlocks:
    ad, content, rejected, batches = [], [], [], []
    ad_rows = content_rows = 0
    for entry in entries:
        n_ad = entry.record.n_ad
        rows, n = _keep(entry.ad_rows, entry.bitmap[:n_ad])
        ad.append(rows)
        ad_rows += n
        rows, n = _keep(entry.content_rows, entry.bitmap[n_ad:])
        content.append(rows)
        content_rows += n
        rejected.append(entry.rejected_rows)
        batches.append(_batch_row(entry))
    return FlushBlocks(b"".join(ad), b"".join(content), b"".join(rejected), b"".join(batches),
                       ad_rows, content_rows)


def _sort_key(entry: Entry) -> tuple[int, int]:
    ms, seq = entry.entry_id.split("-")
    return int(ms), int(seq)


def token_for(entries: list[Entry]) -> str:
    return hashlib.sha256(",".join(e.entry_id for e in entries).encode()).hexdigest()[:40]


class Flusher:
    def __init__(
        self,
        clickhouse: Client,
        redis_client: redis.Redis,
        consumer: str,
        max_rows: int = 200_000,
        max_seconds: float = 1.0,
        claim_idle_ms: int = 30_000,
        failpoint: str = "",
    ):
        self.ch = clickhouse
        self.buffer = FlushBuffer(redis_client, consumer)
        self.consumer = consumer
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self.claim_idle_ms = claim_idle_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failpoint = failpoint or os.environ.get("ADTIER_FAILPOINT", "")
        self._last_recovery = 0.0
        self.on_stored: list[Callable[[list[Entry]], None]] = []

    # ---- one flush -------------------------------------------------------------------------
    def flush(self, entries: list[Entry], plan_owner: str | None = None) -> None:
        """Insert these entries exactly once, then acknowledge them. Retries until it succeeds
        or the flusher is asked to stop (then the entries stay pending for the next run)."""
        if not entries:
            return
        entries.sort(key=_sort_key)
        self.buffer.save_plan([e.entry_id for e in entries])
        blocks = build_blocks(entries)
        token = token_for(entries)
        delay = 0.2
        while True:
            try:
                started = time.perf_counter()
                self._insert(blocks, token)
                metrics.FLUSH_SECONDS.observe(time.perf_counter() - started)
                break
            except Exception as err:  # noqa: BLE001 - any store failure means "retry later"
                metrics.FLUSH_FAILURES.inc()
                log.warning("flush_failed", error=str(err)[:500], entries=len(entries),
                            retry_in=delay)
                if self._stop.wait(delay):
                    raise FlushAborted from err
                delay = min(delay * 2, 10.0)
        if self._failpoint == "after_insert":
            os._exit(137)  # fault injection for tests: die between insert and acknowledgement
        self.buffer.complete(entries, plan_owner)
        metrics.FLUSH_ROWS.labels("ad_events").inc(blocks.ad_rows)
        metrics.FLUSH_ROWS.labels("content_events").inc(blocks.content_rows)
        for callback in self.on_stored:
            callback(entries)

    def _insert(self, blocks: FlushBlocks, token: str) -> None:
        for table, block, suffix in (
            ("ad_events", blocks.ad, "a"),
            ("content_events", blocks.content, "c"),
            ("rejected_events", blocks.rejected, "r"),
            # Last: a provenance row means the batch's events are already stored.
            ("ingest_batches", blocks.batches, "b"),
        ):
            if block:
                self.ch.raw_insert(
                    table,
                    insert_block=block,
                    fmt="JSONEachRow",
                    settings={
                        "insert_deduplication_token": f"{token}-{suffix}",
                        "input_format_skip_unknown_fields": 0,
                    },
                )

    # ---- recovery --------------------------------------------------------------------------
    def recover(self, at_start: bool = False) -> int:
        """Redo interrupted flushes (ours at start, others' once idle); return entries redone."""
        redone = 0
        for consumer in self.buffer.consumers():
            mine = consumer.name == self.consumer
            if mine and not at_start:
                continue
            if not mine and consumer.idle_ms < self.claim_idle_ms:
                continue
            redone += self._take_over(consumer.name, min_idle=0 if mine else self.claim_idle_ms)
            if not mine and not self.buffer.pending_of(consumer.name, 1):
                self.buffer.forget_consumer(consumer.name)
        return redone

    def _take_over(self, owner: str, min_idle: int) -> int:
        redone = 0
        plan = self.buffer.load_plan(owner)
        if plan:
            entries = self.buffer.claim(plan, min_idle)
            log.info("redo_flush_plan", owner=owner, entries=len(entries))
            self.flush(entries, plan_owner=owner)
            redone += len(entries)
        while ids := self.buffer.pending_of(owner, 1000):
            entries = self.buffer.claim(ids, min_idle)
            if not entries:
                break
            self.flush(entries)
            redone += len(entries)
        return redone

    # ---- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        self.buffer.ensure_group()
        try:
            self.recover(at_start=True)
            while not self._stop.is_set():
                self.flush(self._collect())
                if time.monotonic() - self._last_recovery > self.claim_idle_ms / 1000:
                    self._last_recovery = time.monotonic()
                    self.recover()
                self._update_lag()
        except FlushAborted:
            log.info("flusher_stopped_with_pending")

    def _collect(self) -> list[Entry]:
        entries: list[Entry] = []
        rows = 0
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set():
            wait_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
            got = self.buffer.read_new(count=500, block_ms=max(wait_ms, 1))
            entries.extend(got)
            rows += sum(e.record.valid for e in got)
            if rows >= self.max_rows or time.monotonic() >= deadline:
                break
        return entries

    def _update_lag(self) -> None:
        events, seconds = self.buffer.lag()
        metrics.BUFFER_LAG.set(events)
        metrics.BUFFER_LAG_SECONDS.set(seconds)

    def drain(self, idle_rounds: int = 1) -> None:
        """Flush until the stream has nothing new (tests, ``adtier flush --once``)."""
        self.buffer.ensure_group()
        self.recover(at_start=True)
        quiet = 0
        while quiet < idle_rounds:
            entries = self.buffer.read_new(count=500, block_ms=50)
            if entries:
                self.flush(entries)
                quiet = 0
            else:
                quiet += 1

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run_forever, name="adtier-flusher", daemon=True)
        self._thread.start()

    def _run_forever(self) -> None:
        while not self._stop.is_set():
            try:
                self.run()
            except (redis.ConnectionError, redis.TimeoutError) as err:
                log.warning("flusher_redis_unavailable", error=str(err))
                self._stop.wait(1.0)
            except Exception:  # noqa: BLE001 - keep flushing; the error is logged
                log.exception("flusher_crashed")
                self._stop.wait(1.0)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


class FlushAborted(Exception):
    """The flusher was stopped while a flush was still failing; its entries stay pending."""
