"""Opening Redis/Valkey from ``ADTIER_REDIS_URL``: one server, or a Redis/Valkey Cluster.

``redis://`` / ``rediss://`` / ``unix://`` open one server (redis-py's ``Redis``).
``redis+cluster://host:port[,host:port...]`` (``rediss+cluster://`` for TLS; user and password
as in ``redis://``) opens a cluster client that follows the topology (redis-py's
``RedisCluster``): the nodes listed are only seeds, any one reachable node is enough.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import ClusterNode, RedisCluster

__all__ = ["is_cluster_url", "connect_redis", "connect_redis_async", "is_cluster_client"]

_CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in _CLUSTER_SCHEMES


def is_cluster_client(client: object) -> bool:
    return isinstance(client, (RedisCluster, AsyncRedisCluster))


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


def connect_redis(url: str, **kwargs: object) -> redis.Redis | RedisCluster:
    """A sync client for this URL (a cluster client for ``redis+cluster://``)."""
    if not is_cluster_url(url):
        return redis.Redis.from_url(url, **kwargs)
    seeds, options = _cluster_options(url)
    return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in seeds], **options, **kwargs)


def connect_redis_async(url: str, max_connections: int = 256) -> aredis.Redis | AsyncRedisCluster:
    """An asyncio client for this URL (a cluster client for ``redis+cluster://``)."""
    if not is_cluster_url(url):
        return aredis.Redis.from_url(url, max_connections=max_connections)
    seeds, options = _cluster_options(url)
    return AsyncRedisCluster(startup_nodes=[AsyncClusterNode(h, p) for h, p in seeds],
                             max_connections=max_connections, **options)
