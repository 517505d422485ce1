"""VAST tracking pixels: ``GET /v1/px`` (always a 1x1 GIF) and ``GET /v1/px/template``.

A pixel's event_id is derived from the ad play ([ADSERVINGID] with its campaign, creative and
profile) and the event, so a player that fires the same tracking URL twice sends a duplicate.
Interaction events that can happen several times in one play (pause, resume, mute, unmute)
also take the playhead into the id.

Pixels are the hot path (one request per event), so the route is a plain ASGI handler, and
concurrent pixels are appended to the buffer together (a few milliseconds of micro-batching):
one script call and one stream entry for many pixels. A pixel is answered after its batch is
durable, like any batch.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import uuid
from urllib.parse import parse_qsl, urlencode

import msgspec
from litestar import Controller, Request, asgi, get
from litestar.params import FromQuery
from litestar.types import Receive, Scope, Send

from adtier import metrics
from adtier.auth import AuthError
from adtier.events import DECODERS
from adtier.ingest.pixel_keys import pixel_key
from adtier.ingest.service import IngestService
from adtier.logs import get_logger
from adtier.state import authorize

__all__ = ["PixelTemplateController", "pixel_route", "PixelBatcher", "PIXEL_EVENTS", "pixel_event", "GIF"]

log = get_logger("adtier.pixel")
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_GIF_HEADERS = [
    (b"content-type", b"image/gif"),
    (b"content-length", str(len(GIF)).encode()),
    (b"cache-control", b"no-store, no-cache, must-revalidate, max-age=0"),
    (b"pragma", b"no-cache"),
]
_NAMESPACE = uuid.UUID("6f1d2a7e-3c4b-5d6e-8f90-a1b2c3d4e5f6")

# VAST event name -> our event type
PIXEL_EVENTS = {
    "impression": "impression",
    "viewable": "viewable_impression",
    "start": "start",
    "firstQuartile": "first_quartile",
    "midpoint": "midpoint",
    "thirdQuartile": "third_quartile",
    "complete": "complete",
    "skip": "skip",
    "click": "click",
    "pause": "pause",
    "resume": "resume",
    "mute": "mute",
    "unmute": "unmute",
    "error": "error",
}
_REPEATABLE = {"pause", "resume", "mute", "unmute"}
# query parameter -> event field, and how to read it
_TEXT = {"acc": "account_id", "pf": "profile_id", "ses": "session_id", "asid": "ad_serving_id",
         "cmp": "campaign_id", "cr": "creative_id", "pod": "pod_id", "c": "content_id",
         "dev": "device", "cc": "country", "bp": "break_position"}
_INT = {"pos": "pod_position", "dur": "ad_duration_ms", "ph": "ad_playhead_ms", "err": "error_code"}
_BREAK = {"preroll": "pre", "midroll": "mid", "postroll": "post", "pre": "pre", "mid": "mid", "post": "post"}


def _present(value: str | None) -> str | None:
    """A macro the player did not substitute counts as absent: [TIMESTAMP] (VAST), also in
    percent-encoded form, and the ${MACRO} / {MACRO} / __MACRO__ styles of other SDKs."""
    if value is None:
        return None
    value = value.strip()
    upper = value.upper()
    if (not value or (value.startswith("[") and value.endswith("]")) or upper.startswith("%5B")
            or "${" in value or upper.startswith("%24%7B") or (value.startswith("{") and value.endswith("}"))
            or (value.startswith("__") and value.endswith("__") and len(value) > 4)):
        return None
    return value


def _playhead_ms(value: str) -> int:
    """[ADPLAYHEAD] is HH:MM:SS.mmm in VAST 4; plain milliseconds are accepted too."""
    if ":" not in value:
        return int(value)
    h, m, s = value.split(":")
    return int(round((int(h) * 3600 + int(m) * 60 + float(s)) * 1000))


def pixel_event(params: dict[str, str], received_ms: int) -> dict[str, object]:
    """Query parameters -> an event dict for the shared validator (which may still reject it)."""
    vast = _present(params.get("e")) or ""
    event: dict[str, object] = {"type": PIXEL_EVENTS.get(vast, vast or "missing")}
    for param, name in _TEXT.items():
        if (value := _present(params.get(param))) is not None:
            event[name] = value
    for param, name in _INT.items():
        if (value := _present(params.get(param))) is not None:
            try:
                event[name] = _playhead_ms(value) if param in ("ph", "dur") else int(value)
            except ValueError:
                event[name] = value  # the validator names the field and the reason
    if "break_position" in event:
        event["break_position"] = _BREAK.get(str(event["break_position"]).lower(), event["break_position"])
    event.setdefault("device", "other")
    event.setdefault("country", "ZZ")
    event["country"] = str(event["country"]).upper()
    ts = _present(params.get("ts"))
    event["ts"] = _parse_ts(ts) if ts else received_ms
    # One ad play: its id with what it played and to whom, so a constant or mis-substituted
    # [ADSERVINGID] cannot make different plays collide.
    identity = "|".join(str(event.get(k, "")) for k in
                        ("campaign_id", "creative_id", "profile_id", "ad_serving_id")) + f"|{vast}"
    if vast in _REPEATABLE:
        identity += f"|{event.get('ad_playhead_ms', '')}"
    event["event_id"] = str(uuid.uuid5(_NAMESPACE, identity))
    return event


def _parse_ts(value: str) -> object:
    if value.isdigit():
        return int(value)
    return value.replace(" ", "+")  # '+' in an unencoded query string arrives as a space


class PixelBatcher:
    """Group commit for pixels: while one append is in flight, pixels that arrive wait and go
    together in the next one. No fixed delay: an idle server appends a pixel at once."""

    def __init__(self, ingest: IngestService):
        self._ingest = ingest
        self._pending: dict[str, list[tuple[bytes, asyncio.Future[str]]]] = {}
        self._in_flight: set[str] = set()

    async def submit(self, key_id: str, raw: bytes) -> str:
        """accepted | duplicate | rejected, once the pixel's batch is durable."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        batch = self._pending.setdefault(key_id, [])
        batch.append((raw, future))
        if len(batch) == 1 and key_id not in self._in_flight:
            # let the pixels already read in this loop turn join the batch
            asyncio.get_running_loop().call_soon(self._flush, key_id)
        return await future

    def _flush(self, key_id: str) -> None:
        if key_id in self._in_flight or not self._pending.get(key_id):
            return
        batch = self._pending.pop(key_id)
        self._in_flight.add(key_id)
        task = asyncio.ensure_future(self._append(key_id, batch))
        task.add_done_callback(lambda _: self._done(key_id))

    def _done(self, key_id: str) -> None:
        self._in_flight.discard(key_id)
        self._flush(key_id)

    async def _append(self, key_id: str, batch: list[tuple[bytes, asyncio.Future[str]]]) -> None:
        raws = [raw for raw, _ in batch]
        try:
            answer, marks = await self._ingest.ingest_with_marks(
                raws, DECODERS.json_event, received_ms=time.time_ns() // 1_000_000,
                sent_ms=None, key_id=key_id, source="pixel",
                body_sha256=hashlib.sha256(b"\n".join(raws)).hexdigest(),
            )
        except Exception as err:  # noqa: BLE001 - each waiting pixel learns of it
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            return
        rejected = {r.index for r in answer.rejected}
        valid = iter(marks)
        for index, (_, future) in enumerate(batch):
            if index in rejected:
                outcome = "rejected"
            else:
                outcome = "duplicate" if next(valid) == 49 else "accepted"  # ord('1')
            if not future.done():
                future.set_result(outcome)


