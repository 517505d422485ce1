"""One migrator at a time across a fleet: a renewed lease in the shared Valkey.

ClickHouse has no lock a client can take, and the ledger (``schema_migrations``) records a
migration only after its last statement, so two nodes starting at once would both see a
migration as new and both run it: DDL is idempotent (``IF NOT EXISTS``), but a backfill
(``INSERT ... SELECT`` in sql/0007, 0009) would be counted twice. Every node already shares the
Valkey buffer, so the lease lives there: the first node migrates, the others wait, then read a
ledger that says everything is applied.

The lease expires (``ttl_s``) if its holder dies, so a killed migrator never blocks a fleet for
good; a thread renews it while a long backfill runs. An embedded data dir needs none of this
(one process owns it), but taking the lease there is harmless.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.exceptions import LockError, LockNotOwnedError

from adtier.logs import get_logger

__all__ = ["LOCK_KEY", "MigrationLockTimeout", "migration_lock"]

LOCK_KEY = "adtier:migrate:lock"
log = get_logger(__name__)


class MigrationLockTimeout(RuntimeError):
    pass


@contextmanager
def migration_lock(client: redis.Redis, ttl_s: float = 60.0,
                   wait_s: float = 1800.0) -> Iterator[None]:
    """Hold the fleet's migration lease for the body; wait up to ``wait_s`` for it."""
    lease = client.lock(LOCK_KEY, timeout=ttl_s, blocking_timeout=wait_s, thread_local=False)
    if not lease.acquire():
        raise MigrationLockTimeout(
            f"another node held the migration lock ({LOCK_KEY}) for more than {wait_s:.0f} s")
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(lease, ttl_s, stop),
                               name="migration-lease", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        try:
            lease.release()
        except LockNotOwnedError:  # it expired while we ran: say so, the work is done
            log.warning("migration_lease_lost", key=LOCK_KEY)


def _renew(lease, ttl_s: float, stop: threading.Event) -> None:
    while not stop.wait(ttl_s / 3):
        try:
            lease.reacquire()
        except (LockError, redis.RedisError) as err:
            log.warning("migration_lease_not_renewed", error=str(err))
