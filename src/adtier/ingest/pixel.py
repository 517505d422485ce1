"""VAST tracking pixels: ``GET /v1/px`` (always a 1x1 GIF) and ``GET /v1/px/template``.

Every VAST 4.2 tracking event name is read (``vast_events.py``) and every macro value in the
IAB's format (``vast_macros.py``). Each pixel ends stored or in rejected_events with a reason:
what cannot become an event is a ``PixelRejected`` here, what the event model refuses is
rejected by the shared validator.

A pixel's event_id is derived from the ad play ([ADSERVINGID] with its campaign, creative and
profile) and the event, so a player that fires the same tracking URL twice sends a duplicate,
and so does an SSAI stitcher firing the player's beacon (who fired it is not in the id).
Interaction events that can happen several times in one play (pause, mute, expand ...) also take
the playhead into the id, and progress its offset.

Pixels are the hot path (one request per event), so the app answers them before Litestar's
routing and middlewares (``app.AdtierApp`` calls ``answer_pixel``), and concurrent pixels are
appended to the buffer together (group commit, no fixed delay): one script call and one stream
entry for many pixels. A pixel is answered after its batch is durable, like any batch.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import msgspec
from litestar import Controller, Request, asgi, get
from litestar.params import FromQuery
from litestar.types import Receive, Scope, Send

from adtier import metrics
from adtier.auth import AuthError
from adtier.events import DECODERS
from adtier.ingest import vast_macros as M
from adtier.ingest.normalise import Rejection
from adtier.ingest.pixel_keys import pixel_key
from adtier.ingest.service import IngestService
from adtier.ingest.vast_events import PIXEL_EVENTS, REPEATABLE
from adtier.ingest.vast_macros import unfilled
from adtier.ingest.vast_xml import tracking_urls
from adtier.logs import get_logger
from adtier.state import AppState, authorize

__all__ = ["PixelTemplateController", "pixel_route", "answer_pixel", "GIF_HEADERS", "PIXEL_PATH",
           "query_pairs", "PixelBatcher", "PIXEL_EVENTS", "pixel_event", "PixelRejected",
           "rejection_of", "GIF"]

log = get_logger("adtier.pixel")
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
GIF_HEADERS = [
    (b"content-type", b"image/gif"),
    (b"content-length", str(len(GIF)).encode()),
    (b"cache-control", b"no-store, no-cache, must-revalidate, max-age=0"),
    (b"pragma", b"no-cache"),
]
PIXEL_PATH = "/v1/px"
_NAMESPACE = uuid.UUID("6f1d2a7e-3c4b-5d6e-8f90-a1b2c3d4e5f6")

# query parameter -> event field (text as sent, at most 64 characters: the validator checks)
_TEXT = {"acc": "account_id", "pf": "profile_id", "ses": "session_id", "asid": "ad_serving_id",
         "cmp": "campaign_id", "cr": "creative_id", "pod": "pod_id", "c": "content_id",
         "dev": "device", "cc": "country", "uaid": "universal_ad_id"}


class PixelRejected(Exception):
    """A pixel that cannot become an event: kept in rejected_events with ``reason``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _present(value: str | None) -> str | None:
    """The value, or None when absent, blank or an unsubstituted macro (vast_macros.unfilled)."""
    if value is None:
        return None
    value = value.strip()
    return None if not value or unfilled(value) else value


def _pod_position(value: str) -> int:
    return M.int_value(value, "pos", 1, 64)


# query parameter -> (event field, reader of the IAB value)
_READ: dict[str, tuple[str, Callable[[str], object]]] = {
    "bp": ("break_position", M.break_position),
    "ph": ("ad_playhead_ms", M.timecode_ms),
    "dur": ("ad_duration_ms", partial(M.timecode_ms, macro="duration")),
    "mph": ("content_playhead_ms", partial(M.timecode_ms, macro="MEDIAPLAYHEAD")),
    "cph": ("content_playhead_ms", partial(M.timecode_ms, macro="CONTENTPLAYHEAD")),
    "pos": ("pod_position", _pod_position),
    "err": ("error_code", M.error_code),
    "rsn": ("reason_code", M.reason_code),
    "ss": ("server_side", M.server_side),
    "off": ("progress_offset", M.progress_offset),
}


