"""Request bodies -> (sent_at, raw events): JSON or msgpack envelopes, NDJSON, gzip; limits."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import msgspec

from adtier.events import DECODERS
from adtier.ingest.normalise import storable, to_ms

__all__ = ["BodyError", "DecodedBody", "decode_body", "inflate"]

JSON_TYPES = {"application/json", "text/json"}
MSGPACK_TYPES = {"application/msgpack", "application/x-msgpack", "application/vnd.msgpack"}
NDJSON_TYPES = {"application/x-ndjson", "application/ndjson", "application/jsonl",
                "application/jsonlines", "application/x-jsonlines"}


class BodyError(Exception):
    def __init__(self, status: int, code: str, detail: str):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


@dataclass
class DecodedBody:
    events: list[msgspec.Raw] | list[bytes]
    sent_at_ms: int | None
    event_decoder: msgspec.json.Decoder | msgspec.msgpack.Decoder


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo Content-Encoding, never producing more than ``limit`` bytes."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        out = body
    elif encoding in ("gzip", "x-gzip", "deflate"):
        out = _inflate_members(body, encoding, limit)
    else:
        raise BodyError(415, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported; use gzip")
    if len(out) > limit:
        raise BodyError(413, "body_too_large", f"body exceeds {limit} bytes")
    return out


# Input is fed to zlib in slices: at a member's end zlib copies what it was given and did not
# use (unused_data), so handing it the whole body made every member cost the body's size again.
_SLICE = 64 * 1024
# Real clients send one member (or a few, when they append gzipped chunks); thousands of empty
# 20-byte members are only a way to burn the server's time.
MAX_GZIP_MEMBERS = 1024


def _inflate_members(body: bytes, encoding: str, limit: int) -> bytes:
    """gzip allows several members back to back (RFC 1952); a cut-off stream is an error.
    Linear in the body: each member reads its own bytes only."""
    wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
    view = memoryview(body)
    parts: list[bytes] = []
    size = pos = members = 0
    while True:
        members += 1
        if members > MAX_GZIP_MEMBERS:
            raise BodyError(400, "bad_encoding",
                            f"{encoding} body has over {MAX_GZIP_MEMBERS} members")
        inflater = zlib.decompressobj(wbits)
        while not inflater.eof:
            if pos >= len(view):
                raise BodyError(400, "bad_encoding", f"{encoding} body is truncated")
            piece = view[pos:pos + _SLICE]
            pos += len(piece)
            try:
                part = inflater.decompress(piece, limit - size + 1)
            except zlib.error as err:
                raise BodyError(400, "bad_encoding",
                                f"body is not valid {encoding}: {err}") from err
            size += len(part)
            if size > limit or inflater.unconsumed_tail:
                raise BodyError(413, "body_too_large", f"decompressed body exceeds {limit} bytes")
            parts.append(part)
        pos -= len(inflater.unused_data)  # the next member starts there
        if pos >= len(view) or encoding == "deflate":
            break
    return b"".join(parts)


def decode_body(body: bytes, content_type: str, max_events: int) -> DecodedBody:
    media = content_type.split(";")[0].strip().lower()
    if media in JSON_TYPES or media == "":
        decoded = _envelope(DECODERS.json_batch, body, "JSON")
        result = DecodedBody(decoded.events, _sent(decoded.sent_at), DECODERS.json_event)
    elif media in MSGPACK_TYPES:
        decoded = _envelope(DECODERS.msgpack_batch, body, "msgpack")
        result = DecodedBody(decoded.events, _sent(decoded.sent_at), DECODERS.msgpack_event)
    elif media in NDJSON_TYPES:
        lines = [line for line in body.split(b"\n") if line.strip()]
        result = DecodedBody(lines, None, DECODERS.json_event)
    else:
        raise BodyError(415, "unsupported_media_type",
                        f"Content-Type {media!r}: send application/json, application/msgpack "
                        "or application/x-ndjson")
    if len(result.events) > max_events:
        raise BodyError(413, "too_many_events",
                        f"{len(result.events)} events in one batch; the limit is {max_events}")
    return result


def _envelope(decoder: msgspec.json.Decoder | msgspec.msgpack.Decoder, body: bytes, what: str):
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as err:
        raise BodyError(400, "bad_batch", f"batch envelope: {err}") from err
    except (msgspec.DecodeError, ValueError) as err:  # ValueError: e.g. invalid UTF-8 in msgpack
        raise BodyError(400, "undecodable_body", f"body is not valid {what}: {err}") from err
    except RecursionError as err:  # msgspec has no depth limit of its own: the stack is it
        raise BodyError(400, "body_too_deep", f"{what} body is nested too deeply") from err


def _sent(value: object) -> int | None:
    if value is None:
        return None
    ms = to_ms(value)  # type: ignore[arg-type]
    if not storable(ms):
        raise BodyError(400, "bad_sent_at", f"sent_at {ms} ms is outside 1900-01-01..2299-12-31")
    return ms
