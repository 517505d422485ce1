"""The durable buffer: the only code that touches the Redis event stream.

One stream entry holds one request's validated rows (ClickHouse JSONEachRow bytes, per table),
its provenance record and its duplicate bitmap. Writers append with one atomic script call;
flushers read through a consumer group, record a flush *plan* (the exact entry ids of one
insert) before inserting, and acknowledge after the insert, so a flush interrupted at any point
is redone with the same entries and therefore the same deduplication token.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from importlib import resources

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
    "PlanPending",
    "batch_key",
    "idempotency_key",
    "plan_key",
]

STREAM = "adtier:events"
GROUP = "flushers"
BUFFERED = "adtier:buffered"


def _lua(name: str) -> str:
    return resources.files("adtier.ingest.lua").joinpath(f"{name}.lua").read_text()


def plan_key(consumer: str) -> str:
    return f"adtier:plan:{consumer}"


class PlanPending(RuntimeError):
    """A flusher tried to start a new plan while its previous one is unfinished."""


def batch_key(batch_id: str) -> str:
    return f"adtier:batch:{batch_id}"


def idempotency_key(key_id: str, idem: str) -> str:
    return f"adtier:idem:{key_id}:{idem}"


DEDUP_PREFIX = "adtier:dd:"


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
# A request with many rejections has a long record and many rejected rows, all alike: stored
# deflated, they cost a fraction of the body that caused them. zlib's first byte (0x78, 'x')
# never starts a JSON row ('{') or a msgpack array (0x90-0x9f, 0xdc, 0xdd).
_PACK_OVER = 4096


def pack(data: bytes) -> bytes:
    return zlib.compress(data, 1) if len(data) > _PACK_OVER else data


def unpack(data: bytes) -> bytes:
    return zlib.decompress(data) if data[:1] == b"x" else data


def decode_record(data: bytes) -> BatchRecord:
    return _record_decoder.decode(unpack(data))


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
        self._script = client.register_script(_lua("append"))
        self._high_water = high_water
        # Day sets: today's plus enough earlier ones to cover the window; each set lives until
        # the last day that still checks it has passed.
        self._dedup_days_back = max(1, -(-dedup_hours // 24))
        self._dedup_ttl = (self._dedup_days_back + 1) * 86_400 + 3600
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
        keys = [STREAM, BUFFERED, idempotency, batch_key(record.batch_id) if keep_record else ""]
        args = [
            ids,
            self._high_water,
            self._dedup_ttl,
            self._record_ttl,
            record.batch_id,
            pack(_record_encoder.encode(record)),
            ad_rows,
            content_rows,
            pack(rejected_rows),
            DEDUP_PREFIX,
            self._dedup_days_back,
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
        return decode_record(values[0]), values[1] or b"", (values[2] or b"").decode()

    async def idempotent_batch(self, key: str) -> str | None:
        batch_id = await self._client.get(key)
        return None if batch_id is None else batch_id.decode()

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
            record=decode_record(fields[b"m"]),
            ad_rows=fields[b"a"],
            content_rows=fields[b"c"],
            rejected_rows=unpack(fields[b"r"]),
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


class FlushBuffer:
    """Reader side, used by flushers (sync: it runs in the flusher's thread or process).

    Every step that depends on who owns which entries runs as one script, so a flusher that is
    slow but alive never has its entries or its plan taken away mid-flush."""

    def __init__(self, client: redis.Redis, consumer: str):
        self.client = client
        self.consumer = consumer
        self.plan_key = plan_key(consumer)
        self._take_over = client.register_script(_lua("take_over"))
        self._still_mine = client.register_script(_lua("still_mine"))
        self._complete = client.register_script(_lua("complete"))
        self._forget = client.register_script(_lua("forget_consumer"))
        self._claim_unplanned = client.register_script(_lua("claim_unplanned"))

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    def read_new(self, count: int, block_ms: int) -> list[Entry]:
        reply = self.client.xreadgroup(GROUP, self.consumer, {STREAM: ">"}, count=count, block=block_ms)
        return [Entry.from_fields(i, f) for _, entries in reply or [] for i, f in entries if f]

    def save_plan(self, entry_ids: list[str]) -> str:
        value = ",".join(entry_ids)
        if not self.client.set(self.plan_key, value, nx=True):
            raise PlanPending(f"{self.consumer} still has an unfinished flush plan")
        return value

    def own_plan(self) -> list[str]:
        raw = self.client.get(self.plan_key)
        return raw.decode().split(",") if raw else []

    def take_over_plan(self, owner: str, min_idle_ms: int) -> list[str] | None:
        """The dead owner's plan, now mine ([] if it had none); None if the owner is alive."""
        got = self._take_over(keys=[STREAM, plan_key(owner), self.plan_key],
                              args=[GROUP, self.consumer, owner, min_idle_ms])
        if got is None:
            return None
        return got.decode().split(",") if got else []

    def still_mine(self, entry_ids: list[str]) -> bool:
        return bool(self._still_mine(keys=[STREAM], args=[GROUP, self.consumer, *entry_ids]))

    def claim(self, entry_ids: list[str], min_idle_ms: int = 0) -> list[Entry]:
        if not entry_ids:
            return []
        reply = self.client.xclaim(STREAM, GROUP, self.consumer, min_idle_ms, entry_ids)
        return [Entry.from_fields(i, f) for i, f in reply if f]

    def claim_unplanned(self, owner: str, entry_ids: list[str], min_idle_ms: int) -> list[Entry]:
        """Take the owner's idle entries that are not in its plan; return them, read back."""
        got = self._claim_unplanned(keys=[STREAM, plan_key(owner)],
                                    args=[GROUP, self.consumer, min_idle_ms, *entry_ids])
        return self.claim([i.decode() for i in got], 0)

    def pending_of(self, consumer: str, count: int = 1000) -> list[str]:
        rows = self.client.xpending_range(STREAM, GROUP, "-", "+", count, consumername=consumer)
        return [r["message_id"].decode() for r in rows]

    def consumers(self) -> list[PendingConsumer]:
        found = []
        for c in self.client.xinfo_consumers(STREAM, GROUP):
            inactive = int(c.get("inactive", -1))
            idle = inactive if inactive >= 0 else int(c["idle"])
            found.append(PendingConsumer(c["name"].decode(), int(c["pending"]), idle))
        return found

    def complete(self, entries: list[Entry], plan_value: str) -> int:
        """Acknowledge stored entries; returns the events this call acknowledged."""
        args: list[object] = [GROUP, plan_value]
        for e in entries:
            args += [e.entry_id, e.stored_events,
                     batch_key(e.batch_id) if e.record.source == "batch" else ""]
        return int(self._complete(keys=[STREAM, BUFFERED, self.plan_key], args=args))

    def drop_plan(self, plan_value: str) -> None:
        """Forget my plan if it is still this one (used when its entries were taken over)."""
        self.client.eval("if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end",
                         1, self.plan_key, plan_value)

    def forget_consumer(self, consumer: str) -> bool:
        return bool(self._forget(keys=[STREAM], args=[GROUP, consumer]))

    def lag(self) -> tuple[int, float]:
        """(buffered events, age in seconds of the oldest unacknowledged entry)."""
        buffered = int(self.client.get(BUFFERED) or 0)
        oldest = self.client.xrange(STREAM, "-", "+", count=1)
        if not oldest:
            return buffered, 0.0
        ms = int(oldest[0][0].decode().split("-")[0])
        return buffered, max(0.0, time.time() - ms / 1000)
