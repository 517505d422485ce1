"""The flusher: buffered entries -> large ClickHouse inserts -> acknowledgement.

Batches by rows and by time. Every insert carries a deduplication token derived from the exact
entry ids it contains, and the ids are written down (the plan) before the insert; after a crash
the plan is redone first, so a retried insert is recognised by ClickHouse and dropped. Entries
stay in the stream until acknowledged, so while ClickHouse is down they wait, and they are
retried with backoff. Entries held by a consumer that stopped answering are claimed after
``claim_idle_ms``.

A block ClickHouse refuses for what is in it (a parse, type or range error: retrying cannot
cure that) is split in halves until the refused rows are found; they are quarantined in
``rejected_events`` (reason ``store_refused``), the rest stored, and the plan completes. Every
part has a token derived from the plan's, so a redo splits the same way and stores nothing twice.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from itertools import chain

import msgspec
import numpy as np
import redis
from clickhouse_connect.driver.client import Client

from adtier import metrics
from adtier.ingest.buffer import Entry, FlushBuffer
from adtier.ingest.partitions import LEGACY, BufferLayout, Partition
from adtier.ingest.erased_events import copy_flushed
from adtier.ingest.normalise import ORD_FIELD, ORD_PLACEHOLDER, ORD_WIDTH
from adtier.ingest.lines import line_slices
from adtier.ingest.ordinals import Ordinals
from adtier.ingest.quarantine import Refused, insert_or_split, quarantine_rows
from adtier.logs import get_logger
from adtier.store.inserts import raw_inserter

__all__ = ["Flusher", "FlushBlocks", "build_blocks", "fill_ordinals", "insert_settings",
           "with_ordinals"]

log = get_logger("adtier.flusher")
_json = msgspec.json.Encoder()


class _Profile(msgspec.Struct, gc=False):  # one str field: never in a cycle
    profile_id: str


_profile_lines = msgspec.json.Decoder(_Profile)


class FlushBlocks(msgspec.Struct):
    ad: bytes
    content: bytes
    rejected: bytes
    batches: bytes
    ad_rows: int
    content_rows: int
    ad_batch_ids: list[str] = []
    received_from_ms: int = 0  # the earliest receipt in the block


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
        "parts": r.parts,
    }) + b"\n"


def build_blocks(entries: list[Entry]) -> FlushBlocks:
    ad, content, rejected, batches, ad_batch_ids = [], [], [], [], []
    ad_rows = content_rows = 0
    for entry in entries:
        n_ad = entry.record.n_ad
        rows, n = _keep(entry.ad_rows, entry.bitmap[:n_ad])
        ad.append(rows)
        ad_rows += n
        if n:
            ad_batch_ids.append(entry.record.batch_id)
        rows, n = _keep(entry.content_rows, entry.bitmap[n_ad:])
        content.append(rows)
        content_rows += n
        rejected.append(entry.rejected_rows)
        batches.append(_batch_row(entry))
    received = min((e.record.received_at_ms for e in entries), default=0)
    # the ad block is a bytearray: with_ordinals fills its profile_ord in place
    return FlushBlocks(bytearray().join(ad), b"".join(content), b"".join(rejected), b"".join(batches),
                       ad_rows, content_rows, list(dict.fromkeys(ad_batch_ids)), received)


def with_ordinals(rows: bytes, ordinals: Ordinals, token: str) -> bytes | bytearray:
    """The ad rows, each with its profile's ``profile_ord`` (assigned and recorded first)."""
    if not rows:
        return rows
    slices = list(line_slices(rows))  # bounded GIL holds (ordinals.SLICE_BYTES)
    ids = [p.profile_id for part in slices for p in _profile_lines.decode_lines(part)]
    ords = ordinals.take(ids, token)
    values = list(map(ords.__getitem__, ids))
    # in place when the block is already ours to change (build_blocks makes a bytearray;
    # a redo fills it again with the same values)
    filled = rows if isinstance(rows, bytearray) else bytearray(rows)
    return filled if fill_ordinals(filled, values) else _append_ordinals(slices, values)


# Where a row's placeholder sits, counted back from its '\n' (normalise.ORD_PLACEHOLDER,
# then '}'): the digits just before the '}', the field name before them.
_DIGITS_AT = np.arange(ORD_WIDTH) - (ORD_WIDTH + 1)
_FIELD_AT = np.arange(len(ORD_FIELD) + 1) - (len(ORD_PLACEHOLDER) + 1)
_FIELD_AT[-1] = -1  # and the row's closing '}'
_FIELD_BYTES = np.frombuffer(ORD_FIELD + b"}", dtype=np.uint8)


