"""The event model: one msgspec tagged union (on ``type``) for every ad and viewing event.

Decoding is done by one reused typed decoder per wire format; a batch envelope keeps each
event as ``msgspec.Raw`` so one bad event is rejected on its own, with its reason.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal, Union

import msgspec
from msgspec import Meta

from adtier.countries import COUNTRY_CODES

__all__ = [
    "AD_EVENT_TYPES",
    "CONTENT_EVENT_TYPES",
    "AdEvent",
    "AdError",
    "AdProgress",
    "VerificationNotExecuted",
    "ContentEvent",
    "Rating",
    "Event",
    "JsonBatch",
    "MsgpackBatch",
    "EventDecoders",
    "DECODERS",
    "rejection_reason",
]

Id = Annotated[str, Meta(min_length=1, max_length=64)]
OptionalId = Annotated[str, Meta(max_length=64)]
Millis = Annotated[int, Meta(ge=0, le=2**31 - 1)]
EpochMillis = Annotated[int, Meta(ge=0, le=253_402_300_799_999)]
Device = Literal["tv", "mobile", "tablet", "web", "console", "other"]
# ISO 3166-1 alpha-2, checked by msgspec in C: a __post_init__ doing it in Python cost ~0.3 µs
# per decoded event, a quarter of the decode (the answer keeps its words: normalise._worded).
Country = Literal[tuple(sorted(COUNTRY_CODES))]  # type: ignore[valid-type]
BreakPosition = Literal["pre", "mid", "post"]
# VAST [SERVERSIDE]: 0 the client fired it, 1 a server on the client's behalf (SSAI stitcher),
# 2 a server on its own decision.
ServerSide = Literal[0, 1, 2]
# vast_4.2.xsd, Tracking/@offset: HH:MM:SS(.mmm) or a percentage.
ProgressOffset = Annotated[
    str, Meta(pattern=r"^(\d{2}:[0-5]\d:[0-5]\d(\.\d\d\d)?|1?\d?\d(\.?\d)*%)$")]
# Clients send RFC 3339 strings or epoch milliseconds; both decode here.
Timestamp = Union[datetime, EpochMillis]

AD_EVENT_TYPES: tuple[str, ...] = (
    "impression",
    "viewable_impression",
    "start",
    "first_quartile",
    "midpoint",
    "third_quartile",
    "complete",
    "skip",
    "click",
    "pause",
    "resume",
    "mute",
    "unmute",
    "error",
    # The rest of VAST 4.2's tracking events (ingest/vast_events.py maps the VAST names).
    "not_viewable",
    "view_undetermined",
    "loaded",
    "creative_view",
    "progress",
    "close_linear",
    "close",
    "rewind",
    "player_expand",
    "player_collapse",
    "interactive_start",
    "other_ad_interaction",
    "accept_invitation",
    "ad_expand",
    "ad_collapse",
    "minimize",
    "overlay_view_duration",
    "not_used",
    "verification_not_executed",
)
CONTENT_EVENT_TYPES: tuple[str, ...] = (
    "content_start",
    "content_heartbeat",
    "content_complete",
    "content_stop",
    "rating",
)


# omit_defaults: absent optional fields are not written into the stored row (ClickHouse
# fills the column default), which makes rows smaller and cheaper to parse at insert time.
class _Common(msgspec.Struct, kw_only=True, tag_field="type", omit_defaults=True):
    event_id: uuid.UUID
    ts: Timestamp
    account_id: Id
    profile_id: Id
    session_id: OptionalId = ""
    device: Device
    country: Country


class AdEvent(_Common, kw_only=True):
    """Fields shared by every VAST ad event; ``type`` selects the subclass."""

    campaign_id: Id
    creative_id: Id
    ad_serving_id: Id
    pod_id: OptionalId = ""
    pod_position: Annotated[int, Meta(ge=1, le=64)] | None = None
    break_position: BreakPosition | None = None
    ad_duration_ms: Millis | None = None
    ad_playhead_ms: Millis | None = None
    content_id: OptionalId = ""
    # who fired it (SSAI): not part of the event's identity, so a stitcher's and a player's
    # beacon of one ad play and event are one event
    server_side: ServerSide = 0
    content_playhead_ms: Millis | None = None  # [MEDIAPLAYHEAD] / [CONTENTPLAYHEAD]
    universal_ad_id: Annotated[str, Meta(max_length=256)] = ""  # [UNIVERSALADID]

    def __post_init__(self) -> None:
        # runs for every ad event decoded (the hot path): plain attribute reads, no locals
        if (self.ad_playhead_ms is not None and self.ad_duration_ms is not None
                and self.ad_playhead_ms > self.ad_duration_ms):
            raise ValueError(
                f"`ad_playhead_ms` {self.ad_playhead_ms} is beyond "
                f"`ad_duration_ms` {self.ad_duration_ms}"
            )


class AdError(AdEvent, kw_only=True, tag="error"):
    error_code: Annotated[int, Meta(ge=100, le=902)]


class AdProgress(AdEvent, kw_only=True, tag="progress"):
    progress_offset: ProgressOffset  # the Tracking element's offset (required for progress)


class VerificationNotExecuted(AdEvent, kw_only=True, tag="verification_not_executed"):
    reason_code: Annotated[int, Meta(ge=0, le=999)] | None = None  # VAST [REASON]


class ContentEvent(_Common, kw_only=True):
    content_id: Id
    position_ms: Millis | None = None
    watched_ms: Millis | None = None


class Rating(_Common, kw_only=True, tag="rating"):
    content_id: Id
    value: Literal[-1, 1, 2]


def _tagged(base: type, tag: str) -> type:
    return msgspec.defstruct(tag.title().replace("_", ""), [], bases=(base,), tag=tag, kw_only=True)


_OWN_CLASSES = {"error": AdError, "progress": AdProgress,
                "verification_not_executed": VerificationNotExecuted}
_AD_CLASSES = tuple(_OWN_CLASSES.get(t) or _tagged(AdEvent, t) for t in AD_EVENT_TYPES)
_CONTENT_CLASSES = tuple(_tagged(ContentEvent, t) for t in CONTENT_EVENT_TYPES if t != "rating")
EVENT_CLASSES: tuple[type, ...] = _AD_CLASSES + _CONTENT_CLASSES + (Rating,)
Event = Union[EVENT_CLASSES]  # type: ignore[valid-type]


class JsonBatch(msgspec.Struct):
    events: list[msgspec.Raw]
    sent_at: Timestamp | None = None


class MsgpackBatch(msgspec.Struct):
    events: list[msgspec.Raw]
    sent_at: Timestamp | None = None


class EventDecoders:
    """The reused typed decoders: one per wire format, for envelopes and single events."""

    def __init__(self) -> None:
        self.json_batch = msgspec.json.Decoder(JsonBatch)
        self.json_event = msgspec.json.Decoder(Event)
        self.msgpack_batch = msgspec.msgpack.Decoder(MsgpackBatch)
        self.msgpack_event = msgspec.msgpack.Decoder(Event)


DECODERS = EventDecoders()


def rejection_reason(error: msgspec.ValidationError | msgspec.DecodeError) -> str:
    """A stable, machine-readable reason code for a decode failure (detail carries the text)."""
    # Decide from where the error is, never from words that may quote the client's value.
    text = str(error)
    if isinstance(error, msgspec.ValidationError):
        if text.startswith("Object missing required field"):
            return "missing_field"
        if text.endswith("- at `$.type`"):
            return "unknown_type"
        if text.startswith("Expected `object`") and " - at `" not in text:
            return "not_an_object"
        return "invalid_field"
    return "malformed"
