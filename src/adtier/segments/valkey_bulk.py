"""Bulk set writes to Valkey for the segments' look-up sets: variadic ``SADD`` / ``SREM`` of
many ids, their RESP encoded with Arrow compute (no Python work per id) and pipelined by hand on
one connection (all sent, then all answers read).

Why not redis-py's pipeline: it builds each command from Python strings, one argument at a time.
On 1M ids (embedded Valkey, shared 2-core machine, best of 5) this writer took 1.13 s, the
pipeline 1.90 s from a list of str and 1.94 s from the Arrow array.

Every key written in one call must live on one node (the segments' keys share the ``{seg}``
hash tag): on a cluster the connection is that node's, found from ``route_key``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import redis

from adtier.store.valkey import is_cluster_client

__all__ = ["add_to_set", "remove_from_sets"]

SADD_BATCH = 50_000  # ids per SADD: big enough to amortise, small enough not to stall Valkey
SREM_BATCH = 10_000  # ids per SREM (an opt-out call carries at most 10,000)


def resp_sadd(key: bytes, ids: pa.Array) -> list[bytes]:
    """One ``SADD key id...`` in RESP, encoded with Arrow compute (no per-id Python work)."""
    return [_resp_head(b"SADD", key, len(ids)), _resp_ids(ids)]


def _resp_head(command: bytes, key: bytes, n: int) -> bytes:
    """The RESP header of a 4-letter set command on ``key`` with ``n`` members to follow."""
    return b"*%d\r\n$4\r\n%s\r\n$%d\r\n%s\r\n" % (n + 2, command, len(key), key)


def _resp_ids(ids: pa.Array) -> bytes:
    """The members of a set command in RESP, one bulk string each, encoded with Arrow."""
    lengths = pc.cast(pc.binary_length(ids), pa.string())
    body = pc.binary_join_element_wise("$", lengths, "\r\n", ids, "\r\n", "")
    offsets = np.frombuffer(body.buffers()[1], np.int32, len(body) + 1, body.offset * 4)
    return body.buffers()[2][int(offsets[0]):int(offsets[-1])].to_pybytes()


def add_to_set(r: redis.Redis, key: str, ids: pa.Array, expire: int = 0) -> None:
    """SADD ``ids`` to ``key`` (pipelined variadic SADDs); ``expire`` > 0 also (re)sets its
    time to live (a set being filled that nobody may ever rename: see ``store.move_set``)."""
    if not len(ids):
        return
    with _raw_connection(r, key) as conn:
        sent = 0
        for start in range(0, len(ids), SADD_BATCH):
            conn.send_packed_command(resp_sadd(key.encode(), ids.slice(start, SADD_BATCH)),
                                     check_health=False)
            sent += 1
        if expire > 0:
            conn.send_command("EXPIRE", key, expire, check_health=False)
            sent += 1
        _read_replies(conn, sent)


def remove_from_sets(r: redis.Redis, keys: Sequence[str], ids: pa.Array) -> None:
    """SREM ``ids`` from every one of ``keys`` (variadic SREMs of ``SREM_BATCH`` ids; the ids'
    part is the same for every key: encoded once, sent to each)."""
    if not keys or not len(ids):
        return
    bodies = [(len(chunk), _resp_ids(chunk))
              for chunk in (ids.slice(s, SREM_BATCH) for s in range(0, len(ids), SREM_BATCH))]
    with _raw_connection(r, keys[0]) as conn:
        for key in keys:
            for n, body in bodies:
                conn.send_packed_command([_resp_head(b"SREM", key.encode(), n), body],
                                         check_health=False)
        _read_replies(conn, len(keys) * len(bodies))


@contextmanager
def _raw_connection(r: redis.Redis, route_key: str) -> Iterator[Any]:
    """One pooled connection for hand-pipelined commands; dropped, not reused, if anything
    fails half-way (its unread replies would answer the next caller)."""
    if is_cluster_client(r):
        r = r.get_node_from_key(route_key).redis_connection  # the primary holding its slot
    conn = r.connection_pool.get_connection()
    try:
        yield conn
    except BaseException:
        conn.disconnect()
        raise
    finally:
        r.connection_pool.release(conn)


def _read_replies(conn: Any, sent: int) -> None:
    """Read all ``sent`` replies before raising the first error, so the connection stays in
    step with what was sent."""
    errors = []
    for _ in range(sent):
        try:
            conn.read_response()
        except redis.ResponseError as err:
            errors.append(err)
    if errors:
        raise errors[0]
