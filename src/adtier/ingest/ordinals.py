"""Dense profile ordinals: 1, 2, 3 ... for every profile that sends an ad event.

Campaign reports count distinct profiles as roaring bitmaps (sql/0011), which are only small
and fast over dense integers. Valkey hands the ordinals out (one counter and one hash, a Lua
script per chunk of keys, atomic across flushers and nodes); ClickHouse's ``profile_ordinals``
keeps them durably. Every writer of ``ad_events`` does, in this order:

1. assign the ordinals of the block's profiles (Valkey);
2. store the pairs in ClickHouse (idempotent: ReplacingMergeTree, and the caller's token);
3. insert the events, each carrying its ``profile_ord``.

``take`` does 1 and 2 (``column`` for an Arrow column of ids).

So an ordinal is durable before any stored event carries it, and a Valkey that lost its map (a
new or emptied server) is reloaded from ClickHouse before it hands out another one: the script
answers NOTLOADED while the counter is missing. The reloaded counter starts ``GAP`` above the
largest stored ordinal, because pairs a flusher had assigned but not yet stored when Valkey
was lost are missing from ClickHouse and must not be given again; and each process, before its
first assignment, raises a counter that is behind ClickHouse (a Valkey restored from an older
copy) the same way. A profile in flight during such a loss may get a second ordinal; both pairs
are kept, so erasure removes both (its reach could count it twice in that window). Profiles
are keyed by the first 16 bytes of
SHA-256(profile_id), which is what ClickHouse's ``erasures`` already keeps (hex): an erased
profile's ordinal is found without its id.

Assumes the Valkey belongs to one store (as the ingest buffer does): a Valkey whose map came
from another store's ClickHouse would hand out that store's ordinals.
"""

from __future__ import annotations

import hashlib
import struct
import time
import uuid
from collections.abc import Sequence
from importlib import resources

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import redis
from clickhouse_connect.driver.client import Client

from adtier.logs import get_logger

__all__ = ["GAP", "MAP_KEY", "NEXT_KEY", "Ordinals", "OrdinalsNotLoaded",
           "profile_key"]

log = get_logger("adtier.ordinals")

# One hash tag, {ord}: the script changes map and counter together (one slot on a cluster).
MAP_KEY = "adtier:{ord}:map"  # hash: profile key (16 bytes) -> ordinal
NEXT_KEY = "adtier:{ord}:next"  # the last ordinal given; missing = not loaded
LOAD_LOCK = "adtier:{ord}:load"
_CHUNK = 5_000  # keys per script call: keeps one call to a few ms of Valkey time
_LOAD_CHUNK = 20_000  # HSET fields per pipelined command while loading
_UINT32 = struct.Struct("<I")
GAP = 1_000_000  # ordinals skipped after a reload: more than any flushes in flight assign
_RAISE = """local c = tonumber(redis.call('GET', KEYS[1]))
if c and c < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) return 1 end
return 0"""


class OrdinalsNotLoaded(RuntimeError):
    """Another process is loading the map and did not finish in time."""


def profile_key(profile_id: str) -> bytes:
    return hashlib.sha256(profile_id.encode()).digest()[:16]


def _script_text() -> str:
    return resources.files("adtier.ingest.lua").joinpath("ordinals.lua").read_text()