async def _gif(send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": _GIF_HEADERS})
    await send({"type": "http.response.body", "body": GIF})


@asgi("/v1/px", is_mount=False, copy_scope=False)
async def pixel_route(scope: Scope, receive: Receive, send: Send) -> None:
    """VAST tracking pixel: always a 1x1 GIF, so a player is never broken; what it rejects is
    kept in rejected_events."""
    state = scope["app"].state.adtier
    params = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
    try:
        key = await pixel_key(state, params)
        event = pixel_event(params, time.time_ns() // 1_000_000)
        outcome = await state.pixels.submit(key.key_id, msgspec.json.encode(event))
        metrics.PIXELS.labels(outcome).inc()
    except AuthError as err:
        metrics.PIXELS.labels("wrong_key_role" if err.status == 403 else "unauthorized").inc()
    except Exception as err:  # noqa: BLE001 - a pixel never fails the player
        metrics.PIXELS.labels("error").inc()
        log.warning("pixel_failed", error=str(err)[:300])
    await _gif(send)


class PixelTemplateController(Controller):
    path = "/v1/px"
    tags = ["ingest"]

    @get("/template", summary="Tracking URLs to put in a VAST response")
    async def template(self, request: Request, campaign_id: FromQuery[str],
                       creative_id: FromQuery[str],
                       ingest_key: FromQuery[str] = "[INGEST_KEY]") -> dict[str, object]:
        """``GET /v1/px?k=<ingest key>&e=<VAST event>&...`` is the pixel itself: parameters e,
        asid [ADSERVINGID], cmp, cr, acc, pf, ses, pod, pos, bp [BREAKPOSITION], dur,
        ph [ADPLAYHEAD], c [CONTENTID], dev, cc, ts [TIMESTAMP], cb [CACHEBUSTING],
        err [ERRORCODE]. It always answers a 1x1 GIF."""
        await authorize(request, "admin")
        base = str(request.base_url).rstrip("/") + "/v1/px?"
        common = {"k": ingest_key, "cmp": campaign_id, "cr": creative_id,
                  "asid": "[ADSERVINGID]", "acc": "[ACCOUNT_ID]", "pf": "[PROFILE_ID]",
                  "ses": "[SESSION_ID]", "pod": "[POD_ID]", "pos": "[POD_POSITION]",
                  "bp": "[BREAKPOSITION]", "dur": "[AD_DURATION_MS]", "ph": "[ADPLAYHEAD]",
                  "c": "[CONTENTID]", "dev": "[DEVICE]", "cc": "[COUNTRY]",
                  "ts": "[TIMESTAMP]", "cb": "[CACHEBUSTING]"}
        urls = {}
        for vast in PIXEL_EVENTS:
            query = {"e": vast, **common}
            if vast == "error":
                query["err"] = "[ERRORCODE]"
            urls[vast] = base + urlencode(query, safe="[]")
        return {
            "campaign_id": campaign_id,
            "creative_id": creative_id,
            "urls": urls,
            "note": "VAST macros ([ADSERVINGID], [TIMESTAMP], ...) are filled by the player; "
                    "the bracketed player macros ([ACCOUNT_ID], [PROFILE_ID], ...) by our SDK. "
                    "Any left unsubstituted count as absent.",
        }
