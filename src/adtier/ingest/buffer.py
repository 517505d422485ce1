"""The durable buffer: the only code that touches the Redis event stream.

One stream entry holds one request's validated rows (ClickHouse JSONEachRow bytes, per table),
its provenance record and its duplicate bitmap. Writers append with one atomic script call;
flushers read through a consumer group, record a flush *plan* (the exact entry ids of one
insert) before inserting, and acknowledge after the insert, so a flush interrupted at any point
is redone with the same entries and therefore the same deduplication token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import msgspec
import redis
import redis.asyncio as aredis

__all__ = [
    "STREAM",
    "GROUP",
    "AppendResult",
    "BatchRecord",
    "Entry",
    "IngestBuffer",
    "FlushBuffer",
    "batch_key",
    "idempotency_key",
]

STREAM = "adtier:events"
GROUP = "flushers"
BUFFERED = "adtier:buffered"
_DAY_MS = 86_400_000
_APPEND_LUA = resources.files("adtier.ingest").joinpath("append.lua").read_text()


def batch_key(batch_id: str) -> str:
    return f"adtier:batch:{batch_id}"


def idempotency_key(key_id: str, idem: str) -> str:
    return f"adtier:idem:{key_id}:{idem}"


def _dedup_keys(now_ms: int) -> tuple[str, str]:
    day = now_ms // _DAY_MS
    return f"adtier:dd:{day}", f"adtier:dd:{day - 1}"


class BatchRecord(msgspec.Struct, array_like=True):
    """Provenance kept with a batch while it is buffered (and for idempotent replays)."""

    batch_id: str
    key_id: str
    source: str
    received_at_ms: int
    sent_at_ms: int | None
    body_sha256: str
    events: int
    valid: int
    n_ad: int
    rejected: list[tuple[int, str, str, str]] = []  # (index, event_id, reason, detail)


_record_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(BatchRecord)


@dataclass(frozen=True)
class AppendResult:
    status: str  # ok | replay | full
    batch_id: str = ""
    bitmap: bytes = b""
    duplicates: int = 0
    buffered: int = 0


class IngestBuffer:
    """Writer side, used by request handlers (async)."""

    def __init__(self, client: aredis.Redis, high_water: int, dedup_hours: int, record_ttl_s: int):
        self._client = client
        self._script = client.register_script(_APPEND_LUA)
        self._high_water = high_water
        # Two day-sets cover the window; keep each alive a day beyond the one it was written.
        self._dedup_ttl = max(dedup_hours, 24) * 3600 * 2 + 3600
        self._record_ttl = record_ttl_s

    async def append(
        self,
        record: BatchRecord,
        ids: bytes,
        ad_rows: bytes,
        content_rows: bytes,
        rejected_rows: bytes,
        idempotency: str = "",
        keep_record: bool = True,
    ) -> AppendResult:
        today, yesterday = _dedup_keys(record.received_at_ms)
        keys = [
            STREAM,
            today,
            yesterday,
            BUFFERED,
            idempotency,
            batch_key(record.batch_id) if keep_record else "",
        ]
        args = [
            ids,
            self._high_water,
            self._dedup_ttl,
            self._record_ttl,
            record.batch_id,
            _record_encoder.encode(record),
            ad_rows,
            content_rows,
            rejected_rows,
        ]
        reply = await self._script(keys=keys, args=args)
        status = reply[0].decode()
        if status == "ok":
            return AppendResult("ok", record.batch_id, reply[1], int(reply[2]))
        if status == "replay":
            return AppendResult("replay", reply[1].decode())
        return AppendResult("full", buffered=int(reply[1]))

    async def load_record(self, batch_id: str) -> tuple[BatchRecord, bytes, str] | None:
        """(record, duplicate bitmap, state) while the batch is known to Redis."""
        values = await self._client.hmget(batch_key(batch_id), ["m", "d", "s"])
        if values[0] is None:
            return None
        return _record_decoder.decode(values[0]), values[1] or b"", (values[2] or b"").decode()

    async def buffered_events(self) -> int:
        return int(await self._client.get(BUFFERED) or 0)


@dataclass
class Entry:
    entry_id: str
    batch_id: str
    record: BatchRecord
    ad_rows: bytes
    content_rows: bytes
    rejected_rows: bytes
    bitmap: bytes

    @classmethod
    def from_fields(cls, entry_id: bytes | str, fields: dict[bytes, bytes]) -> "Entry":
        return cls(
            entry_id=entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
            batch_id=fields[b"b"].decode(),
            record=_record_decoder.decode(fields[b"m"]),
            ad_rows=fields[b"a"],
            content_rows=fields[b"c"],
            rejected_rows=fields[b"r"],
            bitmap=fields[b"d"],
        )

    @property
    def stored_events(self) -> int:
        return self.bitmap.count(b"0")


@dataclass
class PendingConsumer:
    name: str
    pending: int
    idle_ms: int


@dataclass
class FlushBuffer:
    """Reader side, used by flushers (sync: it runs in the flusher's thread or process)."""

    client: redis.Redis
    consumer: str
    plan_key: str = field(init=False)

    def __post_init__(self) -> None:
        self.plan_key = f"adtier:plan:{self.consumer}"

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    def read_new(self, count: int, block_ms: int) -> list[Entry]:
        reply = self.client.xreadgroup(GROUP, self.consumer, {STREAM: ">"}, count=count, block=block_ms)
        return [Entry.from_fields(i, f) for _, entries in reply or [] for i, f in entries if f]

    def save_plan(self, entry_ids: list[str]) -> None:
        self.client.set(self.plan_key, ",".join(entry_ids))

    def load_plan(self, consumer: str) -> list[str]:
        raw = self.client.get(f"adtier:plan:{consumer}")
        return raw.decode().split(",") if raw else []

    def claim(self, entry_ids: list[str], min_idle_ms: int = 0) -> list[Entry]:
        if not entry_ids:
            return []
        reply = self.client.xclaim(STREAM, GROUP, self.consumer, min_idle_ms, entry_ids)
        return [Entry.from_fields(i, f) for i, f in reply if f]

    def pending_of(self, consumer: str, count: int = 1000) -> list[str]:
        rows = self.client.xpending_range(STREAM, GROUP, "-", "+", count, consumername=consumer)
        return [r["message_id"].decode() for r in rows]

    def consumers(self) -> list[PendingConsumer]:
        return [
            PendingConsumer(c["name"].decode(), int(c["pending"]), int(c.get("inactive", c["idle"])))
            for c in self.client.xinfo_consumers(STREAM, GROUP)
        ]

    def complete(self, entries: list[Entry], plan_owner: str | None = None) -> None:
        """Acknowledge stored entries, mark their batches stored, drop the plan: one transaction."""
        ids = [e.entry_id for e in entries]
        stored = sum(e.stored_events for e in entries)
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(STREAM, GROUP, *ids)
        pipe.xdel(STREAM, *ids)
        pipe.decrby(BUFFERED, stored)
        for entry in entries:
            key = batch_key(entry.batch_id)
            # Only touch records that exist (pixels keep none); HSET would create one.
            pipe.eval(
                "if redis.call('EXISTS', KEYS[1]) == 1 then "
                "redis.call('HSET', KEYS[1], 's', 'stored') end",
                1,
                key,
            )
        pipe.delete(f"adtier:plan:{plan_owner or self.consumer}")
        pipe.execute()

    def forget_consumer(self, consumer: str) -> None:
        self.client.xgroup_delconsumer(STREAM, GROUP, consumer)

    def lag(self) -> tuple[int, float]:
        """(buffered events, age in seconds of the oldest unacknowledged entry)."""
        buffered = int(self.client.get(BUFFERED) or 0)
        oldest = self.client.xrange(STREAM, "-", "+", count=1)
        if not oldest:
            return buffered, 0.0
        ms = int(oldest[0][0].decode().split("-")[0])
        return buffered, max(0.0, time.time() - ms / 1000)


def entry_ids(entries: list[Entry]) -> list[str]:
    return [e.entry_id for e in entries]


