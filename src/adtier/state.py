"""What request handlers reach through ``app.state``: opened in the lifespan, closed after."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread
import redis.asyncio as aredis
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError
from litestar import Litestar, Request

from adtier.api_error import ApiError
from adtier.auth import ApiKey, KeyCache, KeyRegistry
from adtier.ingest.flusher import Flusher
from adtier.ingest.service import IngestService
from adtier.logs import get_logger
from adtier.runtime import Stores
from adtier.settings import Settings

if TYPE_CHECKING:
    from adtier.ingest.pixel import PixelBatcher

__all__ = ["AppState", "app_state", "app_state_of", "authorize", "off_loop"]

T = TypeVar("T")


@dataclass
class AppState:
    """Filled by the lifespans (adtier.lifespans): the stores' first, then each capability's.
    In the ingest role ``registry`` and ``api_clickhouse`` stay None (no ClickHouse)."""

    settings: Settings
    stores: Stores
    redis: aredis.Redis
    keys: KeyCache
    registry: KeyRegistry | None = None
    api_clickhouse: Client | None = None
    ingest: IngestService = None  # type: ignore[assignment]  # set by the ingest lifespan
    pixels: "PixelBatcher" = None  # type: ignore[assignment]  # set by the ingest lifespan
    flushers: list[Flusher] = field(default_factory=list)

    async def query(self, sql: str, parameters: dict | None = None) -> list[tuple]:
        """A ClickHouse read off the event loop (the chdb backend is synchronous)."""
        return await anyio.to_thread.run_sync(
            lambda: self.api_clickhouse.query(sql, parameters=parameters or {}).result_rows
        )


def app_state(request: Request) -> AppState:
    return request.app.state.adtier


def app_state_of(app: Litestar) -> AppState:
    return app.state.adtier


async def authorize(request: Request, *roles: str) -> ApiKey:
    return await app_state(request).keys.require(request.headers.get("authorization"), *roles)


async def off_loop(area: str, fn: Callable[..., T], *args: Any) -> T:
    """A blocking ClickHouse call off the event loop, the one way route modules make it: a store
    failure is logged as ``<area>_store_error`` (logger ``adtier.<area>``) and answers 503 with
    Retry-After, since a retry is safe."""
    try:
        return await anyio.to_thread.run_sync(lambda: fn(*args))
    except ClickHouseError as err:
        get_logger(f"adtier.{area}").error(f"{area}_store_error", error=str(err)[:500])
        raise ApiError(503, "store_unavailable", "ClickHouse did not complete the request; retry",
                       {"Retry-After": "5"}) from err
