"""Batch feature computations: one at a time per process, on demand or every N seconds.

``RUNNER`` is the process's single runner: ``POST /v1/features/compute`` and the scheduler
thread of ``adtier serve`` both go through ``try_start`` (a busy runner refuses), so two
computations never overlap in one process. Every run writes an audit record.

``FeatureScheduler`` (started in the app lifespan) keeps the Valkey mirror of the look-up
built — at start-up and whenever it disappears (a replaced Valkey) —, re-derives its exclusion
set from ClickHouse every minute (exclusions written around the catalog routes, e.g. a
simulator's direct load, are caught within a minute; the routes publish theirs at once), and,
when
``features_compute_interval_s`` > 0, starts a computation each interval (the first one
interval after start-up, so a restart does not recompute at once). With several workers on
one Valkey, the first to take ``SLOT_KEY`` (held for one interval) computes; the others skip.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time

import msgspec
import redis

from adtier.features import auditing, mirror
from adtier.features.batch import ComputeResult, compute
from adtier.logs import get_logger
from adtier.store import connect

__all__ = ["ComputeStatus", "ComputeRunner", "RUNNER", "FeatureScheduler"]

log = get_logger("adtier.features.scheduler")

SLOT_KEY = "adtier:ff:compute-slot"  # taken for one interval by the worker that computes
REBUILD_KEY = "adtier:ff:rebuild-lock"  # one worker rebuilds a missing mirror
EXCLUSIONS_EVERY_S = 60.0


class ComputeStatus(msgspec.Struct):
    running: bool
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    last: ComputeResult | None = None
    error: str | None = None
    by: str | None = None  # who started the running / last computation


class ComputeRunner:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.status = ComputeStatus(running=False)

    def try_start(self, by: str) -> ComputeStatus | None:
        """Mark a computation as running; None if one already is."""
        with self._lock:
            if self.status.running:
                return None
            self.status = ComputeStatus(running=True, started_at=dt.datetime.now(dt.UTC),
                                        last=self.status.last, by=by)
            return self.status

    def run(self, dsn: str, redis_client: redis.Redis, who: str, role: str) -> None:
        """Run a started computation to its end (on the caller's thread), audit it, and mark
        the runner free. Failures are kept in the status, never raised."""
        result, error = None, None
        client = connect(dsn)
        try:
            try:
                result = compute(client, redis_client=redis_client)
            except Exception as err:  # noqa: BLE001 - reported through the status
                error = f"{type(err).__name__}: {err}"[:1000]
                log.warning("features_compute_failed", error=error)
            try:
                auditing.record_compute(client, result, who=who, role=role, error=error)
            except Exception as err:  # noqa: BLE001 - the computation itself is done
                log.warning("features_compute_audit_failed", error=str(err)[:300])
        finally:
            client.close()
            with self._lock:
                self.status = ComputeStatus(
                    running=False, started_at=self.status.started_at,
                    finished_at=dt.datetime.now(dt.UTC), last=result or self.status.last,
                    error=error, by=self.status.by)

    def start_thread(self, dsn: str, redis_client: redis.Redis, who: str,
                     role: str) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(dsn, redis_client, who, role),
                                  name="adtier-features-compute", daemon=True)
        thread.start()
        return thread


RUNNER = ComputeRunner()


class FeatureScheduler:
    """The lifespan's feature thread: mirror upkeep every ``check_s``, compute every
    ``interval_s`` (0 = never)."""

    def __init__(self, dsn: str, redis_client: redis.Redis, interval_s: float,
                 check_s: float = 5.0, runner: ComputeRunner = RUNNER) -> None:
        self.dsn = dsn
        self.redis = redis_client
        self.interval_s = interval_s
        self.check_s = min(check_s, interval_s) if interval_s > 0 else check_s
        self.runner = runner
        self.next_compute = time.monotonic() + interval_s
        self.next_exclusions = time.monotonic() + EXCLUSIONS_EVERY_S
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="adtier-features-scheduler",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as err:  # noqa: BLE001 - try again at the next tick
                log.warning("features_scheduler_tick_failed", error=str(err)[:300])
            self._stop.wait(self.check_s)

    def ensure_mirror(self) -> bool:
        """Rebuild the look-up mirror if it is missing; answers whether it rebuilt."""
        if mirror.is_ready(self.redis):
            return False
        token = f"{os.getpid()}-{threading.get_ident()}"
        if not self.redis.set(REBUILD_KEY, token, nx=True, ex=600):
            return False  # another worker is rebuilding it
        client = connect(self.dsn)
        try:
            mirror.rebuild(client, self.redis)
        finally:
            client.close()
            if self.redis.get(REBUILD_KEY) == token.encode():
                self.redis.delete(REBUILD_KEY)
        return True

    def _sync_exclusions(self) -> None:
        client = connect(self.dsn)
        try:
            mirror.sync_excluded(client, self.redis)
        finally:
            client.close()

    def tick(self, now: float | None = None) -> str:
        """One round: answers what it did ("computed", "busy", "rebuilt" or "idle")."""
        now = time.monotonic() if now is None else now
        if self.interval_s > 0 and now >= self.next_compute:
            if self.runner.status.running:
                return "busy"  # started here by POST /v1/features/compute: try next tick
            # one computation per interval across the workers sharing this Valkey
            if not self.redis.set(SLOT_KEY, str(os.getpid()), nx=True,
                                  ex=max(1, int(self.interval_s))):
                self.next_compute = now + self.interval_s
                return "busy"
            if self.runner.try_start("scheduler") is None:
                return "busy"  # started in between: try next tick
            self.next_compute = now + self.interval_s
            self.runner.run(self.dsn, self.redis, "scheduler", "system")
            return "computed"
        if self.ensure_mirror():
            return "rebuilt"
        if now >= self.next_exclusions:
            self.next_exclusions = now + EXCLUSIONS_EVERY_S
            self._sync_exclusions()
        return "idle"