def _server_side(headers: dict[bytes, bytes] | None) -> int:
    """[SERVERSIDE] when the URL does not carry it: 1 if a server says whose device it fires for
    (the X-Device-User-Agent / X-Device-IP headers of VAST 4.1 server-to-server requests),
    else the IAB default 0. X-Forwarded-For alone is any proxy's and says nothing."""
    if headers and (b"x-device-user-agent" in headers or b"x-device-ip" in headers):
        return 1
    return 0


def pixel_event(params: dict[str, str], received_ms: int,
                headers: dict[bytes, bytes] | None = None) -> dict[str, object]:
    """Query parameters -> an event dict for the shared validator (which may still reject it),
    or PixelRejected naming why the pixel cannot be one."""
    vast = _present(params.get("e"))
    if vast is None:
        raise PixelRejected("missing_field", "no VAST event name (`e`)")
    event_type = PIXEL_EVENTS.get(vast)
    if event_type is None:
        raise PixelRejected("unknown_type",
                            f"{vast[:64]!r} is not a VAST 4.2 tracking event name")
    event: dict[str, object] = {"type": event_type}
    for param, name in _TEXT.items():
        if (value := _present(params.get(param))) is not None:
            event[name] = value
    for param, (name, read) in _READ.items():
        if (value := _present(params.get(param))) is not None:
            try:
                got = read(value)
            except M.MacroError as err:
                raise PixelRejected("invalid_field", f"`{name}`: {err}") from None
            if got is not None:
                event[name] = got
    if "server_side" not in event:
        event["server_side"] = _server_side(headers)
    event.setdefault("device", "other")
    event.setdefault("country", "ZZ")
    event["country"] = str(event["country"]).upper()
    if (ts := _present(params.get("ts"))) is not None:
        try:
            event["ts"] = M.timestamp_ms(ts)
        except M.MacroError as err:
            raise PixelRejected("invalid_field", f"`ts`: {err}") from None
    else:
        event["ts"] = received_ms
    event["event_id"] = _event_id(event, vast)
    return event


def _event_id(event: dict[str, object], vast: str) -> str:
    """One ad play and event: its [ADSERVINGID] with what it played and to whom, so a constant
    or mis-substituted id cannot make different plays collide. Who fired it (server_side) is
    not in it: a player's and an SSAI stitcher's beacon of one play and event are one event."""
    get = event.get
    identity = (f"{get('campaign_id', '')}|{get('creative_id', '')}|{get('profile_id', '')}"
                f"|{get('ad_serving_id', '')}|{vast}")
    if vast in REPEATABLE:
        identity += f"|{get('ad_playhead_ms', '')}"
    elif vast == "progress":
        identity += f"|{get('progress_offset', '')}"
    return uuid5_text(identity)


_NAMESPACE_SHA1 = hashlib.sha1(_NAMESPACE.bytes)


def uuid5_text(name: str) -> str:
    """``str(uuid.uuid5(_NAMESPACE, name))`` without building UUID objects (a pixel's hot path;
    the test pins the two equal): SHA-1 of the namespace and the name, version 5, RFC 4122."""
    digest = _NAMESPACE_SHA1.copy()
    digest.update(name.encode())
    b = bytearray(digest.digest()[:16])
    b[6] = (b[6] & 0x0F) | 0x50
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def rejection_of(query: str, reason: str, detail: str) -> Rejection:
    """A pixel kept in rejected_events: its query string as the raw text (the key removed)."""
    raw = msgspec.json.encode({"query": _without_key(query)[:8192]})
    return Rejection(0, "", reason, detail, raw)


