"""What request handlers reach through ``app.state``: opened in the lifespan, closed after."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio.to_thread
import redis.asyncio as aredis
from clickhouse_connect.driver.client import Client
from litestar import Request

from adtier.auth import ApiKey, KeyCache, KeyRegistry
from adtier.ingest.flusher import Flusher
from adtier.ingest.service import IngestService
from adtier.runtime import Stores
from adtier.settings import Settings

if TYPE_CHECKING:
    from adtier.ingest.pixel import PixelBatcher

__all__ = ["AppState", "app_state", "authorize"]


@dataclass
class AppState:
    settings: Settings
    stores: Stores
    redis: aredis.Redis
    keys: KeyCache
    registry: KeyRegistry
    ingest: IngestService
    api_clickhouse: Client
    pixels: "PixelBatcher"
    flushers: list[Flusher] = field(default_factory=list)

    async def query(self, sql: str, parameters: dict | None = None) -> list[tuple]:
        """A ClickHouse read off the event loop (the chdb backend is synchronous)."""
        return await anyio.to_thread.run_sync(
            lambda: self.api_clickhouse.query(sql, parameters=parameters or {}).result_rows
        )


def app_state(request: Request) -> AppState:
    return request.app.state.adtier


async def authorize(request: Request, *roles: str) -> ApiKey:
    return await app_state(request).keys.require(request.headers.get("authorization"), *roles)
