"""The Valkey mirror the point look-up reads, so it never waits for ClickHouse.

Keys (the ``{profile_id}`` hash tag keeps a profile's keys in one cluster slot, beside its live
counters ``adtier:fl:{<profile_id>}:*``):

- ``adtier:ff:{<profile_id>}`` — the profile's latest live batch row: 20 decimal digits of its
  ``watermark``, then msgpack ``[schema_version, computed_at, *values of BATCH_NAMES]``
  (positional: ~200 bytes a profile). Written by ``batch.compute`` for the rows it inserts,
  only if not older than what is there (``_PUT``: a rebuild reading an older snapshot never
  replaces a newer row), deleted when the profile is excluded.
- ``adtier:fx`` — a set of the SHA-256 (hex) of every excluded profile id: kids, opted out,
  erased (erasures keep only that hash). The catalog routes add to it as they record an
  exclusion (``exclude``), before answering; ``sync_excluded`` re-derives it from ClickHouse.
- ``adtier:ff:ready:v<schema>`` — present once a full ``rebuild`` finished (value: the
  watermark it covered). Absent (a new or replaced Valkey, or a schema upgrade) means the
  mirror cannot be trusted: the look-up then reads ClickHouse (slower, same answer) and the
  feature scheduler of ``adtier serve`` rebuilds it.

Assumes Valkey never evicts keys (``maxmemory-policy noeviction``, as the ingest buffer
needs anyway): a missing row key then means "no batch features", not "evicted".
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import msgspec
import pyarrow as pa
import redis
import redis.asyncio as aredis
from clickhouse_connect.driver.client import Client

from adtier.features import schema as S
from adtier.features.live import LiveFeatures, bucket_keys, forget, last_key, live_features
from adtier.logs import get_logger
from adtier.privacy.exclusions import (
    EXCLUDED_SHA256_KEY,
    EXCLUDED_SHA256_SQL,
    Excluded,
    excluded_profile_hashes_sql,
    profile_sha256,
)
from adtier.store.valkey import is_cluster_client

__all__ = ["BATCH_NAMES", "EXCLUDED_KEY", "READY_KEY", "row_key", "profile_sha256", "encode_row",
           "decode_row", "put_rows", "exclude", "on_excluded", "drop_rows", "sync_excluded",
           "rebuild", "is_ready", "lookup"]

log = get_logger("adtier.features.mirror")

BATCH_NAMES = [c for c in S.FEATURE_COLUMNS if c != "computed_at"]
EXCLUDED_KEY = EXCLUDED_SHA256_KEY
READY_KEY = f"adtier:ff:ready:v{S.FEATURE_SCHEMA_VERSION}"
_PAIRS_PER_CALL = 500   # rows per script call: no call blocks Valkey for long
_CALLS_PER_TRIP = 20    # script calls per pipelined round trip: bounded client memory
_SET_CHUNK = 10_000

_enc = msgspec.msgpack.Encoder().encode
_dec = msgspec.msgpack.Decoder()

# ARGV: key, blob, key, blob, ... A blob starts with its 20-digit watermark; equal-length digit
# strings compare like the numbers (Lua numbers cannot hold ns stamps exactly).
# ARGV: (row key, blob, profile SHA-256) triples; KEYS[1] the exclusion set. A profile excluded
# while a compute ran (its snapshot predates an erasure) is not written back.
_PUT = """
for i = 1, #ARGV, 3 do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i + 2]) == 0 then
    local cur = redis.call('GETRANGE', ARGV[i], 0, 19)
    if cur == '' or cur <= string.sub(ARGV[i + 1], 1, 20) then
      redis.call('SET', ARGV[i], ARGV[i + 1])
    end
  end
end
return 0
"""

def row_key(profile_id: str) -> str:
    return f"adtier:ff:{{{profile_id}}}"


def encode_row(watermark: int, computed_at: object, values: list) -> bytes:
    return b"%020d" % watermark + _enc([S.FEATURE_SCHEMA_VERSION, computed_at, *values])


def decode_row(blob: bytes) -> tuple[object, dict[str, object]] | None:
    """(computed_at, {name: value}); None for a row of another schema version."""
    version, computed_at, *values = _dec.decode(blob[20:])
    if version != S.FEATURE_SCHEMA_VERSION or len(values) != len(BATCH_NAMES):
        return None
    return computed_at, dict(zip(BATCH_NAMES, values, strict=True))


# On a cluster: the rows of one primary per call (the script may touch several slots of its
# node; its first key routes it), the exclusion set asked apart (it lives on another slot).
_PUT_ON_NODE = "#!lua flags=allow-cross-slot-keys\n" + """
for i = 1, #ARGV, 2 do
  local cur = redis.call('GETRANGE', ARGV[i], 0, 19)
  if cur == '' or cur <= string.sub(ARGV[i + 1], 1, 20) then
    redis.call('SET', ARGV[i], ARGV[i + 1])
  end
