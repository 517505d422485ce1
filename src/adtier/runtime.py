"""Opening the stores a process needs, in one place for the server and the CLI."""

from __future__ import annotations

import fcntl
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import redis
from clickhouse_connect.driver.client import Client

from adtier.auth import KeyRegistry, NewKey, hash_key
from adtier.embedded_valkey import EmbeddedValkey
from adtier.logs import get_logger
from adtier.settings import Settings
from adtier.store import connect
from adtier.store.migrate import apply_migrations
from adtier.store.migration_lock import migration_lock
from adtier.store.valkey import connect_redis

if TYPE_CHECKING:
    from adtier.features.live_feed import LiveFeed
    from adtier.ingest.flusher import Flusher
    from adtier.ingest.wiring import StoredHook

__all__ = ["Stores", "DataDirBusy", "open_stores", "lock_data_dir", "data_dir_owner",
           "bootstrap_admin", "default_consumer_name", "new_flusher", "live_feed"]

log = get_logger("adtier.runtime")


@dataclass
class Stores:
    settings: Settings
    clickhouse: Client | None  # None in the ingest role (ADTIER_ROLE=ingest): Valkey only
    redis_url: str
    redis: redis.Redis
    valkey: EmbeddedValkey | None = None
    extra_clients: list[Client] = field(default_factory=list)
    lock_fd: int | None = None

    def new_clickhouse(self) -> Client:
        """Another handle on the same store, for another thread."""
        client = connect(self.settings.clickhouse_dsn)
        self.extra_clients.append(client)
        return client

    def close(self) -> None:
        for client in [*self.extra_clients, *([self.clickhouse] if self.clickhouse is not None else [])]:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        self.redis.close()
        if self.valkey is not None:
            self.valkey.stop()
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


class DataDirBusy(RuntimeError):
    pass


def data_dir_owner(data_dir: Path) -> str | None:
    """Who holds the data dir's lock ("adtier serve on http://... (pid 123)"), or None."""
    path = data_dir / "adtier.lock"
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return _owner_text(os.pread(fd, 512, 0))
    finally:
        os.close(fd)  # closing also releases a lock this probe took
    return None


def _owner_text(raw: bytes) -> str:
    pid, _, what = raw.decode(errors="replace").strip().partition("\n")
    return f"{what or 'another adtier process'} (pid {pid or '?'})"


def lock_data_dir(data_dir: Path, owner: str = "") -> int:
    """One adtier process owns an embedded data dir; the lock dies with the process. The file
    says who holds it (pid, then what), for the message a second process gets."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "adtier.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _owner_text(os.pread(fd, 512, 0))
        os.close(fd)
        raise DataDirBusy(f"the data dir {data_dir} is in use by {holder}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n{owner or 'adtier ' + ' '.join(sys.argv[1:3])}".encode(), 0)
    return fd



def open_stores(settings: Settings, migrate: bool = True, start_valkey: bool = True,
                owner: str = "", clickhouse: bool = True) -> Stores:
    """The stores of a process; ``clickhouse=False``: Valkey only (the ingest role)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock_fd = None
    if (clickhouse and settings.embedded_clickhouse) or settings.embedded_redis:
        lock_fd = lock_data_dir(settings.data_dir, owner)
    valkey = None
    redis_url = settings.redis_url
    if not redis_url:
        if not start_valkey:
            raise RuntimeError("ADTIER_REDIS_URL is not set and no embedded Valkey is running")
        valkey = EmbeddedValkey(settings.data_dir / "valkey")
        redis_url = valkey.start()
        log.info("embedded_valkey_started", url=redis_url)
    valkey_client = connect_redis(redis_url)
    if not clickhouse:
        return Stores(settings, None, redis_url, valkey_client, valkey, lock_fd=lock_fd)
    client = connect(settings.clickhouse_dsn)
    if migrate:
        applied = apply_migrations(client, cluster=settings.clickhouse_cluster,
                                   lock=migration_lock(valkey_client))
        if applied:  # one line, not one per file: a first start applies them all
            log.info("migrations_applied", count=len(applied),
                     names=[f"{m.version:04d}_{m.name}" for m in applied])
    return Stores(settings, client, redis_url, valkey_client, valkey, lock_fd=lock_fd)


def bootstrap_admin(stores: Stores) -> NewKey | None:
    """Make sure an admin key exists; return a newly generated one (to print once)."""
    registry = KeyRegistry(stores.clickhouse, stores.redis)
    settings = stores.settings
    if settings.admin_key:
        digest_known = stores.clickhouse.query(
            "SELECT count() FROM api_keys FINAL WHERE key_id = 'admin-env' AND revoked_at IS NULL "
            "AND key_hash = {h:String}",
            parameters={"h": hash_key(settings.admin_key)},
        ).result_rows[0][0]
        if not digest_known:
            registry.revoke("admin-env")  # the variable changed: the old secret stops working
            registry.create("admin", name="ADTIER_ADMIN_KEY", secret=settings.admin_key, key_id="admin-env")
        registry.sync_index()
        return None
    created = None
    if not registry.has_admin():
        created = registry.create("admin", name="bootstrap")
        path = settings.data_dir / "admin_key"
        path.write_text(created.key + "\n")
        os.chmod(path, 0o600)
    registry.sync_index()
    return created


def default_consumer_name(settings: Settings) -> str:
    """Stable across restarts on one host, so a restarted flusher redoes its own plan at once."""
    return settings.flusher_name or f"{socket.gethostname()}-{Path(settings.data_dir).resolve().name}"


def new_flusher(settings: Settings, clickhouse: Client, redis_client: redis.Redis,
                consumer: str, feed: "LiveFeed | None" = None) -> "Flusher":
    """A flusher as the server and ``adtier flush`` run it: with the feature feed subscribed to
    its stored blocks (``ADTIER_LIVE_COUNTERS``); ingest itself knows no consumer. With a
    ``feed`` (the serving process's) the counters are counted in its child process, else in
    the flusher's thread."""
    from adtier.ingest.wiring import build_flusher

    hook = feed.hook if feed is not None else stored_hook(settings)
    return build_flusher(settings, clickhouse, redis_client, consumer, hook)


def live_feed(settings: Settings, redis_url: str) -> "LiveFeed | None":
    """The serving process's live counters child (``features.live_feed``), if counters are on:
    its flushers share the GIL with the request loop, so the counting goes elsewhere."""
    if not settings.live_counters:
        return None
    from adtier.features.live_feed import LiveFeed

    return LiveFeed(redis_url, max_pending_bytes=settings.live_counters_max_pending_bytes,
                    log_level=settings.log_level, log_json=settings.log_as_json)


def stored_hook(settings: Settings) -> "StoredHook | None":
    """What every stored block feeds: the live per-profile counters of the feature feed."""
    if not settings.live_counters:
        return None
    from adtier.features.live import LiveCounters

    return lambda redis_client, clickhouse: LiveCounters(redis_client, clickhouse).on_stored
