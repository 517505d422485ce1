"""The server's Valkey clients tell Valkey who they are (CLIENT SETINFO: redis-py and its
version) from one description made once: redis-py otherwise reads its own package metadata for
every new pooled connection (~0.6 ms on the request loop each time the pool grows under load)."""

from __future__ import annotations

import asyncio

import redis

from adtier.embedded_valkey import EmbeddedValkey
from adtier.store.valkey import connect_redis, connect_redis_async


def test_clients_share_one_driver_description(valkey: EmbeddedValkey) -> None:
    first, second = connect_redis_async(valkey.url), connect_redis_async(valkey.url)
    sync = connect_redis(valkey.url)
    try:
        described = [c.connection_pool.connection_kwargs.get("driver_info")
                     for c in (first, second, sync)]
        assert described[0] is not None
        assert described[0] is described[1] is described[2]
    finally:
        asyncio.run(first.aclose())
        asyncio.run(second.aclose())
        sync.close()


def test_valkey_still_sees_the_library_and_its_version(valkey: EmbeddedValkey) -> None:
    async def seen() -> dict:
        client = connect_redis_async(valkey.url)
        try:
            return await client.client_info()
        finally:
            await client.aclose()

    info = asyncio.run(seen())
    assert info["lib-name"] == "redis-py"
    assert info["lib-ver"] == redis.__version__
