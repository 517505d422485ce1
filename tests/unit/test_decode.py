"""Request bodies: Content-Encoding with a decompressed-size limit, envelopes, NDJSON, errors."""

from __future__ import annotations

import gzip
import random
import zlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adtier.events import DECODERS
from adtier.ingest.decode import BodyError, decode_body, inflate
from tests.helpers import ad_event, content_event

PAYLOAD = b'{"events": []}' * 50


def _body_error(fn, *args) -> BodyError:
    with pytest.raises(BodyError) as info:
        fn(*args)
    return info.value


# ---- inflate ---------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["", "identity", " Identity "])
def test_identity(encoding: str) -> None:
    assert inflate(PAYLOAD, encoding, len(PAYLOAD)) == PAYLOAD


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "GZIP", " gzip "])
def test_gzip(encoding: str) -> None:
    assert inflate(gzip.compress(PAYLOAD), encoding, 1 << 20) == PAYLOAD


def test_deflate_is_zlib_wrapped() -> None:
    assert inflate(zlib.compress(PAYLOAD), "deflate", 1 << 20) == PAYLOAD


@pytest.mark.parametrize("encoding", ["", "gzip", "deflate"])
def test_limit_is_inclusive(encoding: str) -> None:
    body = {"": PAYLOAD, "gzip": gzip.compress(PAYLOAD), "deflate": zlib.compress(PAYLOAD)}[encoding]
    assert inflate(body, encoding, len(PAYLOAD)) == PAYLOAD
    err = _body_error(inflate, body, encoding, len(PAYLOAD) - 1)
    assert (err.status, err.code) == (413, "body_too_large")


def test_gzip_bomb_is_stopped_at_the_limit() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9)  # 64 MiB of zeros, ~64 KiB on the wire
    assert len(bomb) < 1 << 20
    err = _body_error(inflate, bomb, "gzip", 1 << 20)
    assert (err.status, err.code) == (413, "body_too_large")


def test_limit_applies_to_decompressed_not_compressed_size() -> None:
    data = b"a" * 10_000
    compressed = gzip.compress(data)
    assert len(compressed) < 1_000
    err = _body_error(inflate, compressed, "gzip", 1_000)
    assert err.status == 413
    assert inflate(compressed, "gzip", 10_000) == data


@pytest.mark.parametrize(
    ("body", "encoding"),
    [
        (b"not gzip at all", "gzip"),
        (PAYLOAD, "gzip"),
        (zlib.compress(PAYLOAD), "gzip"),
        (gzip.compress(PAYLOAD), "deflate"),
        (b"\x1f\x8b\x08\x00garbage-after-magic", "gzip"),
    ],
)
def test_bad_compressed_body_is_400(body: bytes, encoding: str) -> None:
    err = _body_error(inflate, body, encoding, 1 << 20)
    assert (err.status, err.code) == (400, "bad_encoding")


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, br"])
def test_unknown_encoding_is_415(encoding: str) -> None:
    err = _body_error(inflate, PAYLOAD, encoding, 1 << 20)
    assert (err.status, err.code) == (415, "unsupported_encoding")


@given(data=st.binary(max_size=3000), limit=st.integers(min_value=0, max_value=4000),
       encoding=st.sampled_from(["gzip", "deflate", "identity"]))
def test_inflate_returns_the_payload_iff_within_limit(data: bytes, limit: int, encoding: str) -> None:
    body = {"gzip": gzip.compress, "deflate": zlib.compress, "identity": bytes}[encoding](data)
    if len(data) <= limit:
        assert inflate(body, encoding, limit) == data
    else:
        err = _body_error(inflate, body, encoding, limit)
        assert (err.status, err.code) == (413, "body_too_large")


