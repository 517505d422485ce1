"""The live counters of a serving process, counted in a child process (one per process).

Why: in the serving process the HTTP request loop and the flusher threads share one GIL, and
counting a stored flush (decoding every ad row, aggregating, the session marks' sort, the
Lua calls) was most of the flushers' Python. Here the flusher hands the stored flush's row
bytes over as they are, and a child (``features.live_child``, a fresh interpreter, never a
fork of a process holding chDB) parses, aggregates and applies them; what counts, and how,
is ``features.live.LiveCounters`` as ever. The child is a plain ``subprocess`` (not
``multiprocessing``: nothing of the parent's ``__main__`` is re-imported, and what crosses
is bytes in frames of our own, never pickles). It starts with the feed; ``wait_ready`` lets
the server wait for its imports before answering. It applies a flush's Lua calls in one
pipelined round trip, as the flusher thread did (``live_child.py`` says why).

- **Hand-over**: ``on_stored`` queues references to the flush's ad and content blocks (no
  copy, no parsing, no pickling) and returns; a sender thread writes them to the child's
  stdin (``os.write`` releases the GIL while the child reads). The flusher never touches a
  block again after ``on_stored``.
- **Look-ups**: the child has no ClickHouse (chDB is one process). Every ``refresh_s`` the
  first flusher whose flush is stored loads the campaign -> category map and the exclusion
  sets with its own ClickHouse client (``features.live.load_lookups``; the rule is
  ``privacy.exclusions``'), before its rows are queued, and they are sent to the child ahead
  of those rows, as ``LiveCounters.refresh`` did in the flusher.
- **Bounded**: at most ``max_pending_bytes`` (``ADTIER_LIVE_COUNTERS_MAX_PENDING_BYTES``,
  256 MiB) of row blocks wait for the child (one block is always taken when none waits).
  When full, the flush's counters are dropped
  (``adtier_live_counters_dropped_rows_total{reason="queue_full"}``, a warning at most every
  10 s): the flusher never waits for the child, and the request loop never sees it.
- **Priority**: the child runs at ``nice`` 10. On a loaded machine it yields the cores to the
  request loop and to ClickHouse's insert threads: counting falls behind (then drops, above)
  before answering slows down.
- **A dead child** is found by the sender thread at the next block and started again, with
  the latest look-ups: at once if it ran ``healthy_after_s`` (60 s), else after a delay from
  ``restart_backoff_s`` (1 s) doubling up to ``max_restart_backoff_s`` (30 s); a child that
  fails to start (or is not ready within ``start_timeout_s``) is retried on the same
  schedule, with or without blocks. Blocks arriving meanwhile are dropped as ``child_down``.
  ``adtier_live_counters_child_starts_total{outcome="started"|"failed"}`` and
  ``adtier_live_counters_child_restarts_total`` count them; each death, failed start and
  restart is logged at error level with the next delay. The flush path never waits for it.
- **What is lost**, on top of the counters' documented best effort (``features.live``): the
  blocks queued or in the pipe when the child dies or the server is killed, and the blocks
  dropped above. A graceful stop (``close``) waits up to its timeout for the queue to drain,
  then kills the child, whatever it is doing (starting, counting, stuck): the server's
  shutdown ends in time and leaves no child behind.
  Counters of a flush are applied shortly after it is acknowledged, not before ``flush``
  returns.

``adtier flush`` (a process with no request loop) keeps counting in its flusher thread
(``runtime.stored_hook``): there is no request loop to give the GIL back to, and one process
less to supervise.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec
import redis
from clickhouse_connect.driver.client import Client

from adtier import metrics
from adtier.features.live import Lookups, load_lookups
from adtier.features.live_child import CONFIG, HEADER, LOOKUPS, READY, ROWS, Config
from adtier.logs import get_logger

__all__ = ["LiveFeed"]

log = get_logger("adtier.features.live_feed")
_pack = msgspec.msgpack.Encoder().encode
_WARN_EVERY_S = 10.0
_KILL_GRACE_S = 1.0  # close(): for the sender to see a killed child and end


@dataclass
class _Frame:
    kind: bytes
    at: float
    first: bytes | bytearray
    second: bytes
    rows: int  # ad + content rows, for the dropped-rows metric

    @property
    def size(self) -> int:
        return len(self.first) + len(self.second)


class LiveFeed:
    """One per serving process; ``hook`` is the flushers' ``StoredHook`` (ingest.wiring)."""

    def __init__(self, redis_url: str, refresh_s: float = 60.0,
                 max_pending_bytes: int = 256 << 20, restart_backoff_s: float = 1.0,
                 max_restart_backoff_s: float = 30.0, healthy_after_s: float = 60.0,
                 start_timeout_s: float = 120.0,
                 log_level: str = "info", log_json: bool | None = None, nice: int = 10,
                 argv: Sequence[str] | None = None):
        if max_pending_bytes < 0:
            raise ValueError(f"max_pending_bytes={max_pending_bytes} "
                             "(ADTIER_LIVE_COUNTERS_MAX_PENDING_BYTES): expected 0 or more bytes")
        self._config = _pack(Config(redis_url=redis_url, log_level=log_level, log_json=log_json))
        self.refresh_s = refresh_s
        self.max_pending_bytes = max_pending_bytes
        # a child that fails to start, or dies within ``healthy_after_s`` of being ready, is
        # started again after ``restart_backoff_s``, doubling up to ``max_restart_backoff_s``
        # (a broken install or an unreachable Valkey is not retried in a tight loop); one that
        # ran longer is started again at once, and the delay starts over
        self.restart_backoff_s = restart_backoff_s
        self.max_restart_backoff_s = max_restart_backoff_s
        self.healthy_after_s = healthy_after_s
        self.start_timeout_s = start_timeout_s  # not ready by then: killed, a failed start
        self.starts = 0  # children that got ready
        self.failed_starts = 0
        self.retry_delay_s = 0.0  # the delay before the latest scheduled start
        self.start_attempts: deque[float] = deque(maxlen=16)  # monotonic times, for tests
        self._backoff_s = restart_backoff_s
        self._next_start_at = float("-inf")
        self._ready_at = float("-inf")
        self.nice = nice
        # the child's command line: another one only in tests (a child that fails or hangs)
        self.argv = list(argv or (sys.executable, "-m", "adtier.features.live_child"))
        self.restarts = 0
        self.dropped_rows = 0
        self._lookups: bytes | None = None  # the latest, sent to every (re)started child
        self._loaded_at = float("-inf")
        self._refreshing = threading.Lock()
        self._pending: deque[_Frame] = deque()
        self._pending_bytes = 0
        self._busy = False  # a frame is being written
        self._cond = threading.Condition()
        self._closing = False
        self._warned_at = float("-inf")
        self._child: subprocess.Popen | None = None
        self._ready = threading.Event()
        self._spawning = threading.Lock()  # close() vs. a child being spawned
        self._sender = threading.Thread(target=self._send_forever, name="live-feed", daemon=True)
        self._sender.start()

    # ---- the flushers' side (never waits for the child) -------------------------------------
    def hook(self, redis_client: redis.Redis, clickhouse: Client) -> Callable:
        """One flusher's ``on_stored``: its ClickHouse client loads the look-ups when due."""
        def on_stored(entries, blocks) -> None:
            self.refresh_if_due(clickhouse)
            self.send_rows(blocks.ad, blocks.content, blocks.ad_rows + blocks.content_rows)

        return on_stored

    def refresh_if_due(self, clickhouse: Client) -> None:
        """Load the look-ups every ``refresh_s`` (one flusher at a time; the others go on)."""
        # Until the first look-ups are queued every flusher waits for them (then finds them
        # there): rows queued ahead of them would be counted with no exclusions at all.
        first = self._lookups is None
        if not first and time.monotonic() - self._loaded_at <= self.refresh_s:
            return
        if not self._refreshing.acquire(blocking=first):
            return
        try:
            if self._lookups is not None and time.monotonic() - self._loaded_at <= self.refresh_s:
                return  # another flusher loaded them while this one waited
            self._loaded_at = time.monotonic()
            lookups = load_lookups(clickhouse)
            if lookups is not None:
                self.send_lookups(lookups)
        finally:
            self._refreshing.release()

    def send_lookups(self, lookups: Lookups) -> None:
        payload = _pack(lookups)
        with self._cond:
            self._lookups = payload
            # a newer set replaces one still waiting; it is never dropped
            self._pending = deque(f for f in self._pending if f.kind != LOOKUPS)
            self._pending.append(_Frame(LOOKUPS, 0.0, payload, b"", 0))
            self._cond.notify_all()

    def send_rows(self, ad: bytes | bytearray, content: bytes, rows: int,
                  at: float | None = None) -> bool:
        """Queue a stored flush's rows; False when dropped (the queue is full)."""
        frame = _Frame(ROWS, time.time() if at is None else at, ad, content, rows)
        with self._cond:
            if self._closing:
                return False
            if self._pending_bytes and self._pending_bytes + frame.size > self.max_pending_bytes:
                self._dropped_locked(frame, "queue_full")
                return False
            self._pending.append(frame)
            self._pending_bytes += frame.size
            self._cond.notify_all()
        return True

    # ---- state, for tests and shutdown --------------------------------------------------------
    @property
    def pid(self) -> int | None:
        child = self._child
        return child.pid if child is not None else None

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Until the first child is running with its imports done (or failed to start)."""
        return self._ready.wait(timeout)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Until every queued frame is written to the child (not: applied by it)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Let the queue drain (up to ``timeout``), then end the child: the sender closes its
        stdin (end of input) once nothing is left to write; a child still starting, or stuck,
        at the deadline is killed, which also frees a sender waiting for it or writing to it.
        Returns within ``timeout`` plus a kill's grace (``_KILL_GRACE_S``)."""
        deadline = time.monotonic() + timeout
        self.wait_idle(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        with self._spawning:  # a child being spawned is published first; none starts after
            child = self._child
        self._sender.join(max(0.0, deadline - time.monotonic()))
        child = self._child or child
        if child is not None:
            try:
                child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("live_counters_child_killed", pid=child.pid)
                child.kill()
                child.wait()
        self._sender.join(_KILL_GRACE_S)

    # ---- the sender thread ------------------------------------------------------------------
    def _send_forever(self) -> None:
        # the first child starts at once, not at the first flush: its imports (a few seconds
        # of CPU on a busy machine) are paid at start-up, in its own process; a child that is
        # down is started again when due, frames or not
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    due_in = self._start_due_in()
                    if due_in is not None and due_in <= 0:
                        break
                    self._cond.wait(due_in)
                if self._closing and not self._pending:
                    break
                frame = self._pending.popleft() if self._pending else None
                self._busy = frame is not None
            if frame is None:
                self._running_child()
                continue
            try:
                self._deliver(frame)
            except Exception:  # noqa: BLE001 - the feed must outlive any one frame
                log.exception("live_counters_send_failed")
            finally:
                with self._cond:
                    self._busy = False
                    if frame.kind == ROWS:
                        self._pending_bytes -= frame.size
                    self._cond.notify_all()
        child = self._child
        if child is not None and child.stdin is not None:
            try:  # only this thread writes to it, so only this thread closes it
                child.stdin.close()  # end of input: the child counts what it read and exits
            except OSError:
                pass

    def _start_due_in(self) -> float | None:
        """Seconds until the next start when no child is up; None while one is (its death is
        found at the next frame)."""
        if self._child is not None:
            return None
        return self._next_start_at - time.monotonic()

    def _deliver(self, frame: _Frame) -> None:
        child = self._running_child()
        if child is None:
            if frame.kind == ROWS:
                self._dropped(frame, "child_down")
            return  # look-ups are resent to the next child anyway
        try:
            _write_frame(child, frame)
        except OSError:  # the child died while we wrote: this frame is lost (the next
            # frame finds it dead, logs it and starts another)
            if frame.kind == ROWS:
                self._dropped(frame, "child_down")

    def _running_child(self) -> subprocess.Popen | None:
        child = self._child
        if child is not None and child.poll() is None:
            return child
        if child is not None:
            self._child = None
            ran_s = time.monotonic() - self._ready_at
            self._schedule_start(healthy=ran_s >= self.healthy_after_s)
            log.error("live_counters_child_died", pid=child.pid, returncode=child.returncode,
                      ran_s=round(ran_s, 1), retry_in_s=self.retry_delay_s)
        if self._closing or time.monotonic() < self._next_start_at:
            return None
        return self._start_child(restart=self.starts > 0)

    def _schedule_start(self, healthy: bool) -> None:
        """After a failed start or a child's death: when the next start may come."""
        if healthy:
            self._backoff_s = self.restart_backoff_s
            self.retry_delay_s = 0.0
        else:
            self.retry_delay_s = self._backoff_s
            self._backoff_s = min(self._backoff_s * 2, self.max_restart_backoff_s)
        self._next_start_at = time.monotonic() + self.retry_delay_s

    def _start_child(self, restart: bool) -> subprocess.Popen | None:
        child = None
        try:
            with self._spawning:
                if self._closing:
                    return None
                self.start_attempts.append(time.monotonic())
                child = subprocess.Popen(self.argv, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, bufsize=0, close_fds=True)
                self._child = child  # while it starts too: close() must be able to end it
            if self.nice:
                _lower_priority(child.pid, self.nice)
            _write_frame(child, _Frame(CONFIG, 0.0, self._config, b"", 0))  # fits the pipe
            # its imports take a while: frames queue meanwhile (bounded, as ever); a child
            # killed meanwhile (close) ends this read
            if not select.select([child.stdout], [], [], self.start_timeout_s)[0]:
                raise OSError(f"not ready within {self.start_timeout_s:g} s")
            if child.stdout.read(len(READY)) != READY:
                raise OSError(f"exited before it was ready (code {child.wait()})")
            # after READY: look-ups larger than the pipe would block on a child that reads
            # nothing yet, past the start's timeout; still before any rows
            with self._cond:
                lookups = self._lookups
            if lookups is not None:
                _write_frame(child, _Frame(LOOKUPS, 0.0, lookups, b"", 0))
        except Exception as err:  # noqa: BLE001 - retried later, whatever went wrong
            self._failed_start(child, err)
            return None
        finally:
            self._ready.set()  # or failed: nobody waits for a child that will not come
        self._ready_at = time.monotonic()
        self.starts += 1
        metrics.LIVE_COUNTERS_STARTS.labels("started").inc()
        if restart:
            self.restarts += 1
            metrics.LIVE_COUNTERS_RESTARTS.inc()
            log.error("live_counters_child_restarted", pid=child.pid, restarts=self.restarts)
        return child

    def _failed_start(self, child: subprocess.Popen | None, err: Exception) -> None:
        if child is not None:
            if child.poll() is None:
                child.kill()  # half started: never leave it behind
            child.wait()
        self._child = None
        if self._closing:  # close() ended it: a shutdown, not a start that failed
            log.info("live_counters_child_start_abandoned", reason="closing")
            return
        self.failed_starts += 1
        metrics.LIVE_COUNTERS_STARTS.labels("failed").inc()
        self._schedule_start(healthy=False)
        log.error("live_counters_child_failed_to_start", error=str(err)[:200],
                  failed_starts=self.failed_starts, retry_in_s=self.retry_delay_s)

    def _dropped(self, frame: _Frame, reason: str) -> None:
        with self._cond:
            self._dropped_locked(frame, reason)

    def _dropped_locked(self, frame: _Frame, reason: str) -> None:
        self.dropped_rows += frame.rows
        metrics.LIVE_COUNTERS_DROPPED.labels(reason).inc(frame.rows)
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            log.warning("live_counters_dropped", reason=reason, rows=frame.rows,
                        dropped_so_far=self.dropped_rows)


def _lower_priority(pid: int, nice: int) -> None:
    """At least ``nice``, never below this process's own niceness (raising another process's
    priority needs a capability a server usually lacks); best effort."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, max(nice, os.getpriority(os.PRIO_PROCESS, 0)))
    except OSError as err:
        log.warning("live_counters_child_nice_failed", error=str(err)[:200])


def _write_frame(child: subprocess.Popen, frame: _Frame) -> None:
    """Whole frame or OSError; ``os.write`` releases the GIL while the pipe is full."""
    fd = child.stdin.fileno()
    for data in (HEADER.pack(frame.kind, frame.at, len(frame.first), len(frame.second)),
                 frame.first, frame.second):
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
