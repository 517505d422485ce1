"""The Litestar application factory: routes, error shape, OpenAPI, and the stores' lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from litestar import Litestar

from adtier import __version__
from adtier.auth import KeyCache, KeyRegistry
from adtier.catalog import CATALOG_ROUTES, holdout_mirror
from adtier.console import CONSOLE_API_ROUTES, CONSOLE_ROUTES, openapi_config
from adtier.embedded_valkey import die_with_parent
from adtier.errors import exception_handlers
from adtier.features.routes import FEATURE_ROUTES
from adtier.features.scheduler import FeatureScheduler
from adtier.ingest.buffer import IngestBuffer
from adtier.ingest.flusher import Flusher
from adtier.ingest.normalise import TimePolicy
from adtier.ingest.partitions import layout_for
from adtier.ingest.pixel import PixelBatcher, PixelTemplateController, pixel_route
from adtier.ingest.routes import EventsController
from adtier.ingest.vast_xml import VastController
from adtier.ingest.service import IngestService
from adtier.key_routes import KeysController
from adtier.logs import configure_logging, get_logger
from adtier.measure import MEASURE_ROUTES
from adtier.ops import OpsController
from adtier.console.headers import browser_headers_middleware
from adtier.request_ids import request_id_middleware
from adtier.runtime import bootstrap_admin, default_consumer_name, open_stores
from adtier.segments.build import restore_redis
from adtier.privacy.http import PRIVACY_ROUTES
from adtier.segments.routes import SEGMENT_ROUTES
from adtier.settings import Settings, load_settings
from adtier.state import AppState
from adtier.store.valkey import connect_redis, connect_redis_async

__all__ = ["create_app"]

log = get_logger("adtier.app")


def _lifespan(settings: Settings):
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # Blocking, on purpose: the embedded Valkey is tied to the thread that starts it
        # (PR_SET_PDEATHSIG fires when that thread ends), so it must be this long-lived one.
        stores = open_stores(settings,
                             owner=f"adtier serve on http://{settings.host}:{settings.port}")
        created = bootstrap_admin(stores)
        if created is not None:  # `adtier serve` prints it, boxed, once the server is ready
            log.info("admin_key_generated", path=str(settings.data_dir / "admin_key"))
        # Valkey emptied or replaced (no live-version hash): reload the served segments'
        # look-up sets from ClickHouse before answering look-ups.
        restore_redis(stores.clickhouse, stores.redis, only_if_missing=True)
        # The look-up's holdout mirror: re-applied from ClickHouse on every start, not only when
        # missing (one small query; versioned, so it never undoes a newer upsert), which also
        # covers campaigns written straight into ClickHouse (the simulator's direct mode).
        holdout_mirror.restore(stores.clickhouse, stores.redis)
        client = connect_redis_async(stores.redis_url, max_connections=256)
        layout = layout_for(settings.partitions, settings.cluster_redis)
        flushers = []
        if settings.flusher_enabled:
            # several workers on one host each run flushers: give each its own names
            base = default_consumer_name(settings) + (
                f"-{os.getpid()}" if settings.workers > 1 else "")
            for index in range(settings.flusher_threads):
                flusher = Flusher(
                    stores.new_clickhouse(),
                    connect_redis(stores.redis_url),
                    consumer=f"{base}-{index}",
                    max_rows=settings.flush_max_rows,
                    max_seconds=settings.flush_max_seconds,
                    claim_idle_ms=settings.claim_idle_ms,
                    live_counters=settings.live_counters,
                    layout=layout,
                )
                flusher.start()
                flushers.append(flusher)
        buffer = IngestBuffer(client, settings.buffer_high_water_events,
                              settings.dedup_window_hours, settings.idempotency_ttl_s,
                              layout=layout, wait_replicas=settings.wait_replicas,
                              wait_timeout_ms=settings.buffer_wait_timeout_ms)
        ingest = IngestService(buffer, TimePolicy.from_settings(settings), settings.max_event_bytes)
        app.state.adtier = AppState(
            settings=settings,
            stores=stores,
            redis=client,
            keys=KeyCache(client),
            registry=KeyRegistry(stores.clickhouse, stores.redis),
            ingest=ingest,
            pixels=PixelBatcher(ingest),
            api_clickhouse=stores.new_clickhouse(),
            flushers=flushers,
        )
        # Feature feed upkeep: the look-up's Valkey mirror, periodic batch computations.
        features = FeatureScheduler(settings.clickhouse_dsn, stores.redis,
                                    settings.features_compute_interval_s)
        features.start()
        # The holdout mirror re-applied every minute: repairs a publish lost after its
        # ClickHouse insert and drops flights as they end (its own client: one query at a time).
        holdouts = asyncio.create_task(
            holdout_mirror.keep_restored(stores.new_clickhouse(), stores.redis))
        # Full collections would rescan everything loaded at start-up on every pass; freeze it.
        gc.freeze()
        log.info("adtier_ready", clickhouse=settings.clickhouse_dsn.split("?")[0],
                 redis="embedded" if stores.valkey else "external", flushers=len(flushers))
        try:
            yield
        finally:
            if os.environ.get("ADTIER_FAILPOINT") == "hang_on_shutdown":
                time.sleep(3600)  # tests: a stuck shutdown must be ended by shutdown_timeout_s
            holdouts.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await holdouts
            await anyio.to_thread.run_sync(features.stop)
            for flusher in flushers:
                flusher.request_stop()
            for flusher in flushers:
                await anyio.to_thread.run_sync(flusher.stop)
            await client.aclose()
            stores.close()

    return lifespan


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or load_settings()
    # Flusher threads share the GIL with the request loop; a short switch interval keeps a
    # flusher's Python work from holding up each of the many small wake-ups of a request.
    sys.setswitchinterval(0.0005)
    if os.environ.get("ADTIER_DIE_WITH_PARENT") == "1":
        die_with_parent()  # a server worker must not outlive `adtier serve`, even after SIGKILL
    configure_logging(settings.log_level, settings.log_as_json)
    return Litestar(
        route_handlers=[EventsController, PixelTemplateController, pixel_route, KeysController, OpsController,
                        *CATALOG_ROUTES, *SEGMENT_ROUTES, *MEASURE_ROUTES, *FEATURE_ROUTES,
                        VastController, *CONSOLE_ROUTES, *CONSOLE_API_ROUTES, *PRIVACY_ROUTES],
        lifespan=[_lifespan(settings)],
        exception_handlers=exception_handlers,
        middleware=[request_id_middleware, browser_headers_middleware],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=openapi_config(__version__),
    )
