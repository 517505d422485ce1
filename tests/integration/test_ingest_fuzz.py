"""Property-based fuzzing of POST /v1/events and GET /v1/px (bounded examples, no deadline).

For any body: no 5xx; every event accounted for (accepted + duplicates + rejected = sent); a
refused body kept; and what the request costs in the buffer bounded by its decompressed size.
For any pixel query: no 5xx, always the GIF.
"""

from __future__ import annotations

import gzip
import re
import uuid

import msgspec
import pytest
import redis
from hypothesis import HealthCheck, given, settings, strategies as st

from adtier.ingest.buffer import STREAM, batch_key
from adtier.ingest.pixel import GIF
from tests.helpers import ad_event, content_event, now_ms

# What one request may cost in Valkey: its stream entry and batch record (docs/hardening.md).
GROWTH_FACTOR = 6
GROWTH_CONSTANT = 4096

_FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow, HealthCheck.data_too_large])

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
_FIELDS = ["type", "event_id", "ts", "account_id", "profile_id", "device", "country",
           "campaign_id", "creative_id", "ad_serving_id", "pod_position", "ad_duration_ms",
           "ad_playhead_ms", "error_code", "content_id", "value", "position_ms"]


@st.composite
def _event(draw) -> object:
    kind = draw(st.sampled_from(["ad", "content", "mutated", "any"]))
    if kind == "any":
        return draw(_json_values)
    event = ad_event(draw(st.sampled_from(["impression", "click", "error", "pause"]))) \
        if kind != "content" else content_event(draw(st.sampled_from(["content_start", "rating"])))
    if kind == "mutated":
        event[draw(st.sampled_from(_FIELDS))] = draw(_json_values)
    return event


@st.composite
def _request(draw) -> tuple[bytes, dict[str, str], int]:
    events = draw(st.lists(_event(), max_size=12))
    if events and draw(st.booleans()):
        events.append(events[0])  # a duplicate inside the batch
    fmt = draw(st.sampled_from(["json", "ndjson", "msgpack"]))
    sent_at = draw(st.one_of(st.none(), st.integers(-2**70, 2**70), st.just(now_ms())))
    if fmt == "json":
        body = msgspec.json.encode({"sent_at": sent_at, "events": events})
        ctype = "application/json"
    elif fmt == "msgpack":
        body = msgspec.msgpack.encode({"sent_at": sent_at, "events": events})
        ctype = "application/msgpack"
    else:
        body = b"\n".join(msgspec.json.encode(e) for e in events)
        ctype = "application/x-ndjson"
    headers = {"Content-Type": ctype}
    header = draw(st.one_of(st.none(), st.text(max_size=25), st.integers(-2**70, 2**70).map(str)))
    if header is not None and header.isprintable() and header.isascii():
        headers["Sent-At"] = header
    wire = body
    if draw(st.booleans()):
        wire = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    return wire, headers, len(body)


def _buffered_bytes(rds: redis.Redis, batch_id: str) -> int:
    """The bytes a batch holds in Valkey: its stream entry's fields and its batch record."""
    size = 0
    for _, fields in rds.xrange(STREAM, "-", "+"):
        if fields[b"b"].decode() == batch_id:
            size += sum(len(k) + len(v) for k, v in fields.items())
    size += sum(len(k) + len(v) for k, v in rds.hgetall(batch_key(batch_id)).items())
    assert size, f"batch {batch_id} is not in the buffer"
    return size


def _count_sent(wire: bytes, headers: dict[str, str]) -> int:
    body = gzip.decompress(wire) if "Content-Encoding" in headers else wire
    if headers["Content-Type"] == "application/x-ndjson":
        return sum(1 for line in body.split(b"\n") if line.strip())
    decoded = (msgspec.json.decode(body) if headers["Content-Type"] == "application/json"
               else msgspec.msgpack.decode(body))
    return len(decoded["events"])


def test_post_events_never_5xx_accounts_for_every_event_and_bounds_the_buffer(api, rds):
    @_FUZZ
    @given(_request())
    def check(request: tuple[bytes, dict[str, str], int]) -> None:
        wire, headers, size = request
        answer = api.client.post("/v1/events", content=wire, headers={**api.ingest, **headers})
        assert answer.status_code < 500, answer.text
        body = answer.json()
        if answer.status_code == 200:
            sent = _count_sent(wire, headers)
            assert body["accepted"] + body["duplicates"] + len(body["rejected"]) == sent
            batch_id = body["batch_id"]
        else:
            assert 400 <= answer.status_code < 500 and body["error"] and body["detail"]
            batch_id = re.search(r"kept as rejected batch (\w+)", body["detail"]).group(1)
        assert _buffered_bytes(rds, batch_id) <= GROWTH_FACTOR * size + GROWTH_CONSTANT

    check()


@pytest.mark.parametrize("shape", ["ints", "objects", "control_bytes"])
def test_rejected_bodies_cost_a_bounded_multiple_of_their_size(api, rds, shape):
    """The amplification case: a 36.5 KB gzip body (32 MB of control bytes as oversized NDJSON
    lines) once wrote 192 MB to Valkey, six bytes per byte (each line's raw kept whole, as JSON
    text with every control byte escaped). Scaled down to 2 MiB here (it cost 12.6 MB)."""
    if shape == "control_bytes":
        line = b"{" + b"\x01" * (16 * 1024)
        body = b"\n".join([line] * 128)
        ctype = "application/x-ndjson"
    else:
        item = b"1" if shape == "ints" else b"{}"
        body = b'{"events":[' + b",".join([item] * 10_000) + b"]}"
        ctype = "application/json"
    wire = gzip.compress(body)
    answer = api.client.post("/v1/events", content=wire, headers={
        **api.ingest, "Content-Type": ctype, "Content-Encoding": "gzip"})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["rejected"]) == body.count(b"\n") + 1 if shape == "control_bytes" \
        else len(answer.json()["rejected"]) == 10_000
    assert _buffered_bytes(rds, answer.json()["batch_id"]) <= GROWTH_FACTOR * len(body) + GROWTH_CONSTANT
    if shape == "control_bytes":  # and in absolute terms: the raw bytes kept are capped
        assert _buffered_bytes(rds, answer.json()["batch_id"]) < 200_000


_PIXEL_PARAMS = ["k", "e", "asid", "cmp", "cr", "acc", "pf", "ses", "pod", "pos", "bp", "dur",
                 "ph", "c", "dev", "cc", "ts", "cb", "err"]


def test_pixel_never_5xx_and_always_a_gif(api):
    values = st.one_of(st.text(max_size=30), st.integers(-2**70, 2**70).map(str),
                       st.sampled_from(["[TIMESTAMP]", "00:00:inf", "nan", "1e309", "-0",
                                        "impression", "midpoint", str(uuid.uuid4())]))

    @_FUZZ
    @given(st.dictionaries(st.sampled_from(_PIXEL_PARAMS), values, max_size=12),
           st.sampled_from(["ingest", "admin", "none"]))
    def check(params: dict[str, str], key: str) -> None:
        if key != "none":
            params["k"] = api.ingest_key if key == "ingest" else api.settings.admin_key
        answer = api.client.get("/v1/px", params=params)
        assert answer.status_code == 200 and answer.content == GIF

    check()
