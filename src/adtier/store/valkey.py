"""Opening Redis/Valkey from ``ADTIER_REDIS_URL``: one server, or a Redis/Valkey Cluster.

``redis://`` / ``rediss://`` / ``unix://`` open one server (redis-py's ``Redis``).
``redis+cluster://host:port[,host:port...]`` (``rediss+cluster://`` for TLS; user and password
as in ``redis://``) opens a cluster client that follows the topology (redis-py's
``RedisCluster``): the nodes listed are only seeds, any one reachable node is enough.

While a slot moves (resharding), a command on it may be answered ``ASK`` (go to the importing
node once) or ``TRYAGAIN`` (a multi-key command whose keys are split between the two nodes).
redis-py follows both, with two gaps filled here: an ``ASK`` towards a primary that owns no
slot yet (a node just added) is not in its node table (``get_node`` answers None and the
command fails with an AttributeError; redis-py issue 4015), and ``TRYAGAIN`` is retried only
for about half a second before ``ClusterError("TTL exhausted")``. ``retry_while_slot_moves``
retries a call through a whole slot migration.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import NodesManager as AsyncNodesManager
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import PRIMARY, ClusterNode, NodesManager, RedisCluster
from redis.driver_info import DriverInfo

__all__ = [
    "SLOT_MOVING",
    "connect_redis",
    "connect_redis_async",
    "is_cluster_client",
    "is_cluster_url",
    "retry_while_slot_moves",
    "retry_while_slot_moves_async",
]

T = TypeVar("T")

# What a call meets while its slot moves (or while a failover settles): worth trying again.
SLOT_MOVING = (redis.exceptions.TryAgainError, redis.exceptions.AskError,
               redis.exceptions.ClusterError)

_CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in _CLUSTER_SCHEMES


def is_cluster_client(client: object) -> bool:
    return isinstance(client, (RedisCluster, AsyncRedisCluster))


class _Nodes(NodesManager):
    __slots__ = ()

    def get_node(self, host=None, port=None, node_name=None):
        return super().get_node(host, port, node_name) or _ask_target(self, node_name, ClusterNode)


class _AsyncNodes(AsyncNodesManager):
    __slots__ = ()

    def get_node(self, host=None, port=None, node_name=None):
        return super().get_node(host, port, node_name) or _ask_target(
            self, node_name, partial(AsyncClusterNode, **self.connection_kwargs))


def _ask_target(manager, node_name: str | None, make):
    """The node of an ``ASK`` towards a primary that owns no slot yet (redis-py's table lists
    the nodes owning slots), added to the table as a MOVED to a new node would be."""
    if not node_name:
        return None
    host, _, port = node_name.rpartition(":")
    node = manager.nodes_cache[node_name] = make(host, int(port), PRIMARY)
    return node


def retry_while_slot_moves(call: Callable[[], T], budget_s: float = 30.0) -> T:
    """``call()``, tried again while its slot is being migrated (TRYAGAIN, ASK, the client's
    redirect budget exhausted), for up to ``budget_s``: a slot with many keys takes a while to
    move, and a multi-key script on it is refused until all its keys are on one node."""
    deadline = time.monotonic() + budget_s
    delay = 0.05
    while True:
        try:
            return call()
        except SLOT_MOVING:
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


async def retry_while_slot_moves_async(call: Callable[[], Awaitable[T]],
                                       budget_s: float = 30.0) -> T:
    """``retry_while_slot_moves`` for a coroutine."""
    deadline = time.monotonic() + budget_s
    delay = 0.05
    while True:
        try:
            return await call()
        except SLOT_MOVING:
            if time.monotonic() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)


def _cluster_options(url: str) -> tuple[list[tuple[str, int]], dict[str, object]]:
    scheme, rest = url.split("://", 1)
    userinfo, _, hosts = rest.rpartition("@")
    hosts = hosts.split("/", 1)[0].split("?", 1)[0]
    seeds = []
    for part in hosts.split(","):
        parsed = urlsplit(f"//{part}")
        if not parsed.hostname:
            raise ValueError(f"ADTIER_REDIS_URL: no host in {part!r}")
        seeds.append((parsed.hostname, parsed.port or 6379))
    options: dict[str, object] = {}
    if userinfo:
        user, _, password = userinfo.partition(":")
        options["username"] = unquote(user) or None
        options["password"] = unquote(password) or None
    if scheme.lower().startswith("rediss"):
        options["ssl"] = True
    return seeds, options


# What every client tells Valkey it is (CLIENT SETINFO), made once: without it redis-py reads
# its own package metadata for each new pooled connection (~0.6 ms on the request loop).
_DRIVER = DriverInfo()


def connect_redis(url: str, **kwargs: object) -> redis.Redis | RedisCluster:
    """A sync client for this URL (a cluster client for ``redis+cluster://``)."""
    kwargs.setdefault("driver_info", _DRIVER)
    if not is_cluster_url(url):
        return redis.Redis.from_url(url, **kwargs)
    seeds, options = _cluster_options(url)
    client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in seeds], **options, **kwargs)
    client.nodes_manager.__class__ = _Nodes  # shared with the client's pipelines
    return client


def connect_redis_async(url: str, max_connections: int = 256) -> aredis.Redis | AsyncRedisCluster:
    """An asyncio client for this URL (a cluster client for ``redis+cluster://``)."""
    if not is_cluster_url(url):
        return aredis.Redis.from_url(url, max_connections=max_connections, driver_info=_DRIVER)
    seeds, options = _cluster_options(url)
    client = AsyncRedisCluster(startup_nodes=[AsyncClusterNode(h, p) for h, p in seeds],
                               max_connections=max_connections, driver_info=_DRIVER, **options)
    client.nodes_manager.__class__ = _AsyncNodes  # shared with the client's pipelines
    return client
