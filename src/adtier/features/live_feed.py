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
- **Bounded**: at most ``max_pending_bytes`` of row blocks wait for the child (one block is
  always taken when none waits). When full, the flush's counters are dropped
  (``adtier_live_counters_dropped_rows_total{reason="queue_full"}``, a warning at most every
  10 s): the flusher never waits for the child, and the request loop never sees it.
- **Priority**: the child runs at ``nice`` 10. On a loaded machine it yields the cores to the
  request loop and to ClickHouse's insert threads: counting falls behind (then drops, above)
  before answering slows down.
- **A dead child** is restarted by the sender thread before the next block (at most once per
  ``restart_backoff_s``; blocks arriving before then are dropped as ``child_down``), with
  the latest look-ups; ``adtier_live_counters_child_restarts_total`` counts restarts and each
  is logged at error level. The flush path never waits for it.
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
                 log_level: str = "info", log_json: bool | None = None, nice: int = 10,
                 argv: Sequence[str] | None = None):
        self._config = _pack(Config(redis_url=redis_url, log_level=log_level, log_json=log_json))
        self.refresh_s = refresh_s
        self.max_pending_bytes = max_pending_bytes
        self.restart_backoff_s = restart_backoff_s
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
        self._started_at = float("-inf")
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
        # started at once, not at the first flush: its imports (a few seconds of CPU on a busy
        # machine) are paid at start-up, in its own process
        try:
            self._running_child()
        except Exception:  # noqa: BLE001 - retried at the first frame
            log.exception("live_counters_child_failed_to_start")
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    break
                frame = self._pending.popleft()
                self._busy = True
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
            log.error("live_counters_child_died", pid=child.pid, returncode=child.returncode)
            self._child = None
        if self._closing or time.monotonic() - self._started_at < self.restart_backoff_s:
            return None
        return self._start_child(restart=child is not None)

    def _start_child(self, restart: bool) -> subprocess.Popen | None:
        self._started_at = time.monotonic()
        child = None
        try:
            with self._spawning:
                if self._closing:
                    return None
                child = subprocess.Popen(self.argv, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, bufsize=0, close_fds=True)
                self._child = child  # while it starts too: close() must be able to end it
            if self.nice:
                _lower_priority(child.pid, self.nice)
            _write_frame(child, _Frame(CONFIG, 0.0, self._config, b"", 0))
            with self._cond:
                lookups = self._lookups
            if lookups is not None:
                _write_frame(child, _Frame(LOOKUPS, 0.0, lookups, b"", 0))
            # its imports take a while: frames queue meanwhile (bounded, as ever); a child
            # killed meanwhile (close) ends this read
            if child.stdout.read(len(READY)) != READY:
                raise OSError(f"exited before it was ready (code {child.wait()})")
        except OSError as err:
            log.error("live_counters_child_failed_to_start", error=str(err)[:200])
            if child is not None:
                if child.poll() is None:
                    child.kill()  # half started: never leave it behind
                child.wait()
            self._child = None
            return None
        finally:
            self._ready.set()  # or failed: nobody waits for a child that will not come
        if restart:
            self.restarts += 1
            metrics.LIVE_COUNTERS_RESTARTS.inc()
            log.error("live_counters_child_restarted", pid=child.pid, restarts=self.restarts)
        return child

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
