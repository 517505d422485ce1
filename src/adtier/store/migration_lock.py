"""One migrator at a time across a fleet: a renewed lease in the shared Valkey.

ClickHouse has no lock a client can take, and the ledger (``schema_migrations``) records a
migration only after its last statement, so two nodes starting at once would both see a
migration as new and both run it: DDL is idempotent (``IF NOT EXISTS``), but a backfill
(``INSERT ... SELECT`` in sql/0007, 0009) would be counted twice. Every node already shares the
Valkey buffer, so the lease lives there: the first node migrates, the others wait, then read a
ledger that says everything is applied.

The lease expires (``ttl_s``) if its holder dies, so a killed migrator never blocks a fleet for
good; a thread renews it while a long backfill runs. If a renewal fails (Valkey unreachable
for longer than the lease), another node may take the lease, so the holder stops: the runner
checks the lease before every statement and before recording a migration (``Lease.check``).
Waiters wait as long as the holder keeps renewing (a backfill can take half an hour), unless
``wait_s`` caps it. An embedded data dir needs none of this (one process owns it), but taking
the lease there is harmless.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.exceptions import LockError

from adtier.logs import get_logger

__all__ = ["LOCK_KEY", "Lease", "MigrationLeaseLost", "MigrationLockTimeout", "migration_lock"]

LOCK_KEY = "adtier:migrate:lock"
log = get_logger(__name__)


class MigrationLockTimeout(RuntimeError):
    pass


class MigrationLeaseLost(RuntimeError):
    pass


class Lease:
    """The held lease, as the migration runner sees it."""

    def __init__(self) -> None:
        self.lost = threading.Event()

    def check(self) -> None:
        """Raise before doing more work under a lease another node may now hold."""
        if self.lost.is_set():
            raise MigrationLeaseLost(
                f"the migration lease ({LOCK_KEY}) could not be renewed, so another node may "
                "be migrating: stopped; run `adtier migrate` again once Valkey is reachable")


@contextmanager
def migration_lock(client: redis.Redis, ttl_s: float = 60.0,
                   wait_s: float | None = None) -> Iterator[Lease]:
    """Hold the fleet's migration lease for the body; wait for it while its holder renews
    it (at most ``wait_s`` if given)."""
    lock = client.lock(LOCK_KEY, timeout=ttl_s, thread_local=False)
    _acquire(client, lock, ttl_s, wait_s)
    lease, stop = Lease(), threading.Event()
    renewer = threading.Thread(target=_renew, args=(lock, ttl_s, stop, lease),
                               name="migration-lease", daemon=True)
    renewer.start()
    try:
        yield lease
    finally:
        stop.set()
        renewer.join()
        try:
            lock.release()
        except (LockError, redis.RedisError) as err:  # expired or unreachable: it will expire
            log.error("migration_lease_not_released", key=LOCK_KEY, error=str(err))


def _acquire(client: redis.Redis, lock, ttl_s: float, wait_s: float | None) -> None:
    started = time.monotonic()
    while True:
        left = None if wait_s is None else wait_s - (time.monotonic() - started)
        if left is not None and left <= 0:
            raise MigrationLockTimeout(
                f"another node held the migration lock ({LOCK_KEY}) for more than {wait_s:.0f} s")
        if lock.acquire(blocking_timeout=ttl_s if left is None else min(left, ttl_s)):
            return
        log.info("migration_lease_waiting", key=LOCK_KEY, holder_ttl_ms=client.pttl(LOCK_KEY),
                 waited_s=round(time.monotonic() - started))


def _renew(lock, ttl_s: float, stop: threading.Event, lease: Lease) -> None:
    while not stop.wait(ttl_s / 3):
        try:
            lock.reacquire()
        except (LockError, redis.RedisError) as err:
            log.error("migration_lease_lost", key=LOCK_KEY, error=str(err))
            lease.lost.set()
            return
