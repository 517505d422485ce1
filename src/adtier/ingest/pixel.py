"""VAST tracking pixels: ``GET /v1/px`` (always a 1x1 GIF) and ``GET /v1/px/template``.

A pixel's event_id is derived from the ad play ([ADSERVINGID]) and the event, so a player that
fires the same tracking URL twice sends a duplicate. Interaction events that can happen several
times in one play (pause, resume, mute, unmute) also take the playhead into the id.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from urllib.parse import urlencode

import msgspec
from litestar import Controller, Request, Response, get
from litestar.params import FromQuery

from adtier import metrics
from adtier.auth import AuthError
from adtier.events import DECODERS
from adtier.logs import get_logger
from adtier.ingest.normalise import Rejection
from adtier.state import app_state, authorize

__all__ = ["PixelController", "PIXEL_EVENTS", "pixel_event"]

log = get_logger("adtier.pixel")
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_HEADERS = {"Cache-Control": "no-store, no-cache, must-revalidate, max-age=0", "Pragma": "no-cache"}
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
    """A VAST macro the player did not substitute ([TIMESTAMP] literally) counts as absent."""
    if value is None:
        return None
    value = value.strip()
    if not value or (value.startswith("[") and value.endswith("]")) or value.upper().startswith("%5B"):
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
    identity = f"{event.get('ad_serving_id', '')}|{vast}"
    if vast in _REPEATABLE:
        identity += f"|{event.get('ad_playhead_ms', '')}"
    event["event_id"] = str(uuid.uuid5(_NAMESPACE, identity))
    return event


def _parse_ts(value: str) -> object:
    if value.isdigit():
        return int(value)
    return value.replace(" ", "+")  # '+' in an unencoded query string arrives as a space


class PixelController(Controller):
    path = "/v1/px"
    tags = ["ingest"]

    @get("/", summary="VAST tracking pixel", include_in_schema=True)
    async def pixel(self, request: Request) -> Response:
        """Always answers a 1x1 GIF so a player is never broken; what it rejects is kept."""
        params = {k: v for k, v in request.query_params.items()}
        try:
            await self._record(request, params)
        except AuthError:
            metrics.PIXELS.labels("unauthorized").inc()
        except Exception as err:  # noqa: BLE001 - a pixel never fails the player
            metrics.PIXELS.labels("error").inc()
            log.warning("pixel_failed", error=str(err)[:300])
        return Response(GIF, media_type="image/gif", headers=_HEADERS)

    async def _record(self, request: Request, params: dict[str, str]) -> None:
        state = app_state(request)
        key = await state.keys.require(f"Bearer {params.get('k', '')}", "ingest")
        received_ms = time.time_ns() // 1_000_000
        event = pixel_event(params, received_ms)
        raw = msgspec.json.encode(event)
        extra: list[Rejection] = []
        if event["type"] not in PIXEL_EVENTS.values():
            extra.append(Rejection(0, str(event["event_id"]), "unknown_type",
                                   f"e={params.get('e')!r} is not a VAST event this pixel takes", raw))
        answer = await state.ingest.ingest(
            [] if extra else [raw],
            DECODERS.json_event,
            received_ms=received_ms,
            sent_ms=None,
            key_id=key.key_id,
            source="pixel",
            body_sha256=hashlib.sha256(str(request.url).encode()).hexdigest(),
            extra_rejections=extra,
        )
        outcome = "rejected" if answer.rejected else "duplicate" if answer.duplicates else "accepted"
        metrics.PIXELS.labels(outcome).inc()

    @get("/template", summary="Tracking URLs to put in a VAST response")
    async def template(self, request: Request, campaign_id: FromQuery[str],
                       creative_id: FromQuery[str],
                       ingest_key: FromQuery[str] = "[INGEST_KEY]") -> dict[str, object]:
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
