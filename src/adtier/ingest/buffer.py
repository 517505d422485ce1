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

import asyncio
from collections import defaultdict

import msgspec
import redis
import redis.asyncio as aredis

from adtier.ingest.partitions import LEGACY, BufferLayout, Partition
from adtier.logs import get_logger
from adtier.store.valkey import is_cluster_client, retry_while_slot_moves

__all__ = [
    "STREAM",
    "GROUP",
    "AppendResult",
    "BatchRecord",
    "Entry",
    "IngestBuffer",
    "FlushBuffer",
    "NotReplicated",
    "PlanPending",
    "batch_key",
    "idempotency_key",
    "plan_key",
]

# The one-partition, one-server names (BufferLayout's legacy layout), kept for their callers.
STREAM = LEGACY.partitions[0].stream
GROUP = "flushers"
BUFFERED = LEGACY.partitions[0].buffered
DEDUP_PREFIX = LEGACY.partitions[0].dedup_prefix

log = get_logger("adtier.buffer")


def _lua(name: str) -> str:
    return resources.files("adtier.ingest.lua").joinpath(f"{name}.lua").read_text()


def plan_key(consumer: str) -> str:
    return LEGACY.partitions[0].plan_key(consumer)


class PlanPending(RuntimeError):
    """A flusher tried to start a new plan while its previous one is unfinished."""


class NotReplicated(redis.exceptions.RedisError):
    """Appended on the primary, but no replica confirmed it in time: not acknowledged (503).
    A retry is safe: its events are found in the dedup sets if the first copy survived."""


def batch_key(batch_id: str) -> str:
    return LEGACY.batch_key(batch_id)


