"""Turn a request's raw events into ClickHouse rows, or rejections with reasons.

Rows are ClickHouse JSONEachRow lines. Each valid event is encoded by msgspec as it was
decoded (so the wire model is the row model), with the request-level provenance appended;
ClickHouse parses the lines at insert time, which is cheaper than building columns in Python.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import msgspec

from adtier.events import AdEvent, rejection_reason
from adtier.settings import Settings

__all__ = ["TimePolicy", "Rejection", "Prepared", "prepare_events", "rejected_rows", "to_ms",
           "STORABLE_MS", "storable", "ORD_FIELD", "ORD_WIDTH", "ORD_PLACEHOLDER"]

_encoder = msgspec.json.Encoder()
_UTC = timezone.utc


@dataclass(frozen=True)
class TimePolicy:
    drift_threshold_ms: int
    max_future_ms: int
    retention_ms: int

    @classmethod
    def from_settings(cls, s: Settings) -> "TimePolicy":
        return cls(s.clock_drift_threshold_ms, s.max_future_ms, s.retention_days * 86_400_000)

    def skew(self, received_ms: int, sent_ms: int | None) -> int:
        """The correction to apply to client times: zero unless the clock is clearly off."""
        if sent_ms is None:
            return 0
        offset = received_ms - sent_ms
        return offset if abs(offset) > self.drift_threshold_ms else 0


@dataclass(frozen=True)
class Rejection:
    index: int
    event_id: str
    reason: str
    detail: str
    raw: bytes


@dataclass
class Prepared:
    ad_rows: list[bytes] = field(default_factory=list)
    content_rows: list[bytes] = field(default_factory=list)
    ad_ids: list[bytes] = field(default_factory=list)
    content_ids: list[bytes] = field(default_factory=list)
    ad_types: list[str] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def valid(self) -> int:
        return len(self.ad_ids) + len(self.content_ids)

    def packed_ids(self) -> bytes:
        return b"".join(self.ad_ids) + b"".join(self.content_ids)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)


# The range ClickHouse documents for DateTime64(3): outside it an insert is refused (the whole
# block) or the value silently wrapped, so every time is checked against it at the edge.
STORABLE_MS = (-2_208_988_800_000, 10_413_791_999_999)  # 1900-01-01 .. 2299-12-31T23:59:59.999Z


def storable(ms: int) -> bool:
    return STORABLE_MS[0] <= ms <= STORABLE_MS[1]


def to_ms(value: datetime | int) -> int:
    if isinstance(value, int):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=_UTC)
    return (value - _EPOCH) // _MS  # exact: float timestamps lose the millisecond


def _seconds(ms: int) -> bytes:
    sign = b"-" if ms < 0 else b""
    return sign + b"%d.%03d" % divmod(abs(ms), 1000)


# Every ad row ends with this field: a ``profile_ord`` of 0 right-aligned in ten characters
# (JSON allows the spaces), which the flusher overwrites in place with the profile's ordinal
# (flusher.with_ordinals) instead of splitting and re-joining the block to add a field.
ORD_FIELD = b',"profile_ord":'
ORD_WIDTH = 10  # digits of the largest UInt32
ORD_PLACEHOLDER = ORD_FIELD + b"0".rjust(ORD_WIDTH)


def _suffix(received_ms: int, sent_ms: int | None, skew: int, source: str, batch_id: str, key_id: str) -> bytes:
    sent = b"null" if sent_ms is None else _seconds(sent_ms)
    return (
        b',"received_at":' + _seconds(received_ms) + b',"sent_at":' + sent
        + b',"clock_skew_ms":%d' % skew
        + b',"source":' + _encoder.encode(source)
        + b',"batch_id":' + _encoder.encode(batch_id)
        + b',"key_id":' + _encoder.encode(key_id) + b"}\n"
    )


# event class -> (is an ad event, its type tag), filled on first sight of each class
_KINDS: dict[type, tuple[bool, str]] = {}


def _kind(cls: type) -> tuple[bool, str]:
    _KINDS[cls] = kind = (issubclass(cls, AdEvent), cls.__struct_config__.tag)
    return kind


def prepare_events(
    raws: list[bytes] | list[msgspec.Raw],
    decoder: msgspec.json.Decoder | msgspec.msgpack.Decoder | None,
    policy: TimePolicy,
    received_ms: int,
    sent_ms: int | None,
    source: str,
    batch_id: str,
    key_id: str,
    max_event_bytes: int,
) -> Prepared:
    out = Prepared()
    skew = policy.skew(received_ms, sent_ms)
    tail = _suffix(received_ms, sent_ms, skew, source, batch_id, key_id)
    ad_tail = tail[:-2] + ORD_PLACEHOLDER + b"}\n"
    newest = received_ms + policy.max_future_ms
    oldest = received_ms - policy.retention_ms
    first_storable, last_storable = STORABLE_MS
    reject = out.rejections.append
    # the per-event loop is the request path's hot spot: bound methods and per-class lookups
    # are taken once per request, not once per event
    ad_rows, ad_ids, ad_types = out.ad_rows.append, out.ad_ids.append, out.ad_types.append
    content_rows, content_ids, content_types = (
        out.content_rows.append, out.content_ids.append, out.content_types.append)
    # (no decoder when there is nothing to decode: a refused request kept with its reason)
    decode = decoder.decode if decoder is not None else None
    encode, raw_value, join = _encoder.encode, msgspec.Raw, b"".join
    for index, raw in enumerate(raws):
        if len(raw) > max_event_bytes:
            raw = bytes(raw)
            reject(Rejection(index, "", "event_too_large", f"{len(raw)} bytes > {max_event_bytes}", raw))
            continue
        try:
            event = decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError) as err:
            raw = bytes(raw)
            reject(Rejection(index, _guess_id(raw), rejection_reason(err), _worded(err, raw), raw))
            continue
        except ValueError as err:  # e.g. a msgpack string that is not UTF-8
            raw = bytes(raw)
            reject(Rejection(index, "", "malformed", str(err), raw))
            continue
        except RecursionError:  # an unknown field nested deeper than the decoder can follow
            raw = bytes(raw)
            reject(Rejection(index, "", "too_deep", "the event is nested too deeply", raw))
            continue
        client_ms = event.ts if type(event.ts) is int else to_ms(event.ts)
        if not first_storable <= client_ms <= last_storable:
            reject(Rejection(index, str(event.event_id), "ts_out_of_range",
                             "event time is outside 1900-01-01..2299-12-31", bytes(raw)))
            continue
        ts = client_ms + skew
        if ts > newest:
            reject(Rejection(index, str(event.event_id), "ts_in_future",
                             f"event time is {ts - received_ms} ms ahead of the server", bytes(raw)))
            continue
        if ts < oldest:
            reject(Rejection(index, str(event.event_id), "ts_too_old",
                             "event time is older than the retention window", bytes(raw)))
            continue
        # ClickHouse reads a JSON number into DateTime64 as epoch seconds; written exactly.
        seconds = b"%d.%03d" % divmod(ts, 1000) if ts >= 0 else _seconds(ts)
        event.ts = raw_value(seconds)
        client = seconds if not skew else _seconds(client_ms)
        kind = _KINDS.get(type(event)) or _kind(type(event))
        # one join: the row's parts copied once, not once per '+'
        row = join((encode(event)[:-1], b',"client_ts":', client, ad_tail if kind[0] else tail))
        # the id's 16 bytes from its int: UUID.bytes is a Python property doing the same
        if kind[0]:
            ad_rows(row)
            ad_ids(event.event_id.int.to_bytes(16, "big"))
            ad_types(kind[1])
        else:
            content_rows(row)
            content_ids(event.event_id.int.to_bytes(16, "big"))
            content_types(kind[1])
    return out


def _loose(raw: bytes) -> object:
    """An event that failed validation, decoded without a type (None if it cannot be)."""
    try:
        return msgspec.json.decode(raw) if raw.lstrip()[:1] == b"{" else msgspec.msgpack.decode(raw)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None


def _guess_id(raw: bytes) -> str:
    """The event_id of an event that failed validation, when one can still be read."""
    value = _loose(raw)
    if isinstance(value, dict):
        event_id = value.get("event_id")
        if isinstance(event_id, str):
            return event_id[:64]
    return ""


_COUNTRY_ENUM = "Invalid enum value "
_AT_COUNTRY = " - at `$.country`"


def _worded(err: msgspec.ValidationError | msgspec.DecodeError, raw: bytes) -> str:
    """The rejection's detail: msgspec's text, except for a country outside ISO 3166-1, which
    the event model checks as a Literal (in C) and the answer words as before, when the
    check was the model's own Python."""
    text = str(err)
    if text.startswith(_COUNTRY_ENUM) and text.endswith(_AT_COUNTRY):
        value = _loose(raw)
        if isinstance(value, dict) and isinstance(value.get("country"), str):
            country = value["country"]  # quoted short: the words go in the answer
            shown = repr(country[:16]) + ("…" if len(country) > 16 else "")
            return f"`country` {shown} is not an ISO 3166-1 alpha-2 code"
    return text


