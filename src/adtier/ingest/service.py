"""One ingest step shared by batches and pixels: validate, append durably, answer."""

from __future__ import annotations

import secrets
from collections import Counter
from typing import Any

import msgspec

from adtier import metrics
from adtier.ingest.buffer import AppendResult, BatchRecord, IngestBuffer
from adtier.ingest.partitions import BufferLayout
from adtier.ingest.normalise import Prepared, Rejection, TimePolicy, prepare_events, rejected_rows

__all__ = ["RejectedItem", "IngestAnswer", "BufferFull", "IngestService", "new_batch_id"]


class RejectedItem(msgspec.Struct):
    index: int
    event_id: str
    reason: str
    detail: str


class IngestAnswer(msgspec.Struct):
    batch_id: str
    accepted: int
    duplicates: int
    rejected: list[RejectedItem]


class IdempotencyConflict(Exception):
    """An Idempotency-Key was reused for a different body."""


class BufferFull(Exception):
    """The buffer is over its high-water mark: the client should retry later."""


def new_batch_id(received_ms: int, layout: BufferLayout | None = None, home: int = 0) -> str:
    # Time-ordered, so ids sort by arrival and reveal nothing about the sender. With several
    # buffer partitions, drawn until it falls in the wanted home partition (P draws on average).
    while True:
        batch_id = f"b{received_ms:011x}{secrets.token_hex(6)}"
        if layout is None or layout.count == 1 or layout.of_batch(batch_id).index == home:
            return batch_id


def answer_from(record: BatchRecord, bitmap: bytes) -> IngestAnswer:
    duplicates = bitmap.count(b"1")
    return IngestAnswer(
        batch_id=record.batch_id,
        accepted=record.valid - duplicates,
        duplicates=duplicates,
        rejected=[RejectedItem(*r) for r in record.rejected],
    )


class IngestService:
    def __init__(self, buffer: IngestBuffer, policy: TimePolicy, max_event_bytes: int):
        self.buffer = buffer
        self.policy = policy
        self.max_event_bytes = max_event_bytes

    async def replay(self, key_id: str, idem: str, body_sha256: str) -> IngestAnswer | None:
        """The first answer for a whole-batch retry, if that batch is known."""
        batch_id = await self.buffer.idempotent_batch(
            self.buffer.layout.idempotency_key(key_id, idem))
        return None if batch_id is None else await self._first_answer(batch_id, body_sha256)

    async def _first_answer(self, batch_id: str, body_sha256: str) -> IngestAnswer | None:
        found = await self.buffer.load_record(batch_id)
        if found is None:
            return None
        if found[0].body_sha256 != body_sha256:
            raise IdempotencyConflict(
                f"this Idempotency-Key was used for batch {batch_id} with a different body")
        return answer_from(found[0], found[1])

    async def ingest(self, raws: list, decoder: msgspec.json.Decoder | msgspec.msgpack.Decoder,
                     **options: Any) -> IngestAnswer:
        """``ingest_with_marks`` for callers that need only the answer."""
        return (await self.ingest_with_marks(raws, decoder, **options))[0]

    async def ingest_with_marks(
        self,
        raws: list,
        decoder: msgspec.json.Decoder | msgspec.msgpack.Decoder,
        *,
        received_ms: int,
        sent_ms: int | None,
        key_id: str,
        source: str,
        body_sha256: str,
        idempotency: str = "",
        extra_rejections: list[Rejection] | None = None,
    ) -> tuple[IngestAnswer, bytes]:
        """The answer, and the duplicate marks of the valid events (ad events first)."""
        layout = self.buffer.layout
        # The home partition of the batch: that of its idempotency key, so a retry finds both.
        home = layout.of_idempotency(key_id, idempotency).index if idempotency else (
            secrets.randbelow(layout.count) if layout.count > 1 else 0)
        batch_id = new_batch_id(received_ms, layout, home)
        prepared = prepare_events(raws, decoder, self.policy, received_ms, sent_ms, source,
                                  batch_id, key_id, self.max_event_bytes)
        if extra_rejections:
            prepared.rejections.extend(extra_rejections)
        record = BatchRecord(
            batch_id=batch_id,
            key_id=key_id,
            source=source,
            received_at_ms=received_ms,
            sent_at_ms=sent_ms,
            body_sha256=body_sha256,
            events=len(raws) + len(extra_rejections or ()),
            valid=prepared.valid,
            n_ad=len(prepared.ad_ids),
            rejected=[(r.index, r.event_id, r.reason, r.detail) for r in prepared.rejections],
        )
        rejected = rejected_rows(prepared.rejections, received_ms, source, batch_id, key_id)
        idem_key = layout.idempotency_key(key_id, idempotency) if idempotency else ""
        if layout.count == 1:  # one stream entry, as it always was (no per-event routing)
            result = await self.buffer.append(
                record, prepared.packed_ids(), b"".join(prepared.ad_rows),
                b"".join(prepared.content_rows), rejected, idempotency=idem_key,
                keep_record=source == "batch")
        else:
            result = await self.buffer.append_split(
                record, list(zip(prepared.ad_ids, prepared.ad_rows)),
                list(zip(prepared.content_ids, prepared.content_rows)), rejected,
                idempotency=idem_key, keep_record=source == "batch")
        if result.status == "full":
            raise BufferFull(f"{result.buffered} events are waiting to be stored")
        if result.status == "replay":
            first = await self._first_answer(result.batch_id, body_sha256)
            if first is not None:
                return first, b""
            raise BufferFull("the first attempt of this batch is still being recorded")
        _count(prepared, result)
        return answer_from(record, result.bitmap), result.bitmap


# event type -> its labelled accepted counter: ``labels()`` costs a lock and a tuple build
# per call, on every request, for a child that never changes
_ACCEPTED: dict[str, Any] = {}


def _accepted(event_type: str) -> Any:
    _ACCEPTED[event_type] = child = metrics.EVENTS_ACCEPTED.labels(event_type)
    return child


def _count(prepared: Prepared, result: AppendResult) -> None:
    types = prepared.ad_types + prepared.content_types
    if result.duplicates:
        types = [t for t, mark in zip(types, result.bitmap) if mark == 48]
        metrics.EVENTS_DUPLICATE.inc(result.duplicates)
    for event_type, n in Counter(types).items():
        (_ACCEPTED.get(event_type) or _accepted(event_type)).inc(n)
    for rejection in prepared.rejections:
        metrics.EVENTS_REJECTED.labels(rejection.reason).inc()
