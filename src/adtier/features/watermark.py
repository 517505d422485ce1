"""Write stamps (``watermark``) for ``profile_features``, and the export's safe upper bound.

A row is stamped before its insert commits. Without care, an export could read up to a stamp
W2 while a row stamped W1 < W2 is still being inserted (two writers: a compute and an export's
tombstones, or two processes); the next export starts after W2 and that row is never exported.

So every stamp is registered as *in flight* in the same atomic step that issues it, and
removed only after its insert committed (``stamped``). An export reads the largest committed
stamp M, then the smallest in-flight stamp F, and reads rows up to ``min(M, F - 1)``
(``safe_upto``). Why that is enough: a row stamped W <= that bound and not yet visible is still
in flight; if W was issued before F was read, F <= W (contradiction); if after, W is larger
than every stamp issued before M was read, so W > M (contradiction).

Two registries: ``RedisStamps`` (shared by every process on one Valkey: the server's compute
and exports, the CLI, several workers) and ``LocalStamps`` (one process; used when no Redis
client is given). Writers and exporters must use the same one to be covered.

A writer that dies leaves its stamp registered; stamps older than ``LEASE_NS`` (30 min, far
longer than one chunk insert) are dropped so exports never wait on it forever.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import redis

__all__ = ["Stamps", "RedisStamps", "stamps_for", "stamped", "safe_upto", "LEASE_NS",
           "INFLIGHT_KEY"]

LEASE_NS = 30 * 60 * 1_000_000_000
SEQ_KEY = "adtier:{ff}:seq"
INFLIGHT_KEY = "adtier:{ff}:inflight"


class Stamps(Protocol):
    def issue(self) -> int: ...

    def release(self, stamp: int) -> None: ...

    def floor(self) -> int | None:
        """The smallest stamp still in flight (None: none)."""
        ...


class LocalStamps:
    """In-process registry: one lock makes issue-and-register atomic."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0
        self._inflight: dict[int, int] = {}  # stamp -> monotonic ns when issued

    def issue(self) -> int:
        with self._lock:
            self._last = max(time.time_ns(), self._last + 1)
            self._inflight[self._last] = time.monotonic_ns()
            return self._last

    def release(self, stamp: int) -> None:
        with self._lock:
            self._inflight.pop(stamp, None)

    def floor(self) -> int | None:
        with self._lock:
            stale = time.monotonic_ns() - LEASE_NS
            for stamp in [s for s, at in self._inflight.items() if at < stale]:
                del self._inflight[stamp]
            return min(self._inflight, default=None)


# ARGV[1]: the caller's clock (ns, decimal). Stamps exceed 2^53, so Lua numbers (doubles) never
# hold them: equal-length decimal strings compare like numbers, and INCR is exact int64.
_ISSUE = """
local cand = ARGV[1]
local cur = redis.call('GET', KEYS[1])
local stamp
if (not cur) or #cur < #cand or (#cur == #cand and cur < cand) then
  redis.call('SET', KEYS[1], cand)
  stamp = cand
else
  stamp = tostring(redis.call('INCR', KEYS[1]))
end
redis.call('ZADD', KEYS[2], stamp, stamp)
return stamp
"""


class RedisStamps:
    """Registry in Valkey: a counter (strictly increasing across processes) and a sorted set of
    in-flight stamps (score ~ the stamp; ties resolved by the member, equal-length digits)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._issue = client.register_script(_ISSUE)

    def issue(self) -> int:
        return int(self._issue(keys=[SEQ_KEY, INFLIGHT_KEY], args=[str(time.time_ns())]))

    def release(self, stamp: int) -> None:
        self.client.zrem(INFLIGHT_KEY, str(stamp))

    def floor(self) -> int | None:
        self.client.zremrangebyscore(INFLIGHT_KEY, "-inf", time.time_ns() - LEASE_NS)
        first = self.client.zrange(INFLIGHT_KEY, 0, 0)
        return int(first[0]) if first else None


_local = LocalStamps()


def stamps_for(client: redis.Redis | None) -> Stamps:
    """The shared registry when a Redis client is given, else this process's."""
    return _local if client is None else RedisStamps(client)


@contextmanager
def stamped(stamps: Stamps) -> Iterator[int]:
    """A stamp that stays in flight until the block (the insert) is done."""
    stamp = stamps.issue()
    try:
        yield stamp
    finally:
        stamps.release(stamp)


def safe_upto(committed_max: int, stamps: Stamps) -> int:
    """The export's upper bound: the largest committed stamp, below every stamp in flight.
    ``committed_max`` must be read BEFORE calling this (see the module docstring)."""
    floor = stamps.floor()
    return committed_max if floor is None else min(committed_max, floor - 1)
