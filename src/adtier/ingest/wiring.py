"""A flusher put together from the settings: the one way ``adtier serve`` and ``adtier flush``
build theirs.

What runs after a block is stored (the feature feed's live counters) is not ingest's to know:
the caller passes a hook factory, called once per flusher with that flusher's own clients
(a ClickHouse client serves one thread at a time).
"""

from __future__ import annotations

from collections.abc import Callable

import redis
from clickhouse_connect.driver.client import Client

from adtier.ingest.buffer import Entry
from adtier.ingest.flusher import FlushBlocks, Flusher
from adtier.ingest.partitions import layout_for
from adtier.settings import Settings

__all__ = ["OnStored", "StoredHook", "build_flusher", "consumer_names"]

# Called after a flush is acknowledged, with its entries and (deduplicated) rows.
OnStored = Callable[[list[Entry], FlushBlocks], None]
# Makes one flusher's OnStored from that flusher's Valkey and ClickHouse clients.
StoredHook = Callable[[redis.Redis, Client], OnStored]


def build_flusher(settings: Settings, clickhouse: Client, redis_client: redis.Redis,
                  consumer: str, on_stored: StoredHook | None = None) -> Flusher:
    return Flusher(
        clickhouse,
        redis_client,
        consumer=consumer,
        max_rows=settings.flush_max_rows,
        max_seconds=settings.flush_max_seconds,
        claim_idle_ms=settings.claim_idle_ms,
        on_stored=on_stored(redis_client, clickhouse) if on_stored is not None else None,
        layout=layout_for(settings.partitions, settings.cluster_redis),
    )


def consumer_names(base: str, threads: int, pid: int | None = None) -> list[str]:
    """One consumer name per flusher thread of a server: ``base-0``, ``base-1``...; several
    workers on one host each run flushers, so then each worker's pid goes in too."""
    stem = base if pid is None else f"{base}-{pid}"
    return [f"{stem}-{index}" for index in range(threads)]