def idempotency_key(key_id: str, idem: str) -> str:
    return LEGACY.idempotency_key(key_id, idem)


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
    # How many partitions the batch's events were split over; on a stream entry the record
    # describes only that entry's part (its events, valid, n_ad; the rejections in one part).
    parts: int = 1


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
    """Writer side, used by request handlers (async).

    With several partitions a batch's events are split by partition (``BufferLayout``): the
    parts outside the batch's home partition are appended first, together, then the home part
    with the batch record and the idempotency key; the batch is answered only when every part
    is appended (and, with ``wait_replicas``, replicated)."""

    def __init__(self, client: aredis.Redis, high_water: int, dedup_hours: int, record_ttl_s: int,
                 layout: BufferLayout = LEGACY, wait_replicas: int = 0,
                 wait_timeout_ms: int = 1000):
        self._client = client
        self.layout = layout
        self._script = client.register_script(_lua("append"))
        # the high-water mark is over the whole buffer: each partition takes its share
        self._high_water = -(-high_water // layout.count) if high_water > 0 else 0
        # Day sets: today's plus enough earlier ones to cover the window; each set lives until
        # the last day that still checks it has passed.
        self._dedup_days_back = max(1, -(-dedup_hours // 24))
        self._dedup_ttl = (self._dedup_days_back + 1) * 86_400 + 3600
        self._record_ttl = record_ttl_s
        self._day_offset = 0  # the server's day minus ours, learnt from a 'clock' answer
        self._wait = wait_replicas
        self._wait_timeout_ms = wait_timeout_ms
        self._cluster = is_cluster_client(client)

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
        """The whole batch as one entry of its home partition."""
        part = self.layout.of_batch(record.batch_id)
        return await self._append_part(part, record, ids, ad_rows, content_rows, rejected_rows,
                                       idempotency, keep_record)

    async def append_split(
        self,
        record: BatchRecord,
        ad: list[tuple[bytes, bytes]],
        content: list[tuple[bytes, bytes]],
        rejected_rows: bytes,
        idempotency: str = "",
        keep_record: bool = True,
    ) -> AppendResult:
        """A batch given as (event id, row) pairs, split over the partitions of its events."""
        home = self.layout.of_batch(record.batch_id)
        if self.layout.count == 1:
            return await self.append(
                record, b"".join(i for i, _ in ad) + b"".join(i for i, _ in content),
                b"".join(r for _, r in ad), b"".join(r for _, r in content), rejected_rows,
                idempotency, keep_record)
        events = ad + content
        where: dict[int, list[int]] = defaultdict(list)
        crc32, count = zlib.crc32, self.layout.count  # BufferLayout.of_event, inlined (hot)
        for pos, (event_id, _) in enumerate(events):
            where[crc32(event_id) % count].append(pos)
        where.setdefault(home.index, [])
        n_ad = len(ad)
        parts = len(where)

        def part_of(index: int) -> tuple[BatchRecord, bytes, bytes, bytes]:
            positions = where[index]
            mine = index == home.index
            sub = msgspec.structs.replace(
                record, valid=len(positions), n_ad=sum(1 for p in positions if p < n_ad),
                events=len(positions) + (record.events - record.valid if mine else 0),
                rejected=record.rejected if mine else [], parts=parts)
            return (sub, b"".join(events[p][0] for p in positions),
                    b"".join(events[p][1] for p in positions if p < n_ad),
                    b"".join(events[p][1] for p in positions if p >= n_ad))

        others = [i for i in where if i != home.index]
        results = await asyncio.gather(*(
            self._append_part(self.layout.partitions[i], *part_of(i), b"", "", False, parts=parts)
            for i in others))
        for result in results:
            if result.status == "full":
                return result
        marks = bytearray(b"?" * len(events))
        duplicates = 0
        for index, result in zip(others, results):
            duplicates += result.duplicates
            for pos, mark in zip(where[index], result.bitmap):
                marks[pos] = mark
        sub, ids, ad_rows, content_rows = part_of(home.index)
        got = await self._append_part(
            home, sub, ids, ad_rows, content_rows, rejected_rows, idempotency, keep_record,
            whole_marks=bytes(marks), whole_record=record, parts=parts)
        if got.status != "ok":
            return got
        for pos, mark in zip(where[home.index], got.bitmap):
            marks[pos] = mark
        return AppendResult("ok", record.batch_id, bytes(marks), duplicates + got.duplicates)

    async def _append_part(
        self, part: Partition, record: BatchRecord, ids: bytes, ad_rows: bytes,
        content_rows: bytes, rejected_rows: bytes, idempotency: str, keep_record: bool,
        whole_marks: bytes = b"", whole_record: BatchRecord | None = None, parts: int = 1,
    ) -> AppendResult:
        back = self._dedup_days_back
        args: list[object] = [
            ids, self._high_water, self._dedup_ttl, self._record_ttl, record.batch_id,
            pack(_record_encoder.encode(record)), ad_rows, content_rows, pack(rejected_rows),
            0, back, "1" if idempotency else "0", "1" if keep_record else "0", whole_marks,
            parts, b"" if whole_record is None else pack(_record_encoder.encode(whole_record)),
        ]
        for _ in range(3):
            day = int(time.time() // 86_400) + self._day_offset
            first = day - back - 1  # a day either side: the server's clock decides which
            args[9] = first
            keys = [part.stream, part.buffered, idempotency or part.stream,
                    part.batch_key(record.batch_id) if keep_record else part.stream,
                    *(part.dedup_set(d) for d in range(first, day + 2))]
            reply = await self._eval(keys, args)
            status = reply[0].decode()
            if status != "clock":
                break
            self._day_offset = int(reply[1]) - int(time.time() // 86_400)
        if status == "ok":
            return AppendResult("ok", record.batch_id, reply[1], int(reply[2]))
        if status == "replay":
            return AppendResult("replay", reply[1].decode())
        if status == "full":
            return AppendResult("full", buffered=int(reply[1]))
        raise redis.exceptions.ResponseError(f"the buffer's server day moves: {reply!r}")

    async def _eval(self, keys: list[str], args: list[object]) -> list:
        if self._cluster:  # with or without WAIT: waits out a failover or a slot's migration
            return await _eval_and_wait_cluster(self._client, self._script, keys, args,
                                                self._wait, self._wait_timeout_ms)
        if not self._wait:
            return await self._script(keys=keys, args=args)
        async with self._client.pipeline(transaction=False) as pipe:
            await self._script(keys=keys, args=args, client=pipe)  # queued (and loaded)
            pipe.execute_command("WAIT", self._wait, self._wait_timeout_ms)
            reply, replicas = await pipe.execute()
        _check_replicas(replicas, self._wait)
        return reply

    async def load_record(self, batch_id: str) -> tuple[BatchRecord, bytes, str] | None:
        """(record, duplicate bitmap, state) while the batch is known to Redis. The state is
        ``stored`` once every partition holding a part of the batch has stored it."""
        values = await self._client.hgetall(self.layout.batch_key(batch_id))
        if b"m" not in values:
            return None
        parts = int(values.get(b"n") or 1)
        done = sum(1 for k in values if k.startswith(b"p"))
        state = (values.get(b"s") or b"").decode()
        if done >= parts or state == "stored":
            state = "stored"
        return decode_record(values[b"m"]), values.get(b"d") or b"", state

    async def idempotent_batch(self, key: str) -> str | None:
        batch_id = await self._client.get(key)
        return None if batch_id is None else batch_id.decode()

    async def buffered_events(self) -> int:
        counts = await asyncio.gather(*(self._client.get(p.buffered) for p in self.layout.partitions))
        return sum(int(c or 0) for c in counts)

    async def oldest_age_s(self) -> float:
        """Age of the oldest unacknowledged entry over all partitions (0 when empty)."""
        firsts = await asyncio.gather(*(self._client.xrange(p.stream, "-", "+", count=1)
                                        for p in self.layout.partitions))
        stamps = [int(f[0][0].decode().split("-")[0]) for f in firsts if f]
        return max(0.0, time.time() - min(stamps) / 1000) if stamps else 0.0

    async def stream_status(self) -> tuple[int, list[PendingConsumer]]:
        """(entries, consumers) over every partition's stream: the entries still in the
        streams, and each consumer of the flushers' group with its pending entries and idle
        time (none before a flusher has created the group)."""
        entries = 0
        consumers: list[PendingConsumer] = []
        for part in self.layout.partitions:
            if not await self._client.exists(part.stream):
                continue
            entries += int(await self._client.xlen(part.stream))
            try:
                found = await self._client.xinfo_consumers(part.stream, GROUP)
            except redis.exceptions.ResponseError as err:  # NOGROUP: no flusher has run yet
                log.info("buffer_no_consumer_group", error=str(err)[:200])
                continue
            consumers += [PendingConsumer(_text(c["name"]), int(c["pending"]), int(c["idle"]))
                          for c in found]
        return entries, consumers


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _check_replicas(replicas: int, wanted: int) -> None:
    if int(replicas) < wanted:
        raise NotReplicated(f"appended, but {replicas} of {wanted} replicas confirmed it in time")


async def _eval_and_wait_cluster(client, script, keys: list[str], args: list[object],
                                 wanted: int, timeout_ms: int, budget_s: float = 30.0) -> list:
    """EVALSHA then WAIT on one connection to the partition's primary: WAIT counts the
    replicas that have this connection's writes, so it must follow them on the same one
    (redis-py's cluster client would send WAIT to every primary, on other connections).
    ``wanted`` 0: the EVALSHA alone. A moved slot or a dead primary refreshes the topology and
    tries again, within a budget that covers a failover. So does a slot being migrated: the
    script declares keys that do not exist yet (the idempotency key, tomorrow's dedup set), so
    while its slot moves both nodes refuse it (TRYAGAIN; an ASK leads to the same) until the
    slot has moved whole; nothing ran, so trying again cannot count an event twice."""
    deadline = time.monotonic() + budget_s
    delay = 0.05
    await client.initialize()  # the topology, if no command has loaded it yet (no-op after)
    while True:
        node = client.get_node_from_key(keys[0])
        try:
            conn = node.acquire_connection()
        except redis.exceptions.MaxConnectionsError:
            # every connection to this primary is busy (many requests, each with parts on
            # several of its partitions): wait for one, as a bounded pool would
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.002)
            continue
        try:
            await conn.connect()
            commands = [("EVALSHA", script.sha, len(keys), *keys, *args)]
            if wanted:
                commands.append(("WAIT", wanted, timeout_ms))
            await conn.send_packed_command(conn.pack_commands(commands))
            replies = []
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except redis.exceptions.ResponseError as err:
                    replies.append(err)
            reply, replicas = replies[0], replies[-1] if wanted else 0
            if isinstance(reply, redis.exceptions.NoScriptError):
                await conn.send_command("SCRIPT", "LOAD", script.script)
                await conn.read_response()
                continue
            if isinstance(reply, Exception):
                raise reply
            _check_replicas(replicas, wanted)
            return reply
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError,
                redis.exceptions.MovedError, redis.exceptions.AskError,
                redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError) as err:
            await conn.disconnect()
            if time.monotonic() > deadline:
                raise redis.exceptions.ConnectionError(f"buffer partition unavailable: {err}") from err
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            await client.nodes_manager.initialize()
        finally:
            node.release(conn)


_DROP_PLAN = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end"


def _patient(client: redis.Redis, source: str):
    """A registered script; on a cluster, one whose calls are retried while the slot it runs
    on is migrated (refused calls ran nothing, so retrying them is safe)."""
    script = client.register_script(source)
    if not is_cluster_client(client):
        return script
    return lambda **kw: retry_while_slot_moves(lambda: script(**kw))


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

    def __init__(self, client: redis.Redis, consumer: str, partition: Partition | None = None):
        self.client = client
        self.consumer = consumer
        self.partition = partition or LEGACY.partitions[0]
        self.stream = self.partition.stream
        self.plan_key = self.partition.plan_key(consumer)
        # On a cluster a script call waits out a migration of the partition's slot
        self._take_over = _patient(client, _lua("take_over"))
        self._still_mine = _patient(client, _lua("still_mine"))
        self._complete = _patient(client, _lua("complete"))
        self._forget = _patient(client, _lua("forget_consumer"))
        self._claim_unplanned = _patient(client, _lua("claim_unplanned"))
        self._drop_plan = _patient(client, _DROP_PLAN)

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    def read_new(self, count: int, block_ms: int | None) -> list[Entry]:
        reply = self.client.xreadgroup(GROUP, self.consumer, {self.stream: ">"}, count=count, block=block_ms)
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
        got = self._take_over(keys=[self.stream, self.partition.plan_key(owner), self.plan_key],
                              args=[GROUP, self.consumer, owner, min_idle_ms])
        if got is None:
            return None
        return got.decode().split(",") if got else []

    def still_mine(self, entry_ids: list[str]) -> bool:
        return bool(self._still_mine(keys=[self.stream], args=[GROUP, self.consumer, *entry_ids]))

    def claim(self, entry_ids: list[str], min_idle_ms: int = 0) -> list[Entry]:
        if not entry_ids:
            return []
        reply = self.client.xclaim(self.stream, GROUP, self.consumer, min_idle_ms, entry_ids)
        return [Entry.from_fields(i, f) for i, f in reply if f]

    def claim_unplanned(self, owner: str, entry_ids: list[str], min_idle_ms: int) -> list[Entry]:
        """Take the owner's idle entries that are not in its plan; return them, read back."""
        got = self._claim_unplanned(keys=[self.stream, self.partition.plan_key(owner)],
                                    args=[GROUP, self.consumer, min_idle_ms, *entry_ids])
        return self.claim([i.decode() for i in got], 0)

    def pending_of(self, consumer: str, count: int = 1000) -> list[str]:
        rows = self.client.xpending_range(self.stream, GROUP, "-", "+", count, consumername=consumer)
        return [r["message_id"].decode() for r in rows]

    def consumers(self) -> list[PendingConsumer]:
        found = []
        for c in self.client.xinfo_consumers(self.stream, GROUP):
            inactive = int(c.get("inactive", -1))
            idle = inactive if inactive >= 0 else int(c["idle"])
            found.append(PendingConsumer(c["name"].decode(), int(c["pending"]), idle))
        return found

    def complete(self, entries: list[Entry], plan_value: str) -> int:
        """Acknowledge stored entries; returns the events this call acknowledged."""
        args: list[object] = [GROUP, plan_value]
        for e in entries:
            args += [e.entry_id, e.stored_events]
        return int(self._complete(keys=[self.stream, self.partition.buffered, self.plan_key],
                                  args=args))

    def mark_stored(self, entries: list[Entry], layout: BufferLayout) -> None:
        """Note on each batch's record (in its home partition) that this partition's part is
        stored; the record says ``stored`` once every part is. Idempotent: done after the
        insert and before the acknowledgement, so a redo marks the same part again."""
        keys = {layout.batch_key(e.batch_id) for e in entries if e.record.source == "batch"}
        if not keys:
            return
        field = f"p{self.partition.index}"
        # Plain commands (a cluster pipeline sends no scripts): a record that had expired
        # comes back as a field with a day to live, which load_record ignores (no 'm').
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hset(key, field, 1)
            pipe.expire(key, 86_400, nx=True)
        pipe.execute()

    def drop_plan(self, plan_value: str) -> None:
        """Forget my plan if it is still this one (used when its entries were taken over)."""
        self._drop_plan(keys=[self.plan_key], args=[plan_value])

    def forget_consumer(self, consumer: str) -> bool:
        return bool(self._forget(keys=[self.stream, self.partition.plan_key(consumer)],
                                 args=[GROUP, consumer]))

    def lag(self) -> tuple[int, float]:
        """(buffered events, age in seconds of the oldest unacknowledged entry)."""
        buffered = int(self.client.get(self.partition.buffered) or 0)
        oldest = self.client.xrange(self.stream, "-", "+", count=1)
        if not oldest:
            return buffered, 0.0
        ms = int(oldest[0][0].decode().split("-")[0])
        return buffered, max(0.0, time.time() - ms / 1000)
