"""Segment definitions, membership versions and the Redis look-up sets (sync; off the loop).

ClickHouse (``sql/0004_segments.sql``) is the record: ``segments`` holds one row per state
change (readers use FINAL), ``segment_members`` one row per (segment, version, profile),
sorted by (segment, version, profile_hash) since ``sql/0012``: a build's members come in hash
order, so ClickHouse does not sort the rows it inserts.

Redis holds what ad decisioning reads, without touching ClickHouse:

- ``adtier:{seg}:m:{segment_id}:{version}`` — a set of the profile ids of one built version;
- ``adtier:{seg}:live`` — a hash segment_id -> ``"{version}|{owner}"``: which version is served.

A new version's set is filled first (invisible: nothing points at it), then one ``HSET`` on the
live hash switches every reader to it at once, then the old set is unlinked.

Bulk writes (a build of 20 segments over 1M profiles writes ~6.4M members): member rows go to
ClickHouse as Arrow blocks of up to 1M rows (``insert_arrow``), and the Redis set is filled with
variadic ``SADD``s of 50k ids whose RESP encoding is built by Arrow compute kernels and
pipelined on one connection (no per-id Python work); a shared build fills the sets during its
pass under private keys (``add_to_set``) and renames them to their versions (``move_set``).
The look-up is one Lua call: for each live segment, ``SISMEMBER`` on its current set, so a
reader sees either the old or the new membership of a segment, never a mix. Cost per look-up
grows with the number of live segments (~0.2 µs each inside Valkey); keys are not declared to
the script, so this needs a single Redis node (not Redis Cluster) — true of adtier's
deployments.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import redis
from clickhouse_connect.driver.client import Client

from adtier.privacy.exclusions import RECENT_ERASURES_SQL, Excluded, profile_sha256
from adtier.segments.valkey_bulk import add_to_set, remove_from_sets
from adtier.store.valkey import is_cluster_client

__all__ = [
    "LIVE",
    "on_excluded",
    "SegmentRow",
    "member_key",
    "lock_key",
    "write_state",
    "get_segment",
    "list_segments",
    "next_version",
    "next_versions",
    "get_segments",
    "write_states",
    "swap_many",
    "as_arrow_ids",
    "members_table",
    "insert_members",
    "delete_versions",
    "drop_members",
    "member_ids",
    "stage_redis",
    "move_set",
    "restore_set",
    "drop_redis",
    "LOOKUP_LUA",
    "lookup_call",
    "overlap",
    "forget_profiles",
]

# Every segment key shares the hash tag {seg}: the look-up script reads the live hash and the
# member sets it names in one call, and a build renames sets into place (one slot on a Valkey
# Cluster, so one primary holds the segments). Keys of the untagged names are dropped once.
LIVE = "adtier:{seg}:live"
_UNTAGGED_LIVE = "adtier:seg:live"
_INSERT_BATCH = 1_000_000  # rows per insert_arrow (each insert costs ~13 ms on chdb)

_COLUMNS = ("segment_id", "name", "kind", "owner", "definition", "status", "version", "size",
            "built_at", "data_through", "error", "created_at", "created_by", "updated_at",
            "row_version")


def member_key(segment_id: str, version: int) -> str:
    return f"adtier:{{seg}}:m:{segment_id}:{version}"


def lock_key(segment_id: str) -> str:
    return f"adtier:{{seg}}:lock:{segment_id}"


class SegmentRow(msgspec.Struct, kw_only=True):
    segment_id: str
    name: str
    kind: str
    owner: str
    definition: str  # JSON
    status: str = "pending"
    version: int = 0
    size: int = 0
    built_at: dt.datetime | None = None
    data_through: dt.datetime | None = None
    error: str = ""
    created_at: dt.datetime
    created_by: str = ""
    updated_at: dt.datetime | None = None
    row_version: int = 0

    def definition_json(self) -> dict[str, Any]:
        return msgspec.json.decode(self.definition)


def _utc(value: Any) -> Any:
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


def write_state(client: Client, row: SegmentRow, **changes: Any) -> SegmentRow:
    """Write a new row (the whole segment) with ``changes`` applied; returns it."""
    return write_states(client, [(row, changes)])[0]


def write_states(client: Client, updates: Sequence[tuple[SegmentRow, dict[str, Any]]]
                 ) -> list[SegmentRow]:
    """``write_state`` for several segments in one insert (a build of many segments)."""
    now = dt.datetime.now(dt.timezone.utc)
    new = [msgspec.structs.replace(row, **changes, updated_at=now,
                                   row_version=max(time.time_ns(), row.row_version + 1))
           for row, changes in updates]
    if new:
        client.insert("segments", [[getattr(n, c) for c in _COLUMNS] for n in new],
                      column_names=list(_COLUMNS))
    return new


def _from(named: dict[str, Any]) -> SegmentRow:
    return SegmentRow(**{k: _utc(v) for k, v in named.items()})


def get_segment(client: Client, segment_id: str) -> SegmentRow | None:
    rows = list(client.query(
        f"SELECT {', '.join(_COLUMNS)} FROM segments FINAL WHERE segment_id = {{id:String}}",
        parameters={"id": segment_id}).named_results())
    return _from(rows[0]) if rows else None


def get_segments(client: Client, segment_ids: Sequence[str]) -> dict[str, SegmentRow]:
    """``get_segment`` for several segments in one query (absent ones are left out)."""
    rows = client.query(
        f"SELECT {', '.join(_COLUMNS)} FROM segments FINAL "
        "WHERE segment_id IN {ids:Array(String)}", parameters={"ids": list(segment_ids)}
    ).named_results()
    return {r["segment_id"]: _from(r) for r in rows}


def list_segments(client: Client, owners: Sequence[str] | None = None) -> list[SegmentRow]:
    """Every segment, or those whose owner is in ``owners`` ('' = platform)."""
    where, params = "", {}
    if owners is not None:
        where, params = "WHERE owner IN {owners:Array(String)}", {"owners": list(owners)}
    rows = client.query(
        f"SELECT {', '.join(_COLUMNS)} FROM segments FINAL {where} ORDER BY created_at, segment_id",
        parameters=params).named_results()
    return [_from(r) for r in rows]


def next_version(client: Client, row: SegmentRow) -> int:
    """A version no row of this segment has used (a failed build's rows may remain)."""
    return next_versions(client, [row])[row.segment_id]


def next_versions(client: Client, rows: Sequence[SegmentRow]) -> dict[str, int]:
    """``next_version`` of several segments in one query."""
    used = dict(client.query(
        "SELECT segment_id, max(version) FROM segment_members "
        "WHERE segment_id IN {ids:Array(String)} GROUP BY segment_id",
        parameters={"ids": [row.segment_id for row in rows]}).result_rows)
    return {row.segment_id: max(int(used.get(row.segment_id) or 0), row.version) + 1
            for row in rows}


def as_arrow_ids(profile_ids: Sequence[str] | np.ndarray | pa.Array) -> pa.Array:
    """Profile ids as one Arrow string array (no per-id Python work for NumPy/Arrow input)."""
    if isinstance(profile_ids, pa.ChunkedArray):
        profile_ids = profile_ids.combine_chunks()
    if isinstance(profile_ids, pa.Array):
        return profile_ids.cast(pa.string())
    if isinstance(profile_ids, np.ndarray) and profile_ids.dtype.kind == "U":
        return pa.array(profile_ids, pa.string())
    return pa.array(profile_ids if isinstance(profile_ids, np.ndarray) else list(profile_ids),
                    pa.string())


def members_table(segment_id: str, version: int, ids: pa.Array) -> pa.Table:
    m = len(ids)
    return pa.table({
        "segment_id": pa.DictionaryArray.from_arrays(pa.array(np.zeros(m, np.int32)),
                                                     pa.array([segment_id], pa.string())
                                                     ).cast(pa.string()),
        "version": pa.array(np.full(m, version, np.uint64)),
        "profile_id": ids,
    })


def insert_members(client: Client, segment_id: str, version: int,
                   profile_ids: Sequence[str] | np.ndarray | pa.Array) -> int:
    """One version's members, as Arrow blocks of ``_INSERT_BATCH`` rows (``insert_arrow``)."""
    ids = as_arrow_ids(profile_ids)
    n = len(ids)
    for start in range(0, n, _INSERT_BATCH):
        client.insert_arrow("segment_members",
                            members_table(segment_id, version, ids.slice(start, _INSERT_BATCH)))
    return n


def delete_versions(client: Client, segment_id: str, where: str, **params: Any) -> None:
    """Delete some versions of a segment's members (``where`` over ``version``)."""
    client.command(
        f"DELETE FROM segment_members WHERE segment_id = {{id:String}} AND ({where})",
        parameters={"id": segment_id, **params}, settings={"lightweight_deletes_sync": 2})


def drop_members(client: Client, r: redis.Redis, segment_id: str, version: int,
                 profile_ids: Sequence[str]) -> None:
    """Remove some profiles from one version, in ClickHouse and its Valkey set (a build drops
    the profiles excluded while it ran)."""
    if not profile_ids:
        return
    client.command(
        "DELETE FROM segment_members WHERE segment_id = {id:String} AND version = {v:UInt64} "
        "AND profile_id IN {p:Array(String)}",
        parameters={"id": segment_id, "v": version, "p": list(profile_ids)},
        settings={"lightweight_deletes_sync": 2})
    r.srem(member_key(segment_id, version), *profile_ids)


def member_ids(client: Client, segment_id: str, version: int) -> list[str]:
    return [r[0] for r in client.query(
        "SELECT profile_id FROM segment_members WHERE segment_id = {id:String} "
        "AND version = {v:UInt64} ORDER BY profile_id",
        parameters={"id": segment_id, "v": version}).result_rows]


def stage_redis(r: redis.Redis, segment_id: str, version: int,
                profile_ids: Iterable[str] | np.ndarray | pa.Array) -> None:
    """Fill the (not yet visible) set of a new version: variadic SADDs of ``_SADD_BATCH`` ids,
    encoded in bulk with Arrow and pipelined on one connection (all sent, then all answers)."""
    fill_set(r, member_key(segment_id, version),
             as_arrow_ids(profile_ids if isinstance(profile_ids, (np.ndarray, pa.Array,
                                                                  pa.ChunkedArray, list))
                          else list(profile_ids)))


def fill_set(r: redis.Redis, key: str, ids: pa.Array) -> None:
    """``key`` becomes the set of ``ids`` (emptied first; no key at all when there are none)."""
    r.unlink(key)
    add_to_set(r, key, ids)


def drop_untagged(r: redis.Redis) -> int:
    """Unlink the sets and live hash of the names used before the {seg} tag (an upgraded
    Valkey); the tagged ones are restored from ClickHouse. Answers the keys dropped."""
    if is_cluster_client(r) or not r.exists(_UNTAGGED_LIVE):
        return 0
    old = [f"adtier:seg:m:{sid.decode()}:{value.decode().split('|', 1)[0]}"
           for sid, value in r.hgetall(_UNTAGGED_LIVE).items()]
    for i in range(0, len(old), 1000):
        r.unlink(*old[i:i + 1000])
    r.unlink(_UNTAGGED_LIVE)
    return len(old) + 1


_MOVE_SET = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('RENAME', KEYS[1], KEYS[2])
  redis.call('PERSIST', KEYS[2])
else
  redis.call('UNLINK', KEYS[2])
end
return 1
"""


def move_set(r: redis.Redis, source: str, key: str) -> None:
    """``key`` becomes the set filled under ``source`` (RENAME: O(1)), without the time to
    live the fill put on it; no key at all when nothing was added (an empty set)."""
    r.eval(_MOVE_SET, 2, source, key)


def restore_set(client: Client, r: redis.Redis, segment_id: str, version: int,
                owner: str) -> int:
    """Reload one served version's set from ``segment_members`` and point the live hash at it
    (Valkey replaced or emptied). Filled under a side key, then RENAMEd over the real one
    (atomic), so a reader never sees it half-full. Answers the number of members."""
    ids = client.query_arrow(
        "SELECT profile_id FROM segment_members WHERE segment_id = {id:String} "
        "AND version = {v:UInt64}", parameters={"id": segment_id, "v": version}
    ).column("profile_id").combine_chunks()
    key = member_key(segment_id, version)
    side = key + ":restoring"
    fill_set(r, side, as_arrow_ids(ids))
    if len(ids):
        r.rename(side, key)
        _forget_recent_erasures(client, r, key, ids)
    else:
        r.unlink(key)
    r.hset(LIVE, segment_id, f"{version}|{owner}")
    return len(ids)


# An erasure records itself, SREMs the profile from the served sets, then deletes its members.
# One that ran while a set was being reloaded may have had its id read before the delete and
# removed from the old set before the RENAME: take recent erasures out of the reloaded set.
def _forget_recent_erasures(client: Client, r: redis.Redis, key: str, ids: pa.Array) -> None:
    erased = {row[0] for row in client.query(RECENT_ERASURES_SQL).result_rows}
    if not erased:
        return
    gone = [p for p in ids.to_pylist() if profile_sha256(p) in erased]
    if gone:
        r.srem(key, *gone)


def swap_redis(r: redis.Redis, segment_id: str, version: int, owner: str,
               old_version: int) -> None:
    """Serve ``version`` from now on (one HSET: atomic), then drop the old set."""
    swap_many(r, [(segment_id, version, owner, old_version)])


def swap_many(r: redis.Redis, swaps: Sequence[tuple[str, int, str, int]]) -> None:
    """``swap_redis`` for several (segment, version, owner, old version) at once: one HSET
    switches readers to all the new versions together, then one UNLINK drops the old sets."""
    if not swaps:
        return
    r.hset(LIVE, mapping={sid: f"{version}|{owner}" for sid, version, owner, _ in swaps})
    old = [member_key(sid, o) for sid, v, _, o in swaps if o and o != v]
    if old:
        r.unlink(*old)


def drop_redis(r: redis.Redis, segment_id: str, version: int) -> None:
    r.unlink(member_key(segment_id, version))


# One round trip, every key declared (a cluster checks declared keys while their slot moves):
# KEYS[1] the live hash, KEYS[2..] the member sets of the live segments as the caller last saw
# them; ARGV[1] the profile, ARGV[2..] (segment_id, live value) per member set, in KEYS order.
# Answers {'ok', segment_id, owner, ...} of the live segments holding the profile, or, when the
# live hash is no longer what the caller saw (a build swapped a version in), {'stale', field,
# value, ...}: the hash now, for the caller to declare its sets and ask again.
LOOKUP_LUA = """
local live = redis.call('HGETALL', KEYS[1])
local fresh = #live == #ARGV - 1
if fresh then
  local now = {}
  for i = 1, #live, 2 do now[live[i]] = live[i + 1] end
  for i = 2, #ARGV, 2 do
    if now[ARGV[i]] ~= ARGV[i + 1] then fresh = false break end
  end
end
if not fresh then
  table.insert(live, 1, 'stale')
  return live
end
local out = {'ok'}
for i = 2, #KEYS do
  if redis.call('SISMEMBER', KEYS[i], ARGV[1]) == 1 then
    local sid, value = ARGV[2 * i - 2], ARGV[2 * i - 1]
    out[#out + 1] = sid
    out[#out + 1] = string.sub(value, string.find(value, '|', 1, true) + 1)
  end
end
return out
"""


def lookup_call(live: Sequence[tuple[str, str]], profile_id: str) -> tuple[list[str], list[str]]:
    """(KEYS, ARGV) of a ``LOOKUP_LUA`` call, given the live hash as (segment_id, value) pairs
    last seen (``[]`` at first: the answer is then the hash to ask again with)."""
    keys = [LIVE] + [member_key(sid, int(value.split("|", 1)[0])) for sid, value in live]
    return keys, [profile_id, *(x for pair in live for x in pair)]


def overlap(client: Client, current: dict[str, int]) -> dict[tuple[str, str], int]:
    """Exact |A ∩ B| for every pair (a <= b) of segments at the given versions (incl. a == b)."""
    if not current:
        return {}
    ids = list(current)
    versions = [current[s] for s in ids]
    rows = client.query(
        """
        SELECT s1, s2, count() FROM (
            SELECT profile_id, groupArray(segment_id) AS segs FROM segment_members
            WHERE (segment_id, version) IN (
                SELECT tupleElement(t, 1), tupleElement(t, 2)
                FROM (SELECT arrayJoin(arrayZip({ids:Array(String)}, {vs:Array(UInt64)})) AS t))
            GROUP BY profile_id
        ) ARRAY JOIN segs AS s1 ARRAY JOIN segs AS s2
        WHERE s1 <= s2
        GROUP BY s1, s2
        """, parameters={"ids": ids, "vs": versions}).result_rows
    return {(a, b): int(n) for a, b, n in rows}


# The profiles {p:Array(String)}, by their sort-key hash first (sql/0012: profile_hash is
# MATERIALIZED cityHash64(profile_id), last in the key): ClickHouse then skips the granules of
# every (segment, version) range that cannot hold them, instead of reading every profile_id.
# The profile_id test stays: a hash collision must not take another profile out.
_BY_PROFILE = ("profile_hash IN (SELECT cityHash64(arrayJoin({p:Array(String)}))) "
               "AND profile_id IN {p:Array(String)}")


def on_excluded(client: Client, r: redis.Redis, event: Excluded) -> None:
    """Segments' subscription to the exclusion event (``privacy.exclusions``)."""
    forget_profiles(client, r, event.profile_ids, uploads=event.erased)


def forget_profiles(client: Client, r: redis.Redis, profile_ids: Sequence[str], *,
                    uploads: bool = False) -> list[str]:
    """Take profiles out of every built segment at once, not at the next build: an opt-out,
    a kids' profile, an erasure (docs/privacy.md: they are never members).

    In this order: the live Valkey sets (the look-up stops serving them first; every live
    set, whatever ClickHouse says, so a retry after a failure further on still cleans Valkey),
    then their ``segment_members`` rows of every built version (served, previous, one being
    built: one DELETE), then the recorded ``size`` of each segment whose served version lost
    members (``_record_sizes``). ``uploads``: also from the uploaded lists of static segments
    (version 0) — an erasure only: a build filters exclusions out of a list, and a kids'
    profile made adult again belongs in it. Answers the segments whose served size shrank.

    A build running meanwhile re-checks the exclusions recorded since it started
    (``build.drop_excluded``), so its new version leaves them out too; the caller records the
    exclusion before calling this. Left as is: a call failing between its DELETE and the size
    row leaves that size to the next build (a retry finds no rows left to recount)."""
    ids = list(dict.fromkeys(profile_ids))
    if not ids:
        return []
    _srem_live(r, ids)
    lowest = 0 if uploads else 1
    held = dict(client.query(
        "SELECT segment_id, groupUniqArray(version) FROM segment_members "
        f"WHERE version >= {{v:UInt64}} AND {_BY_PROFILE} GROUP BY segment_id",
        parameters={"v": lowest, "p": ids}).result_rows)
    if not held:
        return []
    client.command(
        "DELETE FROM segment_members WHERE segment_id IN {s:Array(String)} "
        f"AND version >= {{v:UInt64}} AND {_BY_PROFILE}",
        parameters={"s": list(held), "v": lowest, "p": ids},
        settings={"lightweight_deletes_sync": 2})
    return _record_sizes(client, {sid: set(vs) for sid, vs in held.items()})


def _srem_live(r: redis.Redis, ids: list[str]) -> None:
    """SREM ``ids`` from every live set, in bulk (``valkey_bulk``)."""
    live = r.hgetall(LIVE)
    if not live:
        return
    keys = [member_key(sid.decode(), int(value.decode().split("|", 1)[0]))
            for sid, value in live.items()]
    remove_from_sets(r, keys, as_arrow_ids(ids))


def _record_sizes(client: Client, held: dict[str, set[int]]) -> list[str]:
    """Recount the served version of each segment of ``held`` (segment -> versions that lost
    rows) and record the smaller size, so ``size`` (GET, overlap) stays what is served.

    No lock, and no build is overwritten: the row is written with ``row_version`` = the row
    read + the members it lost. A build's or anyone's later state change carries the wall
    clock in ns, far above that, so it wins (a commit naming a new version is never undone by
    a late recount); and between builds a served version only shrinks, so of two recounts
    racing from one row the later count (smaller) has the larger row_version and wins. Left
    as is: a build that started before this recount and then fails records again the size it
    read at its start (off by these profiles until the next build)."""
    rows = get_segments(client, list(held))
    served = {sid: row.version for sid, row in rows.items()
              if row.version > 0 and row.version in held[sid]}
    if not served:
        return []
    ids = list(served)
    counts = dict(client.query(
        """
        SELECT segment_id, count() FROM segment_members
        WHERE (segment_id, version) IN (
            SELECT tupleElement(t, 1), tupleElement(t, 2)
            FROM (SELECT arrayJoin(arrayZip({ids:Array(String)}, {vs:Array(UInt64)})) AS t))
        GROUP BY segment_id
        """, parameters={"ids": ids, "vs": [served[s] for s in ids]}).result_rows)
    now = dt.datetime.now(dt.timezone.utc)
    new = [msgspec.structs.replace(rows[sid], size=int(counts.get(sid, 0)), updated_at=now,
                                   row_version=rows[sid].row_version + rows[sid].size
                                   - int(counts.get(sid, 0)))
           for sid in ids if int(counts.get(sid, 0)) < rows[sid].size]
    if new:
        client.insert("segments", [[getattr(n, c) for c in _COLUMNS] for n in new],
                      column_names=list(_COLUMNS))
    return [n.segment_id for n in new]
