"""``POST /v1/events`` and batch provenance ``GET /v1/ingest/batches/{batch_id}``."""

from __future__ import annotations

import hashlib
import time
from datetime import datetime

import msgspec
import redis.exceptions
from litestar import Controller, Request, get, post
from litestar.params import FromPath

from adtier.errors import ApiError
from adtier.ingest.decode import BodyError, DecodedBody, decode_body, inflate
from adtier.ingest.normalise import to_ms
from adtier.ingest.normalise import Rejection
from adtier.ingest.service import BufferFull, IdempotencyConflict, IngestAnswer
from adtier.state import app_state, authorize

__all__ = ["EventsController", "BatchStatus"]

_MAX_IDEMPOTENCY_KEY = 128


class BatchStatus(msgspec.Struct):
    batch_id: str
    key_id: str
    source: str
    received_at: str
    body_sha256: str
    events: int
    accepted: int
    duplicates: int
    rejected: int
    state: str  # buffered | stored
    stored: int


_sent_at_decoder = msgspec.json.Decoder(datetime | int)


def _sent_at_header(request: Request) -> int | None:
    raw = request.headers.get("sent-at")
    if not raw:
        return None
    text = raw.strip()
    try:
        value = _sent_at_decoder.decode(text if text.isdigit() else msgspec.json.encode(text))
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        raise ApiError(400, "bad_sent_at", f"Sent-At {raw!r}: send RFC 3339 or epoch ms") from err
    return to_ms(value)


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


class EventsController(Controller):
    path = "/v1"
    tags = ["ingest"]

    @post("/events", status_code=200, summary="Send a batch of ad and viewing events")
    async def post_events(self, request: Request) -> IngestAnswer:
        """JSON or msgpack ``{"sent_at", "events": [...]}``, or NDJSON (one event a line); gzip
        accepted. Answers once the accepted events are durable in the buffer. A retry with the
        same ``Idempotency-Key`` (and body) gets the first answer. SDKs should send the time of
        each attempt in a ``Sent-At`` header (RFC 3339 or epoch ms): it overrides the body's
        ``sent_at``, so a re-sent body is not mistaken for a drifting clock."""
        state = app_state(request)
        key = await authorize(request, "ingest")
        idem = request.headers.get("idempotency-key", "")
        if len(idem) > _MAX_IDEMPOTENCY_KEY:
            raise ApiError(400, "bad_idempotency_key",
                           f"Idempotency-Key is over {_MAX_IDEMPOTENCY_KEY} characters")
        body = await request.body()
        received_ms = time.time_ns() // 1_000_000
        digest = hashlib.sha256(body).hexdigest()
        try:
            if idem and (first := await state.ingest.replay(key.key_id, idem, digest)) is not None:
                return first
            decoded = await self._decode(request, body, received_ms, digest, key.key_id)
            return await state.ingest.ingest(
                decoded.events,
                decoded.event_decoder,
                received_ms=received_ms,
                sent_ms=_sent_at_header(request) or decoded.sent_at_ms,
                key_id=key.key_id,
                source="batch",
                body_sha256=digest,
                idempotency=idem,
            )
        except IdempotencyConflict as err:
            raise ApiError(422, "idempotency_key_reused", str(err)) from err
        except BufferFull as err:
            raise ApiError(503, "buffer_full", str(err), {"Retry-After": "2"}) from err
        except redis.exceptions.RedisError as err:  # down, loading, out of memory...
            raise ApiError(503, "buffer_unavailable", f"the event buffer cannot take events: {err}",
                           {"Retry-After": "5"}) from err

    async def _decode(self, request: Request, body: bytes, received_ms: int, digest: str,
                      key_id: str) -> DecodedBody:
        """The body's events; an unreadable body is kept in rejected_events, then 400."""
        settings = app_state(request).settings
        text = body
        try:
            text = inflate(body, request.headers.get("content-encoding", ""),
                           settings.max_decompressed_bytes)
            return decode_body(text, request.headers.get("content-type", ""),
                               settings.max_events_per_batch)
        except BodyError as err:
            if err.status == 400:
                kept = await app_state(request).ingest.ingest(
                    [], None, received_ms=received_ms, sent_ms=None, key_id=key_id,
                    source="batch", body_sha256=digest,
                    extra_rejections=[Rejection(-1, "", err.code, err.detail, text[:65536])],
                )
                err.detail += f" (kept as rejected batch {kept.batch_id})"
            raise

    @get("/ingest/batches/{batch_id:str}", summary="Provenance and storage state of one batch")
    async def get_batch(self, request: Request, batch_id: FromPath[str]) -> BatchStatus:
        state = app_state(request)
        key = await authorize(request, "ingest")
        status = await self._from_buffer(request, batch_id) or await self._from_store(request, batch_id)
        if status is None or (key.role != "admin" and status.key_id != key.key_id):
            raise ApiError(404, "not_found", f"no batch {batch_id!r} for this key")
        rows = await state.query(
            "SELECT (SELECT count() FROM ad_events WHERE batch_id = {b:String})"
            " + (SELECT count() FROM content_events WHERE batch_id = {b:String})",
            {"b": batch_id},
        )
        status.stored = int(rows[0][0])
        return status

    async def _from_buffer(self, request: Request, batch_id: str) -> BatchStatus | None:
        found = await app_state(request).ingest.buffer.load_record(batch_id)
        if found is None:
            return None
        record, bitmap, state = found
        duplicates = bitmap.count(b"1")
        return BatchStatus(
            record.batch_id, record.key_id, record.source, _iso(record.received_at_ms),
            record.body_sha256, record.events, record.valid - duplicates, duplicates,
            record.events - record.valid, state or "buffered", 0,
        )

    async def _from_store(self, request: Request, batch_id: str) -> BatchStatus | None:
        rows = await app_state(request).query(
            "SELECT batch_id, key_id, source, toUnixTimestamp64Milli(received_at), body_sha256, "
            "events, accepted, duplicates, rejected FROM ingest_batches "
            "WHERE batch_id = {b:String} LIMIT 1",
            {"b": batch_id},
        )
        if not rows:
            return None
        b, k, src, received, sha, events, accepted, dups, rejected = rows[0]
        return BatchStatus(b, k, src, _iso(int(received)), sha, events, accepted, dups, rejected,
                           "stored", 0)