# What a request's rejections may cost: the raw bytes kept, over all its rejected events (the
# rest is cut, and the detail says how much), and the detail text of each.
RAW_BYTES_PER_REQUEST = 64 * 1024
DETAIL_CHARS = 1000
# Control characters other than tab and newlines: JSON writes each as six bytes (\u0000).
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def rejected_rows(
    rejections: list[Rejection], received_ms: int, source: str, batch_id: str, key_id: str
) -> bytes:
    """rejected_events rows; at most RAW_BYTES_PER_REQUEST raw bytes kept in all."""
    rows = []
    budget = RAW_BYTES_PER_REQUEST
    for r in rejections:
        raw = r.raw[:budget]
        budget -= len(raw)
        detail = r.detail[:DETAIL_CHARS]
        if len(raw) < len(r.raw):
            detail += f" [raw cut: {len(raw)} of {len(r.raw)} bytes kept]"
        rows.append(_encoder.encode({
            "received_at": received_ms / 1000,
            "source": source,
            "key_id": key_id,
            "batch_id": batch_id,
            "idx": max(r.index, 0),
            "event_id": r.event_id,
            "reason": r.reason,
            "detail": detail,
            "raw": _printable(raw),
        }) + b"\n")
    return b"".join(rows)


def _printable(raw: bytes) -> str:
    """Text of what the client sent, whatever the wire format was, at most ~4/3 of its size:
    readable UTF-8 as is, msgpack as JSON, anything else base64 (``b64:``)."""
    if raw[:1] in (b"{", b"[", b" ", b"\t", b"\r", b"\n") or not raw:
        return _text_or_b64(raw)
    try:
        text = _encoder.encode(msgspec.msgpack.decode(raw))
    except (msgspec.DecodeError, ValueError, TypeError, RecursionError):
        return "b64:" + base64.b64encode(raw).decode()
    return text.decode() if len(text) <= 2 * len(raw) + 16 else "b64:" + base64.b64encode(raw).decode()


def _text_or_b64(raw: bytes) -> str:
    if not _CONTROL.search(raw):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return "b64:" + base64.b64encode(raw).decode()
