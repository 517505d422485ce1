"""The server's lifespans, one per capability: each opens what it needs at start-up and closes
it at shutdown. Litestar enters them in order and leaves them in reverse, so a capability
started later (the flushers) stops before what it stands on (the stores); a start-up that
fails part-way closes what was already open.

``for_role`` picks a role's list: ``all`` runs everything; ``ingest`` opens no ClickHouse
and runs no flushers (events into the Valkey buffer only; ``adtier flush`` stores them).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio.to_thread
from litestar import Litestar

from adtier.auth import KeyCache, KeyRegistry
from adtier.catalog import holdout_mirror
from adtier.features.scheduler import FeatureScheduler
from adtier.ingest.buffer import IngestBuffer
from adtier.ingest.normalise import TimePolicy
from adtier.ingest.partitions import layout_for
from adtier.ingest.pixel import PixelBatcher
from adtier.ingest.service import IngestService
from adtier.ingest.wiring import consumer_names
from adtier.logs import get_logger
from adtier.runtime import (bootstrap_admin, default_consumer_name, live_feed, new_flusher,
                            open_stores)
from adtier.segments.restore import restore_redis
from adtier.segments.store import on_excluded as segments_on_excluded
from adtier.features.mirror import on_excluded as features_on_excluded
from adtier.settings import Settings
from adtier.state import AppState, app_state_of
from adtier.store.valkey import connect_redis, connect_redis_async

__all__ = ["for_role"]

log = get_logger("adtier.app")

Lifespan = Callable[[Litestar], AbstractAsyncContextManager[None]]


def for_role(settings: Settings) -> list[Lifespan]:
    if settings.role == "ingest":
        return [_stores(settings), ingest, ready]
    return [_stores(settings), segments, holdouts, ingest, flushers, features, ready]


def _stores(settings: Settings) -> Lifespan:
    @asynccontextmanager
    async def stores(app: Litestar) -> AsyncIterator[None]:
        """The stores and the app state; an ``all`` server also makes sure an admin key
        exists. Blocking, on purpose: the embedded Valkey is tied to the thread that starts it
        (PR_SET_PDEATHSIG fires when that thread ends), so it must be this long-lived one."""
        full = settings.role == "all"
        opened = open_stores(settings, clickhouse=full,
                             owner=f"adtier serve on http://{settings.host}:{settings.port}")
        if full and bootstrap_admin(opened) is not None:
            # `adtier serve` prints it, boxed, once the server is ready
            log.info("admin_key_generated", path=str(settings.data_dir / "admin_key"))
        client = connect_redis_async(opened.redis_url, max_connections=256)
        app.state.adtier = AppState(
            settings=settings, stores=opened, redis=client, keys=KeyCache(client),
            registry=KeyRegistry(opened.clickhouse, opened.redis) if full else None,
            api_clickhouse=opened.new_clickhouse() if full else None)
        try:
            yield
        finally:
            await client.aclose()
            opened.close()

    return stores


@asynccontextmanager
async def segments(app: Litestar) -> AsyncIterator[None]:
    """Valkey emptied or replaced (no live-version hash): reload the served segments' look-up
    sets from ClickHouse before answering look-ups. An exclusion recorded by the catalog
    leaves every built segment at once."""
    state = app_state_of(app)
    restore_redis(state.stores.clickhouse, state.stores.redis, only_if_missing=True)
    state.exclusions.subscribe(segments_on_excluded)
    yield


@asynccontextmanager
async def holdouts(app: Litestar) -> AsyncIterator[None]:
    """The look-up's holdout mirror: re-applied from ClickHouse on every start, not only when
    missing (one small query; versioned, so it never undoes a newer upsert), which also covers
    campaigns written straight into ClickHouse (the simulator's direct mode); then every
    minute, which repairs a publish lost after its ClickHouse insert and drops flights as they
    end (its own client: one query at a time)."""
    stores = app_state_of(app).stores
    holdout_mirror.restore(stores.clickhouse, stores.redis)
    task = asyncio.create_task(
        holdout_mirror.keep_restored(stores.new_clickhouse(), stores.redis))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@asynccontextmanager
async def ingest(app: Litestar) -> AsyncIterator[None]:
    """The request side of ingest: the Valkey buffer, the batch service, the pixel batcher."""
    state = app_state_of(app)
    settings = state.settings
    buffer = IngestBuffer(state.redis, settings.buffer_high_water_events,
                          settings.dedup_window_hours, settings.idempotency_ttl_s,
                          layout=layout_for(settings.partitions, settings.cluster_redis),
                          wait_replicas=settings.wait_replicas,
                          wait_timeout_ms=settings.buffer_wait_timeout_ms)
    state.ingest = IngestService(buffer, TimePolicy.from_settings(settings),
                                 settings.max_event_bytes)
    state.pixels = PixelBatcher(state.ingest)
    yield


@asynccontextmanager
async def flushers(app: Litestar) -> AsyncIterator[None]:
    """The in-process flushers (``ADTIER_FLUSHER_THREADS``), each with its own clients."""
    state = app_state_of(app)
    settings, stores = state.settings, state.stores
    # the live counters are counted in a child process: not on the request loop's GIL
    feed = live_feed(settings, stores.redis_url) if settings.flusher_enabled else None
    try:
        if feed is not None and not await anyio.to_thread.run_sync(feed.wait_ready, 30.0):
            log.warning("live_counters_child_not_ready")  # it goes on starting; counters wait
        if settings.flusher_enabled:
            names = consumer_names(default_consumer_name(settings), settings.flusher_threads,
                                   os.getpid() if settings.workers > 1 else None)
            for name in names:
                flusher = new_flusher(settings, stores.new_clickhouse(),
                                      connect_redis(stores.redis_url), name, feed)
                flusher.start()
                state.flushers.append(flusher)
        yield
    finally:
        for flusher in state.flushers:
            flusher.request_stop()
        for flusher in state.flushers:
            await anyio.to_thread.run_sync(flusher.stop)
        if feed is not None:
            await anyio.to_thread.run_sync(feed.close)


@asynccontextmanager
async def features(app: Litestar) -> AsyncIterator[None]:
    """Feature feed upkeep: the look-up's Valkey mirror, periodic batch computations."""
    state = app_state_of(app)
    state.exclusions.subscribe(features_on_excluded)  # out of the look-up's mirror at once
    scheduler = FeatureScheduler(state.settings.clickhouse_dsn, state.stores.redis,
                                 state.settings.features_compute_interval_s)
    scheduler.start()
    try:
        yield
    finally:
        await anyio.to_thread.run_sync(scheduler.stop)


@asynccontextmanager
async def ready(app: Litestar) -> AsyncIterator[None]:
    state = app_state_of(app)
    settings = state.settings
    # Full collections would rescan everything loaded at start-up on every pass; freeze it.
    gc.freeze()
    log.info("adtier_ready", role=settings.role,
             clickhouse=settings.clickhouse_dsn.split("?")[0] if settings.role == "all" else "",
             redis="embedded" if state.stores.valkey else "external",
             flushers=len(state.flushers))
    try:
        yield
    finally:
        if os.environ.get("ADTIER_FAILPOINT") == "hang_on_shutdown":
            time.sleep(3600)  # tests: a stuck shutdown must be ended by shutdown_timeout_s
