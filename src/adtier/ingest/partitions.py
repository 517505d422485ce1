"""The buffer's partitions: which keys make up partition ``p``, and which partition an event,
a batch record or an idempotency key belongs to.

Every key of a partition carries the partition's hash tag ``{tag}``, so a Redis/Valkey Cluster
keeps the whole group (stream, buffered counter, dedup day-sets, flush plans, batch records,
idempotency keys) on one slot and every script touches one slot. Tags are chosen so that
partition ``p`` of ``P`` hashes into the ``p``-th of ``P`` equal slot ranges: on a cluster whose
slots are spread evenly, the partitions spread evenly over its primaries.

Routing:
* an event goes to partition ``crc32(event_id's 16 bytes) mod P``: a retry of the same event,
  in any batch, meets its first copy's dedup set;
* a batch's record and an idempotency key live in the batch's *home* partition,
  ``crc32(batch_id) mod P``; the writer draws batch ids until one falls in the partition of
  its idempotency key (``crc32(key) mod P``), so a retry finds both on one slot.

One partition on one server (the default, embedded Valkey) keeps the historical untagged key
names, so an existing buffer is read as before.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache

from redis.crc import key_slot

__all__ = ["Partition", "BufferLayout", "LEGACY", "layout_for"]

_SLOTS = 16384


@dataclass(frozen=True)
class Partition:
    index: int
    prefix: str  # "adtier:" (legacy) or "adtier:{tag}:"

    @property
    def stream(self) -> str:
        return f"{self.prefix}events"

    @property
    def buffered(self) -> str:
        return f"{self.prefix}buffered"

    @property
    def dedup_prefix(self) -> str:
        return f"{self.prefix}dd:"

    def dedup_set(self, day: int) -> str:
        return f"{self.dedup_prefix}{day}"

    def plan_key(self, consumer: str) -> str:
        return f"{self.prefix}plan:{consumer}"

    def batch_key(self, batch_id: str) -> str:
        return f"{self.prefix}batch:{batch_id}"

    def idempotency_key(self, key_id: str, idem: str) -> str:
        return f"{self.prefix}idem:{key_id}:{idem}"


@lru_cache(maxsize=64)
def _tags(count: int) -> tuple[str, ...]:
    tags = []
    for p in range(count):
        lo, hi = p * _SLOTS // count, (p + 1) * _SLOTS // count
        k = 0
        while not lo <= key_slot(f"b{p}.{k}".encode()) < hi:
            k += 1
        tags.append(f"b{p}.{k}")
    return tuple(tags)


class BufferLayout:
    def __init__(self, count: int = 1, tagged: bool = False):
        if count < 1:
            raise ValueError("the buffer needs at least one partition")
        self.count = count
        self.tagged = tagged or count > 1
        if self.tagged:
            self.partitions = [Partition(i, f"adtier:{{{t}}}:") for i, t in enumerate(_tags(count))]
        else:
            self.partitions = [Partition(0, "adtier:")]

    def __repr__(self) -> str:
        return f"BufferLayout({self.count}, tagged={self.tagged})"

    def of_event(self, event_id: bytes) -> int:
        return zlib.crc32(event_id) % self.count if self.count > 1 else 0

    def of_batch(self, batch_id: str) -> Partition:
        return self.partitions[zlib.crc32(batch_id.encode()) % self.count if self.count > 1 else 0]

    def of_idempotency(self, key_id: str, idem: str) -> Partition:
        if self.count == 1:
            return self.partitions[0]
        return self.partitions[zlib.crc32(f"{key_id}:{idem}".encode()) % self.count]

    def batch_key(self, batch_id: str) -> str:
        return self.of_batch(batch_id).batch_key(batch_id)

    def idempotency_key(self, key_id: str, idem: str) -> str:
        return self.of_idempotency(key_id, idem).idempotency_key(key_id, idem)


LEGACY = BufferLayout(1, tagged=False)


def layout_for(partitions: int, cluster: bool) -> BufferLayout:
    """The layout of ``ADTIER_BUFFER_PARTITIONS`` partitions (tagged names on a cluster)."""
    return LEGACY if partitions == 1 and not cluster else BufferLayout(partitions, tagged=True)
