"""``POST /v1/events`` and batch provenance ``GET /v1/ingest/batches/{batch_id}``."""

from __future__ import annotations

import hashlib
import time
from datetime import datetime

import msgspec
import redis.exceptions
from litestar import Controller, Litestar, Request, get, post
from litestar.exceptions import HTTPException
from litestar.handlers import BaseRouteHandler
from litestar.params import FromPath
from litestar.types import Receive, Scope, Send

from adtier.errors import ApiError, status_code_name
from adtier.ingest import batch_status
from adtier.ingest.decode import BodyError, DecodedBody, decode_body, inflate
from adtier.ingest.normalise import Rejection, storable, to_ms
from adtier.ingest.service import BufferFull, IdempotencyConflict, IngestAnswer
from adtier.logs import get_logger
from adtier.state import app_state, authorize, off_loop

__all__ = ["EventsController", "BatchStatusController", "BatchStatus", "EVENTS_PATH",
           "answer_events", "events_handler", "ingest_request"]

EVENTS_PATH = "/v1/events"
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
    text = raw.strip()[:64]
    try:
        ms = to_ms(_sent_at_decoder.decode(text if text.isdigit() else msgspec.json.encode(text)))
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        raise ApiError(400, "bad_sent_at", f"Sent-At {raw[:64]!r}: send RFC 3339 or epoch ms") from err
    if not storable(ms):  # stored with the batch: ClickHouse would refuse the whole block
        raise ApiError(400, "bad_sent_at",
                       f"Sent-At {raw[:64]!r} is outside 1900-01-01..2299-12-31")
    return ms


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


class _Seen:
    """What a request has revealed so far, to keep it if it is refused."""

    body: bytes = b""
    text: bytes | None = None  # the body inflated, once it was


class EventsController(Controller):
    path = "/v1"
    tags = ["ingest"]

    @post(EVENTS_PATH[len("/v1"):], status_code=200,
          summary="Send a batch of ad and viewing events")
    async def post_events(self, request: Request) -> IngestAnswer:
        """JSON or msgpack ``{"sent_at", "events": [...]}``, or NDJSON (one event a line); gzip
        accepted. Answers once the accepted events are durable in the buffer. A retry with the
        same ``Idempotency-Key`` (and body) gets the first answer. SDKs should send the time of
        each attempt in a ``Sent-At`` header (RFC 3339 or epoch ms): it overrides the body's
        ``sent_at``, so a re-sent body is not mistaken for a drifting clock. A refused request
        (any 4xx after authentication) is kept in ``rejected_events`` with its reason."""
        return await ingest_request(request)


async def ingest_request(request: Request) -> IngestAnswer:
    """``POST /v1/events``, routed (``EventsController``) or not (``answer_events``)."""
    state = app_state(request)
    key = await authorize(request, "ingest")
    received_ms = time.time_ns() // 1_000_000
    seen = _Seen()
    try:
        try:
            return await _ingest(request, key.key_id, received_ms, seen)
        except (ApiError, BodyError, HTTPException) as err:
            status = err.status_code if isinstance(err, HTTPException) else err.status
            if 400 <= status < 500:
                await _keep_refused(state, err, status, seen, received_ms, key.key_id)
            raise
    except BufferFull as err:
        raise ApiError(503, "buffer_full", str(err), {"Retry-After": "2"}) from err
    except redis.exceptions.RedisError as err:  # down, loading, out of memory...
        # an ingest key is in every VAST tag: the error's text (the buffer's address) is
        # for the log, where the answer's request id finds it
        get_logger("adtier.ingest").warning("buffer_unavailable", error=str(err)[:300])
        raise ApiError(503, "buffer_unavailable", "the event buffer cannot take events; retry",
                       {"Retry-After": "5"}) from err


async def _ingest(request: Request, key_id: str, received_ms: int, seen: _Seen) -> IngestAnswer:
    state = app_state(request)
    idem = request.headers.get("idempotency-key", "")
    if len(idem) > _MAX_IDEMPOTENCY_KEY:
        raise ApiError(400, "bad_idempotency_key",
                       f"Idempotency-Key is over {_MAX_IDEMPOTENCY_KEY} characters")
    seen.body = body = await request.body()
    digest = hashlib.sha256(body).hexdigest()
    try:
        if idem and (first := await state.ingest.replay(key_id, idem, digest)) is not None:
            return first
        sent_ms = _sent_at_header(request)
        decoded = _decode(request, body, seen)
        return await state.ingest.ingest(
            decoded.events,
            decoded.event_decoder,
            received_ms=received_ms,
            sent_ms=sent_ms if sent_ms is not None else decoded.sent_at_ms,
            key_id=key_id,
            source="batch",
            body_sha256=digest,
            idempotency=idem,
        )
    except IdempotencyConflict as err:
        raise ApiError(422, "idempotency_key_reused", str(err)) from err