def test_truncated_gzip_is_400() -> None:
    data = random.Random(7).randbytes(20_000)
    body = gzip.compress(data)
    err = _body_error(inflate, body[: len(body) // 2], "gzip", 1 << 20)
    assert (err.status, err.code) == (400, "bad_encoding")


def test_multi_member_gzip_is_fully_inflated() -> None:
    first, second = b'{"a":1}\n', b'{"b":2}\n'
    assert inflate(gzip.compress(first) + gzip.compress(second), "gzip", 1 << 20) == first + second


# ---- decode_body -----------------------------------------------------------------------------

EVENTS = [ad_event(ts=1_717_000_000_000), content_event("rating", ts=1_717_000_000_001)]


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON", "text/json", ""],
)
@pytest.mark.parametrize(
    ("sent_at", "sent_ms"),
    [(1_717_000_000_123, 1_717_000_000_123), ("2024-05-29T16:26:40.123Z", 1_717_000_000_123),
     ("2024-05-29T18:26:40.123+02:00", 1_717_000_000_123), (None, None)],
)
def test_json_envelope(content_type: str, sent_at, sent_ms) -> None:
    body = msgspec.json.encode({"sent_at": sent_at, "events": EVENTS})
    decoded = decode_body(body, content_type, 10)
    assert decoded.sent_at_ms == sent_ms
    assert decoded.event_decoder is DECODERS.json_event
    assert [msgspec.json.decode(raw) for raw in decoded.events] == EVENTS


def test_json_envelope_without_sent_at_and_with_extra_fields() -> None:
    body = msgspec.json.encode({"events": EVENTS, "sdk": "web/1.2"})
    decoded = decode_body(body, "application/json", 10)
    assert decoded.sent_at_ms is None
    assert len(decoded.events) == 2


def test_envelope_keeps_invalid_events_for_per_event_rejection() -> None:
    body = msgspec.json.encode({"events": [{"type": "bogus"}, 17, "x", EVENTS[0]]})
    decoded = decode_body(body, "application/json", 10)
    assert [bytes(raw) for raw in decoded.events[:3]] == [b'{"type":"bogus"}', b"17", b'"x"']


@pytest.mark.parametrize(
    "content_type", ["application/msgpack", "application/x-msgpack", "application/vnd.msgpack"])
def test_msgpack_envelope(content_type: str) -> None:
    body = msgspec.msgpack.encode({"sent_at": 1_717_000_000_123, "events": EVENTS})
    decoded = decode_body(body, content_type, 10)
    assert decoded.sent_at_ms == 1_717_000_000_123
    assert decoded.event_decoder is DECODERS.msgpack_event
    assert [msgspec.msgpack.decode(raw) for raw in decoded.events] == EVENTS
    assert [DECODERS.msgpack_event.decode(raw).event_id for raw in decoded.events] == [
        DECODERS.json_event.decode(msgspec.json.encode(e)).event_id for e in EVENTS]


@pytest.mark.parametrize(
    "content_type", ["application/x-ndjson", "application/ndjson", "application/jsonl",
                     "application/jsonlines", "application/x-jsonlines; charset=utf-8"])
def test_ndjson_ignores_blank_lines(content_type: str) -> None:
    lines = [msgspec.json.encode(e) for e in EVENTS]
    body = b"\n" + lines[0] + b"\r\n\n   \n\t\n" + lines[1] + b"\n\n"
    decoded = decode_body(body, content_type, 10)
    assert decoded.sent_at_ms is None
    assert decoded.event_decoder is DECODERS.json_event
    assert len(decoded.events) == 2
    assert [DECODERS.json_event.decode(line).event_id for line in decoded.events] == [
        DECODERS.json_event.decode(line).event_id for line in lines]


def test_ndjson_empty_body_has_no_events() -> None:
    assert decode_body(b"\n\n", "application/x-ndjson", 10).events == []


@pytest.mark.parametrize(
    ("body", "content_type", "code"),
    [
        (b"{not json", "application/json", "undecodable_body"),
        (b"", "application/json", "undecodable_body"),
        (b'{"events": []} extra', "application/json", "undecodable_body"),
        (b"\xc1", "application/msgpack", "undecodable_body"),
        (b"", "application/msgpack", "undecodable_body"),
        (b"[]", "application/json", "bad_batch"),
        (b"{}", "application/json", "bad_batch"),
        (b'{"events": {}}', "application/json", "bad_batch"),
        (b'{"events": [], "sent_at": "yesterday"}', "application/json", "bad_batch"),
        (b'{"events": [], "sent_at": -5}', "application/json", "bad_batch"),
        (msgspec.msgpack.encode([1, 2]), "application/msgpack", "bad_batch"),
        (msgspec.msgpack.encode({"events": 3}), "application/msgpack", "bad_batch"),
    ],
)
def test_envelope_errors_are_400(body: bytes, content_type: str, code: str) -> None:
    err = _body_error(decode_body, body, content_type, 10)
    assert (err.status, err.code) == (400, code)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", msgspec.json.encode({"events": [{}] * 4})),
        ("application/msgpack", msgspec.msgpack.encode({"events": [{}] * 4})),
        ("application/x-ndjson", b"{}\n" * 4),
    ],
)
def test_too_many_events_is_413(content_type: str, body: bytes) -> None:
    assert len(decode_body(body, content_type, 4).events) == 4
    err = _body_error(decode_body, body, content_type, 3)
    assert (err.status, err.code) == (413, "too_many_events")
    assert "limit is 3" in err.detail


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/form-data",
                                          "application/jsonx", "json"])
def test_unsupported_content_type_is_415(content_type: str) -> None:
    err = _body_error(decode_body, b'{"events": []}', content_type, 10)
    assert (err.status, err.code) == (415, "unsupported_media_type")


def test_body_error_carries_status_code_and_detail() -> None:
    err = BodyError(413, "body_too_large", "too big")
    assert (err.status, err.code, err.detail, str(err)) == (413, "body_too_large", "too big", "too big")