end
return 0
"""


def _put_rows_cluster(client, rows: Iterable[tuple[str, bytes]]) -> int:
    """``put_rows`` on a cluster: exclusions checked before writing and again after (a profile
    excluded in between has its row deleted: ``exclude`` adds to the set before it deletes)."""
    script = client.register_script(_PUT_ON_NODE)
    written = 0
    chunk: list[tuple[str, bytes]] = []

    def flush_chunk() -> None:
        shas = [profile_sha256(p) for p, _ in chunk]
        excluded = client.smismember(EXCLUDED_KEY, shas)
        by_node: dict[str, list] = {}
        for (profile_id, blob), out in zip(chunk, excluded, strict=True):
            if not out:
                key = row_key(profile_id)
                by_node.setdefault(client.get_node_from_key(key).name, []).extend((key, blob))
        for args in by_node.values():
            script(keys=[args[0]], args=args)
        late = [p for (p, _), out in zip(chunk, client.smismember(EXCLUDED_KEY, shas),
                                         strict=True) if out]
        if late:
            drop_rows(client, late)

    for row in rows:
        chunk.append(row)
        written += 1
        if len(chunk) >= _PAIRS_PER_CALL:
            flush_chunk()
            chunk = []
    if chunk:
        flush_chunk()
    return written


def put_rows(client: redis.Redis, rows: Iterable[tuple[str, bytes]]) -> int:
    """Write (profile_id, blob) rows, newest wins, excluded profiles never; pipelined in
    bounded round trips."""
    if is_cluster_client(client):
        return _put_rows_cluster(client, rows)
    script = client.register_script(_PUT)
    pipe = client.pipeline(transaction=False)
    args: list = []
    calls = written = 0
    for profile_id, blob in rows:
        args += (row_key(profile_id), blob, profile_sha256(profile_id))
        written += 1
        if len(args) >= 3 * _PAIRS_PER_CALL:
            script(keys=[EXCLUDED_KEY], args=args, client=pipe)
            args, calls = [], calls + 1
            if calls >= _CALLS_PER_TRIP:
                pipe.execute()
                calls = 0
    if args:
        script(keys=[EXCLUDED_KEY], args=args, client=pipe)
    pipe.execute()
    return written


def drop_rows(client: redis.Redis, profile_ids: list[str]) -> None:
    for i in range(0, len(profile_ids), _SET_CHUNK):
        client.delete(*(row_key(p) for p in profile_ids[i:i + _SET_CHUNK]))


def exclude(client: redis.Redis, profile_ids: list[str]) -> None:
    """Publish exclusions at once (kids, opted out, erased): the look-up answers 404 from now
    on, and the profile's mirrored row and live counters are deleted. Call it after the
    exclusion is recorded in ClickHouse, so a rebuild can never miss it."""
    if not profile_ids:
        return
    for i in range(0, len(profile_ids), _SET_CHUNK):
        part = profile_ids[i:i + _SET_CHUNK]
        client.sadd(EXCLUDED_KEY, *(profile_sha256(p) for p in part))
        drop_rows(client, part)
        forget(client, part)


def on_excluded(_client: Client, r: redis.Redis, event: Excluded) -> None:
    """The feature feed's subscription to the exclusion event (``privacy.exclusions``)."""
    exclude(r, event.profile_ids)


def sync_excluded(client: Client, r: redis.Redis) -> tuple[int, int]:
    """Make ``adtier:fx`` equal to ClickHouse's exclusions; answers (added, removed).

    Members present before the snapshot was read and absent from it are removed (a kids
    profile made adult); members added concurrently by ``exclude`` after the read of
    ``before`` are never removed, because they are not in ``before``."""
    before = r.smembers(EXCLUDED_KEY)
    snapshot = {row[0].encode() for row in client.query(EXCLUDED_SHA256_SQL).result_rows}
    added, removed = list(snapshot - before), list(before - snapshot)
    for i in range(0, len(added), _SET_CHUNK):
        r.sadd(EXCLUDED_KEY, *added[i:i + _SET_CHUNK])
    for i in range(0, len(removed), _SET_CHUNK):
        r.srem(EXCLUDED_KEY, *removed[i:i + _SET_CHUNK])
    return len(added), len(removed)


@dataclass
class RebuildResult:
    excluded_added: int
    excluded_removed: int
    rows: int
    watermark: int


def _arrow_rows(batch: pa.RecordBatch) -> Iterator[tuple[str, bytes]]:
    cols = {name: batch.column(name).to_pylist() for name in batch.schema.names}
    for name in BATCH_NAMES:  # Map columns read back as [(key, value), ...]
        if pa.types.is_map(batch.schema.field(name).type):
            cols[name] = [dict(v) if v is not None else {} for v in cols[name]]
    for i, pid in enumerate(cols["profile_id"]):
        yield pid, encode_row(cols["watermark"][i], cols["computed_at"][i],
                              [cols[name][i] for name in BATCH_NAMES])