def _decode(request: Request, body: bytes, seen: _Seen) -> DecodedBody:
    settings = app_state(request).settings
    seen.text = inflate(body, request.headers.get("content-encoding", ""),
                        settings.max_decompressed_bytes)
    return decode_body(seen.text, request.headers.get("content-type", ""),
                       settings.max_events_per_batch)


def events_handler(app: Litestar) -> BaseRouteHandler | None:
    """The app's ``POST /v1/events`` handler (None if the app has none): ``answer_events``
    gives it to the request, which reads the body limit from it as when routed."""
    for route in app.routes:
        if route.path == EVENTS_PATH:
            for handler in getattr(route, "route_handlers", ()):
                if "POST" in getattr(handler, "http_methods", ()):
                    return handler
    return None


_JSON = (b"content-type", b"application/json")
_encode_answer = msgspec.json.Encoder().encode


async def answer_events(app: Litestar, scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /v1/events`` without Litestar's router, middleware stack and response objects
    (~12% of a 100-event batch's request-loop CPU): the same ``ingest_request`` on Litestar's
    own ``Request`` (headers, the body and its limit), the answer encoded as Litestar encodes
    it, and an error answered by the app's exception handler for it, as its exception
    middleware would (tests/integration/test_events_fast_path.py compares every answer with
    the routed handler's). ``scope["route_handler"]`` must be ``events_handler(app)``."""
    request = app.request_class(scope=scope, receive=receive, send=send)
    try:
        answer = await ingest_request(request)
    except Exception as exc:  # noqa: BLE001 - answered by the app's handler for it, as routed
        handler = next((app.exception_handlers[cls] for cls in type(exc).__mro__
                        if cls in app.exception_handlers), None)
        if handler is None:
            raise
        response = handler(request, exc)
        await response.to_asgi_response(app=None, request=request,
                                        type_encoders=app.type_encoders)(scope, receive, send)
        return
    body = _encode_answer(answer)
    await send({"type": "http.response.start", "status": 200,
                "headers": [_JSON, (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})

class BatchStatusController(Controller):
    """A batch's state reads ClickHouse too: not served by an ingest-role server."""

    path = "/v1"
    tags = ["ingest"]

    @get("/ingest/batches/{batch_id:str}", summary="Provenance and storage state of one batch")
    async def get_batch(self, request: Request, batch_id: FromPath[str]) -> BatchStatus:
        state = app_state(request)
        key = await authorize(request, "ingest")
        status = await self._from_buffer(request, batch_id) or await self._from_store(request, batch_id)
        if status is None or (key.role != "admin" and status.key_id != key.key_id):
            raise ApiError(404, "not_found", f"no batch {batch_id!r} for this key")
        status.stored = await off_loop(batch_status.stored_events, state.api_clickhouse, batch_id)
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
        row = await off_loop(batch_status.stored_record, app_state(request).api_clickhouse,
                             batch_id)
        if row is None:
            return None
        b, k, src, received, sha, events, accepted, dups, rejected, whole = row
        return BatchStatus(b, k, src, _iso(int(received)), sha, events, accepted, dups, rejected,
                           "stored" if whole else "buffered", 0)




async def _keep_refused(state, err: Exception, status: int, seen: _Seen, received_ms: int,
                        key_id: str) -> None:
    """Keep a refused request in rejected_events (its bytes capped), and say where in its
    answer. A failure to keep it is raised: the client retries, and nothing is lost."""
    if isinstance(err, HTTPException):
        code, detail = status_code_name(status), str(err.detail)
    else:
        code, detail = err.code, err.detail  # type: ignore[attr-defined]
    raw = seen.text if seen.text is not None else seen.body
    kept = await state.ingest.ingest(
        [], None, received_ms=received_ms, sent_ms=None, key_id=key_id, source="batch",
        body_sha256=hashlib.sha256(seen.body).hexdigest(),
        extra_rejections=[Rejection(-1, "", code, f"HTTP {status}: {detail}", raw)],
    )
    note = f" (kept as rejected batch {kept.batch_id})"
    if isinstance(err, HTTPException):
        err.detail = f"{err.detail}{note}"
    else:
        err.detail += note  # type: ignore[attr-defined]