class Ordinals:
    def __init__(self, redis_client: redis.Redis, clickhouse: Client,
                 load_wait_s: float = 600.0):
        self.redis = redis_client
        self.ch = clickhouse
        self.load_wait_s = load_wait_s
        self._script = redis_client.register_script(_script_text())
        self._raise = redis_client.register_script(_RAISE)
        self._floor_checked = False

    # ---- the three steps -------------------------------------------------------------------
    def assign(self, profile_ids: Sequence[str]) -> dict[str, int]:
        """Step 1: the ordinal of every distinct id (new ids get the next ones)."""
        unique = list(dict.fromkeys(profile_ids))
        return dict(zip(unique, self._ordinals([profile_key(p) for p in unique])))

    def take(self, profile_ids: Sequence[str], token: str | None = None) -> dict[str, int]:
        """Steps 1 and 2: assign, then store the pairs in ClickHouse before returning them (a
        retried call with the same token is dropped there)."""
        unique = list(dict.fromkeys(profile_ids))
        keys = [profile_key(p) for p in unique]
        ords = self._ordinals(keys)
        if keys:
            # RowBinary: FixedString(16) is the 16 bytes, UInt32 is 4 little-endian bytes.
            block = b"".join(k + _UINT32.pack(o) for k, o in zip(keys, ords))
            self.ch.raw_insert("profile_ordinals", column_names=["profile_key", "ord"],
                               insert_block=block, fmt="RowBinary",
                               settings={"insert_deduplication_token": token} if token else {})
        return dict(zip(unique, ords))

    def column(self, profile_ids: pa.Array | pa.ChunkedArray, token: str | None = None
               ) -> pa.Array:
        """Steps 1 and 2 for an Arrow column of ids: the matching ``profile_ord`` column."""
        if pa.types.is_dictionary(profile_ids.type):
            profile_ids = profile_ids.cast(profile_ids.type.value_type)
        unique = pc.unique(profile_ids)
        pairs = self.take(unique.to_pylist(), token)
        ords = np.fromiter(pairs.values(), dtype=np.uint32, count=len(pairs))
        return pa.array(ords[pc.index_in(profile_ids, value_set=unique).to_numpy()])

    # ---- Valkey ----------------------------------------------------------------------------
    def _ordinals(self, keys: list[bytes]) -> list[int]:
        ords = self._known(keys)
        # Only keys not in the map go through the script (several times dearer than HMGET).
        new = [i for i, o in enumerate(ords) if o is None]
        for start in range(0, len(new), _CHUNK):
            part = new[start:start + _CHUNK]
            for i, o in zip(part, self._call([keys[i] for i in part])):
                ords[i] = o
        return ords  # type: ignore[return-value]  # every None was filled

    def _known(self, keys: list[bytes]) -> list[int | None]:
        """The ordinals already in the map (one pipelined round trip)."""
        pipe = self.redis.pipeline(transaction=False)
        for start in range(0, len(keys), _CHUNK):
            pipe.hmget(MAP_KEY, keys[start:start + _CHUNK])
        return [None if o is None else int(o) for part in pipe.execute() for o in part]

    def _call(self, keys: list[bytes]) -> list[int]:
        if not self._floor_checked:
            self._check_floor()
        deadline = time.monotonic() + self.load_wait_s
        while True:
            try:
                return self._script(keys=[MAP_KEY, NEXT_KEY], args=keys)
            except redis.ResponseError as err:
                if not str(err).startswith("NOTLOADED"):
                    raise
            self.load(deadline)

    def load(self, deadline: float | None = None) -> None:
        """Copy ClickHouse's pairs into Valkey, then set the counter (which marks it loaded).
        One process loads; the others wait for the counter."""
        deadline = deadline or time.monotonic() + self.load_wait_s
        token = uuid.uuid4().hex
        while not self.redis.exists(NEXT_KEY):
            if self.redis.set(LOAD_LOCK, token, nx=True, px=120_000):
                try:
                    self._copy_from_clickhouse(token)
                finally:
                    self._release(token)
                return
            if time.monotonic() > deadline:
                raise OrdinalsNotLoaded("profile ordinals are being loaded by another process")
            time.sleep(0.05)

    def _copy_from_clickhouse(self, token: str) -> None:
        started = time.perf_counter()
        table = self.ch.query_arrow("SELECT profile_key, ord FROM profile_ordinals FINAL")
        keys = table.column("profile_key").to_pylist()
        ords = table.column("ord").to_numpy()
        for start in range(0, len(keys), _LOAD_CHUNK):
            mapping = dict(zip(keys[start:start + _LOAD_CHUNK],
                               ords[start:start + _LOAD_CHUNK].tolist()))
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(MAP_KEY, mapping=mapping)
            pipe.pexpire(LOAD_LOCK, 120_000)  # still loading: keep the others waiting
            pipe.execute()
        last = (int(ords.max()) if len(ords) else 0) + GAP
        # Only if nobody set it meanwhile (a lock that expired under a very slow load).
        self.redis.set(NEXT_KEY, last, nx=True)
        log.info("ordinals_loaded", profiles=len(keys), last=last,
                 seconds=round(time.perf_counter() - started, 2))

    def _check_floor(self) -> None:
        """Raise a counter that is behind ClickHouse (Valkey restored from an older copy)."""
        stored = int(self.ch.query("SELECT max(ord) FROM profile_ordinals").result_rows[0][0])
        if stored and self._raise(keys=[NEXT_KEY], args=[stored + GAP]):
            log.warning("ordinals_counter_raised", stored=stored, to=stored + GAP)
        self._floor_checked = True

    def _release(self, token: str) -> None:
        if self.redis.get(LOAD_LOCK) == token.encode():
            self.redis.delete(LOAD_LOCK)