def rebuild(client: Client, r: redis.Redis) -> RebuildResult:
    """Rebuild the whole mirror from ClickHouse (start-up, a replaced Valkey, a new schema),
    then mark it ready. Streams block by block: memory stays bounded by one block."""
    added, removed = sync_excluded(client, r)
    upto = int(client.query("SELECT max(watermark) FROM profile_features").result_rows[0][0] or 0)
    sql = (f"SELECT profile_id, watermark, computed_at, {', '.join(BATCH_NAMES)} "
           "FROM profile_features FINAL WHERE deleted = 0 AND watermark <= {upto:UInt64} "
           f"AND profile_hash NOT IN ({excluded_profile_hashes_sql()})")
    rows = 0
    with client.query_arrow_stream(sql, parameters={"upto": upto},
                                   settings={"max_block_size": 65_536}) as stream:
        for batch in stream:
            if batch.num_rows:
                rows += put_rows(r, _arrow_rows(batch))
    r.set(READY_KEY, str(upto))
    log.info("features_mirror_rebuilt", rows=rows, excluded_added=added,
             excluded_removed=removed, watermark=upto)
    return RebuildResult(added, removed, rows, upto)


def is_ready(r: redis.Redis) -> bool:
    return bool(r.exists(READY_KEY))


# The look-up in one call: KEYS = ready, excluded set, row, last ad, hourly buckets...; ARGV[1]
# the profile's SHA-256. Answers {ready, excluded} alone when that settles it, else adds the row
# (nil if none), the last-ad hash, and the buckets' fields summed here (one small reply instead
# of 24 hashes to parse in Python: measured 0.78 -> 0.32 ms a look-up).
_LOOKUP = """
local out = {redis.call('EXISTS', KEYS[1]), redis.call('SISMEMBER', KEYS[2], ARGV[1])}
if out[1] == 0 or out[2] == 1 then return out end
out[3] = redis.call('GET', KEYS[3]) or false
out[4] = redis.call('HGETALL', KEYS[4])
local sums, flat = {}, {}
for i = 5, #KEYS do
  local h = redis.call('HGETALL', KEYS[i])
  for j = 1, #h, 2 do sums[h[j]] = (sums[h[j]] or 0) + tonumber(h[j + 1]) end
end
for k, v in pairs(sums) do flat[#flat + 1] = k; flat[#flat + 1] = v end
out[5] = flat
return out
"""
_scripts: dict[int, object] = {}
# On a cluster the ready flag and the exclusion set live in other slots than the profile's
# keys: asked first, then the profile's keys (all tagged {profile_id}) in one call.
_HEAD = """local out = {redis.call('EXISTS', KEYS[1]), redis.call('SISMEMBER', KEYS[2], ARGV[1])}
if out[1] == 0 or out[2] == 1 then return out end"""
_LOOKUP_PROFILE = _LOOKUP.replace(_HEAD, "local out = {1, 0}")
assert _LOOKUP_PROFILE != _LOOKUP


@dataclass
class Lookup:
    ready: bool
    excluded: bool = False
    row: tuple[object, dict[str, object]] | None = None  # decode_row's answer
    stale_row: bool = False  # a row of another schema version
    live: LiveFeatures | None = None


async def lookup(client: aredis.Redis, profile_id: str, now: float | None = None) -> Lookup:
    """Everything the point look-up needs, in one round trip (one script call)."""
    cluster = is_cluster_client(client)
    script = _scripts.get(id(client))
    if script is None:
        script = _scripts[id(client)] = client.register_script(
            _LOOKUP_PROFILE if cluster else _LOOKUP)
    keys = [READY_KEY, EXCLUDED_KEY, row_key(profile_id), last_key(profile_id),
            *bucket_keys(profile_id, now)]
    if cluster:
        if not await client.exists(READY_KEY):
            return Lookup(ready=False)
        if await client.sismember(EXCLUDED_KEY, profile_sha256(profile_id)):
            return Lookup(ready=True, excluded=True)
        keys[:2] = [keys[2], keys[2]]  # unused by the script; same slot as the rest
    reply = await script(keys=keys, args=[profile_sha256(profile_id)])
    if not reply[0]:
        return Lookup(ready=False)
    if reply[1]:
        return Lookup(ready=True, excluded=True)
    blob, raw_last, flat = reply[2], reply[3], reply[4]
    row = decode_row(blob) if blob is not None else None
    last = dict(zip(raw_last[::2], raw_last[1::2], strict=True)) if raw_last else None
    live = live_features(zip(flat[::2], flat[1::2], strict=True), last)
    return Lookup(ready=True, row=row, stale_row=blob is not None and row is None, live=live)