def _without_key(query: str) -> str:
    # by the decoded name, as parse_qsl reads it: `%6B=` authenticates like `k=`
    return "&".join(p for p in query.split("&")
                    if unquote_plus(p.partition("=")[0]) != "k")


class PixelBatcher:
    """Group commit for pixels: while one append is in flight, pixels that arrive wait and go
    together in the next one. No fixed delay: an idle server appends a pixel at once.

    An item is an event (JSON bytes, validated with the batch) or a Rejection the pixel parser
    already made (kept in rejected_events with the batch)."""

    def __init__(self, ingest: IngestService):
        self._ingest = ingest
        self._pending: dict[str, list[tuple[bytes | Rejection, asyncio.Future[str]]]] = {}
        self._in_flight: set[str] = set()

    async def submit(self, key_id: str, item: bytes | Rejection) -> str:
        """accepted | duplicate | rejected, once the pixel's batch is durable."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        batch = self._pending.setdefault(key_id, [])
        batch.append((item, future))
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

    async def _append(self, key_id: str,
                      batch: list[tuple[bytes | Rejection, asyncio.Future[str]]]) -> None:
        raws = [item for item, _ in batch if isinstance(item, bytes)]
        # parser rejections are numbered after the events, so their indexes never collide
        early = [Rejection(len(raws) + i, r.event_id, r.reason, r.detail, r.raw)
                 for i, r in enumerate(item for item, _ in batch if isinstance(item, Rejection))]
        try:
            answer, marks = await self._ingest.ingest_with_marks(
                raws, DECODERS.json_event, received_ms=time.time_ns() // 1_000_000,
                sent_ms=None, key_id=key_id, source="pixel",
                body_sha256=hashlib.sha256(b"\n".join(raws + [r.raw for r in early])).hexdigest(),
                extra_rejections=early,
            )
        except Exception as err:  # noqa: BLE001 - each waiting pixel learns of it
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            return
        rejected = {r.index for r in answer.rejected}
        valid = iter(marks)
        index = 0
        for item, future in batch:
            if isinstance(item, Rejection):
                outcome = "rejected"
            else:
                if index in rejected:
                    outcome = "rejected"
                else:
                    outcome = "duplicate" if next(valid) == 49 else "accepted"  # ord('1')
                index += 1
            if not future.done():
                future.set_result(outcome)


async def _gif(send: Send, headers: list[tuple[bytes, bytes]] = GIF_HEADERS) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": GIF})


@asgi(PIXEL_PATH, is_mount=False, copy_scope=False)
async def pixel_route(scope: Scope, receive: Receive, send: Send) -> None:
    """VAST tracking pixel: always a 1x1 GIF, so a player is never broken; what it rejects is
    kept in rejected_events. (The app answers ``PIXEL_PATH`` before routing, with
    ``answer_pixel``; this route documents it and serves a Litestar app without that.)"""
    await answer_pixel(scope["app"].state.adtier, scope, send)


async def answer_pixel(state: AppState, scope: Scope, send: Send,
                       headers: list[tuple[bytes, bytes]] = GIF_HEADERS) -> None:
    """One pixel: its key checked, its event (or rejection) appended with its group, then the
    GIF with ``headers``."""
    query = scope["query_string"].decode("latin-1")
    pairs = query_pairs(query)
    params = dict(pairs)
    try:
        others = [v for n, v in pairs if n == "k"][:-1]  # a repeated k (even as %6B)
        key = await pixel_key(state, params, others)
        outcome = await state.pixels.submit(key.key_id, _parsed(query, params, scope))
        _counted(outcome)
    except AuthError as err:
        _counted("wrong_key_role" if err.status == 403 else "unauthorized")
    except Exception as err:  # noqa: BLE001 - a pixel never fails the player
        _counted("error")
        log.warning("pixel_failed", error=str(err)[:300])
    await _gif(send, headers)


_COUNTERS: dict[str, Any] = {}


def _counted(outcome: str) -> None:
    # the labelled child looked up once per outcome: labels() is a few µs, per pixel
    counter = _COUNTERS.get(outcome)
    if counter is None:
        counter = _COUNTERS[outcome] = metrics.PIXELS.labels(outcome)
    counter.inc()


def query_pairs(query: str) -> list[tuple[str, str]]:
    """``parse_qsl(query, keep_blank_values=True)``; a query with nothing escaped (the usual
    pixel) is split directly, which gives the same pairs at a fraction of the cost."""
    if "%" in query or "+" in query:
        return parse_qsl(query, keep_blank_values=True)
    return [(name, value) for name, _, value in (p.partition("=") for p in query.split("&") if p)]


def _parsed(query: str, params: dict[str, str], scope: Scope) -> bytes | Rejection:
    """The pixel's event, or its rejection: every pixel ends stored or rejected with a reason."""
    try:
        if (bad := _not_utf8(query, params)) is not None:
            raise PixelRejected("invalid_field", f"`{bad[:16]}`: not UTF-8 once percent-decoded")
        headers = dict(scope["headers"])
        return msgspec.json.encode(pixel_event(params, time.time_ns() // 1_000_000, headers))
    except PixelRejected as err:
        return rejection_of(query, err.reason, err.detail)
    except Exception as err:  # noqa: BLE001 - a parser bug still keeps the pixel, with a reason
        log.warning("pixel_parse_failed", error=str(err)[:300])
        return rejection_of(query, "malformed", f"unreadable pixel: {type(err).__name__}")


def _not_utf8(query: str, params: dict[str, str]) -> str | None:
    """The first parameter whose percent-escapes are not UTF-8. parse_qsl replaces them with
    U+FFFD, which would merge different ids (%FF, %FE) into one; only a value holding U+FFFD
    (rare) is decoded again, strictly, to tell a real one from a replaced byte."""
    if not any("\ufffd" in value for value in params.values()):
        return None
    for part in query.split("&"):
        name, _, value = part.partition("=")
        try:
            unquote_plus(value, errors="strict")
        except UnicodeDecodeError:
            return unquote_plus(name)
    return None


class PixelTemplateController(Controller):
    path = "/v1/px"
    tags = ["ingest"]

    @get("/template", summary="Tracking URLs to put in a VAST response")
    async def template(self, request: Request, campaign_id: FromQuery[str],
                       creative_id: FromQuery[str],
                       ingest_key: FromQuery[str] = "[INGEST_KEY]") -> dict[str, object]:
        """``GET /v1/px?k=<ingest key>&e=<VAST event>&...`` is the pixel itself: parameters e
        (any VAST 4.2 tracking event name), asid [ADSERVINGID], cmp, cr, acc, pf, ses, pod, pos,
        bp [BREAKPOSITION], dur, ph [ADPLAYHEAD], mph [MEDIAPLAYHEAD], c [CONTENTID],
        uaid [UNIVERSALADID], dev, cc, ss [SERVERSIDE], ts [TIMESTAMP], cb [CACHEBUSTING],
        err [ERRORCODE], rsn [REASON], off (progress offset). It always answers a 1x1 GIF.
        ``GET /v1/vast/tracking`` gives the same URLs as VAST XML."""
        await authorize(request, "admin")
        base = str(request.base_url).rstrip("/")
        # progress needs the Tracking element's offset: this one is at 5 s of play
        urls = tracking_urls(base, campaign_id, creative_id, ingest_key, offset="00:00:05")
        return {
            "campaign_id": campaign_id,
            "creative_id": creative_id,
            "urls": urls,
            "note": "VAST macros ([ADSERVINGID], [TIMESTAMP], ...) are filled by the player; "
                    "the bracketed player macros ([ACCOUNT_ID], [PROFILE_ID], ...) by our SDK. "
                    "Any left unsubstituted count as absent.",
        }