# The fill works in bounded passes: a block-sized temporary (a 100 MB flush block's
# newline mask, its rows' index arrays) costs page faults on every flush, and a pass of a few
# thousand rows keeps its index and gather arrays in cache (0.1-0.3 µs less per row).
_SCAN_BYTES = 1 << 20  # bytes of the block compared with '\n' per pass
_ROWS_PER_PASS = 8192  # rows checked / filled per pass


def _row_ends(out: np.ndarray) -> np.ndarray:
    """The position of every '\n' in ``out``, found slice by slice in one reused mask."""
    scratch = np.empty(min(len(out), _SCAN_BYTES), dtype=bool)
    parts = []
    for at in range(0, len(out), _SCAN_BYTES):
        part = out[at:at + _SCAN_BYTES]
        parts.append(np.flatnonzero(np.equal(part, 10, out=scratch[:len(part)])) + at)
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.intp)


def fill_ordinals(rows: bytearray, values: list[int]) -> bool:
    """Overwrite each row's placeholder ``profile_ord`` with its value, right-aligned, in
    place: a few numpy passes over the block, no per-row Python, no split, join or copy.
    False (nothing changed) if a row has no placeholder (buffered before normalise wrote one)."""
    out = np.frombuffer(rows, dtype=np.uint8)  # a view: writes go to ``rows``
    ends = _row_ends(out)  # JSON escapes newlines: one per row, at its end
    if len(ends) != len(values) or not len(values) or ends[0] < len(ORD_PLACEHOLDER) + 1:
        return False  # (a first row too short to hold the placeholder has none)
    step = _ROWS_PER_PASS
    expected = np.broadcast_to(_FIELD_BYTES, (step, len(_FIELD_BYTES)))
    for lo in range(0, len(ends), step):  # every row checked before any is changed
        at = ends[lo:lo + step, None]
        if not np.array_equal(out[at + _FIELD_AT], expected[:len(at)]):
            return False
    # each distinct ordinal formatted once, then gathered per row
    distinct = list(dict.fromkeys(values))
    text = np.frombuffer(b"".join(b"%*d" % (ORD_WIDTH, v) for v in distinct),
                         dtype=np.uint8).reshape(len(distinct), ORD_WIDTH)
    index = dict(zip(distinct, range(len(distinct))))
    rows_at = np.fromiter(map(index.__getitem__, values), dtype=np.intp, count=len(values))
    for lo in range(0, len(ends), step):
        out[ends[lo:lo + step, None] + _DIGITS_AT] = text[rows_at[lo:lo + step]]
    return True


def _append_ordinals(slices: list[memoryview], values: list[int]) -> bytes:
    """Rows without a placeholder: add the field before each '}\n' (a placeholder still on
    a row of a mixed block is dropped first, so no row names the field twice). One ending
    per ordinal, looked up per row by C-level map/zip/join."""
    ends = iter(list(map({v: b',"profile_ord":%d}\n' % v for v in set(values)}.__getitem__,
                         values)))
    out = []
    for part in slices:
        data = part.tobytes()
        lines = data.split(b"}\n")
        lines.pop()  # after the last line's '}\n'
        if ORD_PLACEHOLDER in data:
            cut = len(ORD_PLACEHOLDER)
            lines = [line[:-cut] if line.endswith(ORD_PLACEHOLDER) else line for line in lines]
        out.append(b"".join(chain.from_iterable(zip(lines, ends))))
    return b"".join(out)


# The flushers of one process take turns collecting. A flush has a fixed cost whatever its
# size (about ten ClickHouse parts: the table's, its views', the ordinals', the provenance
# rows'; ~80 ms of CPU on chDB): collecting side by side, N flushers at a trickle made N
# flushes every ``max_seconds``; in turn they make one, of N times the rows. Under load one
# collects while the others insert (ClickHouse releases the GIL), as before.
_COLLECTING = threading.Lock()


def _sort_key(entry: Entry) -> tuple[int, int]:
    ms, seq = entry.entry_id.split("-")
    return int(ms), int(seq)


def token_for_ids(entry_ids: list[str], scope: str = "") -> str:
    """The insert's deduplication token. Entry ids are unique within one stream only (two
    partitions can each have ``1796639349732-0``), so a partitioned buffer scopes the token
    by the partition's stream; the one historical stream keeps its unscoped tokens."""
    return hashlib.sha256((scope + ",".join(entry_ids)).encode()).hexdigest()[:40]


def token_scope(partition: Partition, layout: BufferLayout) -> str:
    return f"{partition.stream}|" if layout.tagged else ""


def token_for(entries: list[Entry], scope: str = "") -> str:
    return token_for_ids([e.entry_id for e in entries], scope)


def insert_settings(dedup_token: str) -> dict[str, object]:
    """Settings of every flush insert: a redone flush (same token) is dropped whole."""
    return {
        "insert_deduplication_token": dedup_token,
        # ...and must not reach the rollups' materialized views twice either: servers have long
        # defaulted this to 0 (chDB 26 to 1), so say it on every insert.
        "deduplicate_blocks_in_dependent_materialized_views": 1,
        "input_format_skip_unknown_fields": 0,
    }


# Entries per stream read: modest, since one huge reply would hold the GIL (and stall
# requests) while parsed; a read returning fewer means the stream is drained.
READ_ENTRIES = 32


class Flusher:
    # Once a round has entries and the stream is drained, how long to wait before reading
    # again (a round flushes at its end or at max_rows, whenever its entries came in).
    POLL_SECONDS = 0.1

    def __init__(
        self,
        clickhouse: Client,
        redis_client: redis.Redis,
        consumer: str,
        max_rows: int = 200_000,
        max_seconds: float = 1.0,
        claim_idle_ms: int = 30_000,
        failpoint: str = "",
        on_stored: "Callable[[list[Entry], FlushBlocks], None] | None" = None,
        layout: BufferLayout = LEGACY,
    ):
        self.ch = clickhouse
        # chDB: the blocks go to the engine from memory, not through a temporary file
        self._insert_block = raw_inserter(clickhouse)
        # One reader per partition, all under this consumer name: the partitions' consumer
        # groups spread entries over every live flusher, and a dead flusher's entries and plans
        # are taken over partition by partition. ``buffer`` is the partition being worked on
        # (a flusher works on one partition at a time, plan -> insert -> ack as ever).
        self.layout = layout
        self.buffers = [FlushBuffer(redis_client, consumer, p) for p in layout.partitions]
        self.buffer = self.buffers[0]
        self._next = 0
        self.consumer = consumer
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self.claim_idle_ms = claim_idle_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failpoint = failpoint or os.environ.get("ADTIER_FAILPOINT", "")
        self._last_recovery = 0.0
        # Called after a flush is acknowledged, with its entries and (deduplicated) rows: the
        # owner's subscriber (the feature feed's live counters; see ingest.wiring), or none.
        self.on_stored = on_stored
        self.ordinals = Ordinals(redis_client, clickhouse)
        # Health, for /readyz and /metrics: failed attempts of the current plan, and when the
        # last flush (or round with nothing to flush) succeeded.
        self.failures = 0
        self.last_success = time.time()
        metrics.FLUSHER_LAST_SUCCESS.labels(consumer).set(self.last_success)

    # ---- one flush -------------------------------------------------------------------------
    def flush(self, entries: list[Entry]) -> None:
        """Write a plan for these new entries, insert them exactly once, acknowledge them."""
        if not entries:
            return
        entries.sort(key=_sort_key)
        ids = [e.entry_id for e in entries]
        plan = self.buffer.save_plan(ids)
        self._execute(entries, ids, plan)

    def redo(self, plan_ids: list[str]) -> int:
        """Finish a plan found at recovery: same entry ids, so the same deduplication token."""
        entries = self.buffer.claim(plan_ids, 0)
        entries.sort(key=_sort_key)
        log.info("redo_flush_plan", consumer=self.consumer, entries=len(entries), planned=len(plan_ids))
        self._execute(entries, plan_ids, ",".join(plan_ids))
        return len(entries)

    def _execute(self, entries: list[Entry], plan_ids: list[str], plan: str) -> None:
        """Retries until stored or the flusher is stopped (then the entries stay pending)."""
        blocks = build_blocks(entries)
        # The token comes from the plan, not from what could be re-read: an entry missing at a
        # redo was already acknowledged, so it was inserted under this same token.
        token = token_for_ids(plan_ids, token_scope(self.buffer.partition, self.layout))
        delay = 0.2
        while True:
            if not self.buffer.still_mine(plan_ids):
                # Taken over while we were stalled: the taker redoes it under the same token.
                log.warning("flush_plan_lost", consumer=self.consumer, entries=len(entries))
                self.buffer.drop_plan(plan)
                raise FlushAborted("another flusher took these entries over")
            try:
                started = time.perf_counter()
                refused = self._insert(blocks, token)
                metrics.FLUSH_SECONDS.observe(time.perf_counter() - started)
                break
            except Exception as err:  # noqa: BLE001 - any store failure means "retry later"
                metrics.FLUSH_FAILURES.inc()
                self.failures += 1
                metrics.FLUSHER_FAILURES.labels(self.consumer).set(self.failures)
                log.warning("flush_failed", error=str(err)[:500], entries=len(entries),
                            retry_in=delay, attempts=self.failures)
                if self._stop.wait(delay):
                    raise FlushAborted from err
                delay = min(delay * 2, 10.0)
        if self._failpoint == "after_insert" or (
                self._failpoint == f"after_insert_p{self.buffer.partition.index}"):
            os._exit(137)  # fault injection for tests: die between insert and acknowledgement
        self.buffer.mark_stored(entries, self.layout)
        self.buffer.complete(entries, plan)
        self._succeeded()
        for table, n in Counter(r.table for r in refused).items():
            metrics.QUARANTINED.labels(table).inc(n)
        if self.on_stored is not None and (blocks.ad_rows or blocks.content_rows):
            try:
                self.on_stored(entries, blocks)
            except Exception:  # noqa: BLE001 - a hook never fails a stored flush
                log.exception("on_stored_hook_failed", consumer=self.consumer)
        metrics.FLUSH_ROWS.labels("ad_events").inc(blocks.ad_rows)
        metrics.FLUSH_ROWS.labels("content_events").inc(blocks.content_rows)

    def _succeeded(self) -> None:
        self.failures = 0
        self.last_success = time.time()
        metrics.FLUSHER_FAILURES.labels(self.consumer).set(0)
        metrics.FLUSHER_LAST_SUCCESS.labels(self.consumer).set(self.last_success)

    def _insert(self, blocks: FlushBlocks, token: str) -> list[Refused]:
        """Insert every block; answers the rows ClickHouse refused (now quarantined)."""
        # Ordinals first: stored (under this flush's token) before any event carries them.
        ad = with_ordinals(blocks.ad, self.ordinals, f"{token}-o")
        refused: list[Refused] = []
        for table, block, suffix in (
            ("ad_events", ad, "a"),
            ("content_events", blocks.content, "c"),
            ("rejected_events", blocks.rejected, "r"),
            # Last: a provenance row means the batch's events are already stored.
            ("ingest_batches", blocks.batches, "b"),
        ):
            if block and self._failpoint == f"poison_{table}":
                block = _poisoned(block)
            if block:
                refused += insert_or_split(self._raw_insert, table, block, f"{token}-{suffix}")
            if table == "ad_events" and block:
                # events of a profile erased while this insert ran (erased_events.py)
                copy_flushed(self.ch, block, blocks.ad_batch_ids, blocks.received_from_ms)
        if refused:
            log.error("rows_quarantined", consumer=self.consumer, rows=len(refused),
                      error=refused[0].error[:300])
            self._raw_insert("rejected_events",
                             quarantine_rows(refused, blocks.received_from_ms), f"{token}-q")
        return refused

    def _raw_insert(self, table: str, block: bytes, token: str) -> None:
        self._insert_block(table, block, "JSONEachRow", insert_settings(token))

    # ---- recovery --------------------------------------------------------------------------
    def recover(self, at_start: bool = False) -> int:
        """Redo interrupted flushes: ours first (at start), then those of consumers idle for
        longer than ``claim_idle_ms``. Returns the number of entries redone."""
        redone = 0
        for buffer in self.buffers:
            self.buffer = buffer
            redone += self._recover_partition(at_start)
        return redone

    def _recover_partition(self, at_start: bool) -> int:
        redone = 0
        if at_start:
            if plan := self.buffer.own_plan():
                redone += self.redo(plan)
            redone += self._flush_pending_of(self.consumer, min_idle=0)
        for consumer in self.buffer.consumers():
            if consumer.name == self.consumer or consumer.idle_ms < self.claim_idle_ms:
                continue
            plan = self.buffer.take_over_plan(consumer.name, self.claim_idle_ms)
            if plan is None:
                continue  # alive after all: some of its entries are fresh
            if plan:
                redone += self.redo(plan)
            redone += self._flush_pending_of(consumer.name, self.claim_idle_ms)
            self.buffer.forget_consumer(consumer.name)
        return redone

    def _flush_pending_of(self, owner: str, min_idle: int) -> int:
        done = 0
        while ids := self.buffer.pending_of(owner, 1000):
            if owner == self.consumer:
                entries = self.buffer.claim(ids, 0)
            else:
                entries = self.buffer.claim_unplanned(owner, ids, min_idle)
            if not entries:
                break
            self.flush(entries)
            done += len(entries)
        return done

    # ---- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        for buffer in self.buffers:
            buffer.ensure_group()
        try:
            self.recover(at_start=True)
            while not self._stop.is_set():
                for buffer, entries in self._collect_turn():
                    self.buffer = buffer
                    self.flush(entries)
                self._succeeded()  # a round with nothing to store is progress too
                if time.monotonic() - self._last_recovery > self.claim_idle_ms / 1000:
                    self._last_recovery = time.monotonic()
                    self.recover()
                self._update_lag()
        except FlushAborted:
            log.info("flusher_stopped_with_pending")

    def _collect_turn(self) -> list[tuple[FlushBuffer, list[Entry]]]:
        """One round's entries, collected in this process's flushers' turn (``_COLLECTING``)."""
        with _COLLECTING:
            return self._collect_all()

    def _collect_all(self) -> list[tuple[FlushBuffer, list[Entry]]]:
        """One round's entries, per partition."""
        if len(self.buffers) == 1:
            return [(self.buffers[0], self._collect())]
        got: dict[int, list[Entry]] = {}
        rows = 0
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set():
            quiet = True
            for index, buffer in enumerate(self.buffers):
                entries = buffer.read_new(count=READ_ENTRIES, block_ms=None)
                if entries:
                    quiet = False
                    got.setdefault(index, []).extend(entries)
                    rows += sum(e.record.valid for e in entries)
            left = deadline - time.monotonic()
            if rows >= self.max_rows or left <= 0:
                break
            if quiet:
                # nothing anywhere: wait on one partition (in turn), briefly
                self._next = (self._next + 1) % len(self.buffers)
                buffer = self.buffers[self._next]
                entries = buffer.read_new(count=READ_ENTRIES, block_ms=max(1, int(min(left, 0.05) * 1000)))
                if entries:
                    got.setdefault(self._next, []).extend(entries)
                    rows += sum(e.record.valid for e in entries)
        return [(self.buffers[i], entries) for i, entries in sorted(got.items())]

    def _collect(self) -> list[Entry]:
        entries: list[Entry] = []
        rows = 0
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set():
            wait_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
            got = self.buffer.read_new(count=READ_ENTRIES, block_ms=max(wait_ms, 1))
            entries.extend(got)
            rows += sum(e.record.valid for e in got)
            if rows >= self.max_rows or time.monotonic() >= deadline:
                break
            if len(got) < READ_ENTRIES:
                # drained: a blocking read would wake for every append of a trickle (pixels
                # append a few rows at a time), each wake-up Python and a Valkey read
                self._stop.wait(min(self.POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        return entries

    def _update_lag(self) -> None:
        lags = [buffer.lag() for buffer in self.buffers]
        events, seconds = sum(e for e, _ in lags), max(s for _, s in lags)
        metrics.BUFFER_LAG.set(events)
        metrics.BUFFER_LAG_SECONDS.set(seconds)

    def drain(self, idle_rounds: int = 1) -> None:
        """Flush until the stream has nothing new (tests, ``adtier flush --once``)."""
        for buffer in self.buffers:
            buffer.ensure_group()
        self.recover(at_start=True)
        quiet = 0
        while quiet < idle_rounds:
            busy = False
            for buffer in self.buffers:
                self.buffer = buffer
                entries = buffer.read_new(count=500, block_ms=50 if len(self.buffers) == 1 else None)
                if entries:
                    self.flush(entries)
                    busy = True
            quiet = 0 if busy else quiet + 1
            if not busy and len(self.buffers) > 1:
                time.sleep(0.05)  # the reads above do not block: give stragglers a moment

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

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


def _poisoned(block: bytes) -> bytes:
    """Fault injection (tests): the block's first row made unparsable, as a value that slipped
    past validation would be; its other rows unchanged."""
    first, _, rest = block.partition(b"\n")
    return first[:-1] + b',"received_at":"not a time"}\n' + rest if first else block


class FlushAborted(Exception):
    """The flusher was stopped while a flush was still failing; its entries stay pending."""
