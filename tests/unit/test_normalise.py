"""prepare_events: raw events -> JSONEachRow rows (or rejections), with time policy applied."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adtier.events import DECODERS
from adtier.ingest.decode import decode_body
from adtier.ingest.normalise import (
    Prepared,
    Rejection,
    TimePolicy,
    prepare_events,
    rejected_rows,
    to_ms,
)
from adtier.settings import load_settings
from tests.helpers import ad_event, content_event

RECEIVED = 1_717_000_000_123  # 2024-05-29T16:26:40.123Z
DAY = 86_400_000
POLICY = TimePolicy(drift_threshold_ms=120_000, max_future_ms=300_000, retention_ms=30 * DAY)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
PROVENANCE = {"source", "batch_id", "key_id", "received_at", "sent_at", "clock_skew_ms", "client_ts"}


def prepare(raws: list[Any], *, decoder=DECODERS.json_event, received: int = RECEIVED,
            sent: int | None = None, max_event_bytes: int = 16 * 1024,
            policy: TimePolicy = POLICY) -> Prepared:
    return prepare_events(raws, decoder, policy, received, sent, "batch", "b-1", "k-1",
                          max_event_bytes)


def enc(event: Any) -> bytes:
    return msgspec.json.encode(event)


def parse(row: bytes) -> dict[str, Any]:
    assert row.endswith(b"\n") and row.count(b"\n") == 1, row
    return json.loads(row, parse_float=Decimal)


def seconds(ms: int) -> Decimal:
    return Decimal(ms) / 1000


def iso(ms: int, offset_minutes: int = 0) -> str:
    tz = timezone(timedelta(minutes=offset_minutes))
    text = (EPOCH + timedelta(milliseconds=ms)).astimezone(tz).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z") if offset_minutes == 0 else text


# ---- TimePolicy ------------------------------------------------------------------------------


@given(
    threshold=st.integers(min_value=0, max_value=10**9),
    received=st.integers(min_value=0, max_value=2**45),
    sent=st.integers(min_value=0, max_value=2**45),
)
def test_skew_is_zero_within_threshold_and_the_offset_beyond(threshold: int, received: int,
                                                              sent: int) -> None:
    policy = TimePolicy(threshold, 0, 0)
    offset = received - sent
    expected = 0 if abs(offset) <= threshold else offset
    assert policy.skew(received, sent) == expected


@pytest.mark.parametrize(("offset", "skew"), [(120_000, 0), (-120_000, 0), (120_001, 120_001),
                                              (-120_001, -120_001), (0, 0)])
def test_skew_threshold_boundary(offset: int, skew: int) -> None:
    assert POLICY.skew(RECEIVED, RECEIVED - offset) == skew


def test_skew_without_sent_at_is_zero() -> None:
    assert POLICY.skew(RECEIVED, None) == 0


def test_policy_from_settings() -> None:
    s = load_settings({}, clock_drift_threshold_ms=5, max_future_ms=7, retention_days=2)
    assert TimePolicy.from_settings(s) == TimePolicy(5, 7, 2 * DAY)


# ---- to_ms -----------------------------------------------------------------------------------


def test_to_ms_int_passthrough_and_naive_is_utc() -> None:
    assert to_ms(RECEIVED) == RECEIVED
    naive = datetime(2024, 5, 29, 16, 26, 40, 123_000)
    assert to_ms(naive) == to_ms(naive.replace(tzinfo=timezone.utc)) == RECEIVED


@given(ms=st.integers(min_value=1_100_000_000_000, max_value=2_147_000_000_000),
       offset=st.integers(min_value=-14 * 60, max_value=14 * 60))
def test_to_ms_exact_for_datetimes_2004_to_2038(ms: int, offset: int) -> None:
    value = (EPOCH + timedelta(milliseconds=ms)).astimezone(timezone(timedelta(minutes=offset)))
    assert to_ms(value) == ms


# Regression: to_ms used int(value.timestamp() * 1000), which lost a millisecond for many
# instants in 1970 (reset device clocks) and 2038-01-19..2039-09-07.
@pytest.mark.parametrize("ms", [1_001, 1_049_999_055, 2_147_483_648_002])
def test_to_ms_exact_outside_the_float_safe_window(ms: int) -> None:
    assert to_ms(EPOCH + timedelta(milliseconds=ms)) == ms


@given(ms=st.integers(min_value=0, max_value=253_402_300_799_999 - DAY),
       offset=st.integers(min_value=-14 * 60, max_value=14 * 60))
def test_to_ms_exact_for_any_valid_datetime(ms: int, offset: int) -> None:
    value = (EPOCH + timedelta(milliseconds=ms)).astimezone(timezone(timedelta(minutes=offset)))
    assert to_ms(value) == ms


# ---- rows ------------------------------------------------------------------------------------


def _check_row(row: bytes, event: dict[str, Any], ts_ms: int, client_ms: int, *,
               sent: int | None = None, skew: int = 0) -> None:
    parsed = parse(row)
    for key, value in event.items():
        if key != "ts":
            assert parsed[key] == value, key
    assert parsed["ts"] == seconds(ts_ms)
    assert parsed["client_ts"] == seconds(client_ms)
    assert re.search(rb'"client_ts":\d+\.\d{3},', row)
    assert parsed["received_at"] == seconds(RECEIVED)
    assert parsed["sent_at"] == (None if sent is None else seconds(sent))
    assert parsed["clock_skew_ms"] == skew
    assert (parsed["source"], parsed["batch_id"], parsed["key_id"]) == ("batch", "b-1", "k-1")


EVENTS = [
    ad_event("impression", ts=RECEIVED - 1000, pod_position=2, break_position="pre",
             ad_duration_ms=30_000, ad_playhead_ms=0, pod_id="pod-1", content_id="t-1"),
    content_event("content_start", ts=RECEIVED - 2000, position_ms=0),
    ad_event("error", ts=RECEIVED, error_code=303),
    content_event("rating", ts=RECEIVED - 7, value=-1),
    ad_event("first_quartile", ts=RECEIVED - 999, device="mobile", country="DE"),
    content_event("content_heartbeat", ts=RECEIVED - 1, position_ms=10_000, watched_ms=9_000),
]


@pytest.mark.parametrize("wire", ["json", "msgpack"])
def test_rows_round_trip_every_field(wire: str) -> None:
    encode = enc if wire == "json" else msgspec.msgpack.encode
    decoder = DECODERS.json_event if wire == "json" else DECODERS.msgpack_event
    out = prepare([encode(e) for e in EVENTS], decoder=decoder)

    assert out.rejections == []
    assert out.valid == len(EVENTS)
    ads = [e for e in EVENTS if e["type"] not in ("content_start", "rating", "content_heartbeat")]
    contents = [e for e in EVENTS if e not in ads]
    assert len(out.ad_rows) == len(ads) and len(out.content_rows) == len(contents)
    for row, event in zip(out.ad_rows + out.content_rows, ads + contents):
        _check_row(row, event, event["ts"], event["ts"])
    assert out.ad_types == [e["type"] for e in ads]
    assert out.content_types == [e["type"] for e in contents]


def test_ad_and_content_split_and_packed_ids_in_order() -> None:
    out = prepare([enc(e) for e in EVENTS])
    ad_ids = [uuid.UUID(e["event_id"]).bytes for e in EVENTS if "campaign_id" in e]
    content_ids = [uuid.UUID(e["event_id"]).bytes for e in EVENTS if "campaign_id" not in e]
    assert out.ad_ids == ad_ids
    assert out.content_ids == content_ids
    assert out.packed_ids() == b"".join(ad_ids) + b"".join(content_ids)
    assert len(out.packed_ids()) == 16 * len(EVENTS)
    assert all("campaign_id" in parse(r) for r in out.ad_rows)
    assert all("campaign_id" not in parse(r) for r in out.content_rows)


def test_rows_from_a_decoded_envelope_of_raw_values() -> None:
    body = enc({"sent_at": RECEIVED - 50, "events": EVENTS[:2]})
    decoded = decode_body(body, "application/json", 10)
    out = prepare(decoded.events, decoder=decoded.event_decoder, sent=decoded.sent_at_ms)
    assert out.valid == 2
    _check_row(out.ad_rows[0], EVENTS[0], EVENTS[0]["ts"], EVENTS[0]["ts"], sent=RECEIVED - 50)
    _check_row(out.content_rows[0], EVENTS[1], EVENTS[1]["ts"], EVENTS[1]["ts"],
               sent=RECEIVED - 50)


@given(
    back=st.integers(min_value=-POLICY.max_future_ms, max_value=POLICY.retention_ms),
    as_text=st.booleans(),
    offset=st.sampled_from([0, 60, -300, 330, 14 * 60]),
)
def test_ts_is_exact_seconds_for_any_accepted_time(back: int, as_text: bool, offset: int) -> None:
    ms = RECEIVED - back
    event = ad_event(ts=iso(ms, offset) if as_text else ms)
    out = prepare([enc(event)])
    assert out.rejections == []
    parsed = parse(out.ad_rows[0])
    assert parsed["ts"] == seconds(ms)
    assert parsed["client_ts"] == seconds(ms)


def test_rfc3339_ts_after_2038_is_stored_exactly() -> None:
    ms = 2_147_483_648_002
    out = prepare([enc(ad_event(ts=iso(ms)))], received=ms + 1000)
    assert parse(out.ad_rows[0])["client_ts"] == seconds(ms)


def test_clock_skew_beyond_threshold_corrects_ts_but_keeps_client_ts() -> None:
    behind = 600_000  # the client's clock is 10 minutes slow
    sent = RECEIVED - behind
    client = sent - 50
    event = ad_event(ts=client)
    out = prepare([enc(event)], sent=sent)
    _check_row(out.ad_rows[0], event, client + behind, client, sent=sent, skew=behind)


def test_offset_within_threshold_is_not_corrected() -> None:
    sent = RECEIVED - 119_000
    event = content_event(ts=sent - 10)
    out = prepare([enc(event)], sent=sent)
    _check_row(out.content_rows[0], event, sent - 10, sent - 10, sent=sent, skew=0)


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        (POLICY.max_future_ms, None),
        (POLICY.max_future_ms + 1, "ts_in_future"),
        (-POLICY.retention_ms, None),
        (-POLICY.retention_ms - 1, "ts_too_old"),
        (10 * 365 * DAY, "ts_in_future"),
    ],
)
def test_time_window(offset: int, reason: str | None) -> None:
    event = ad_event(ts=RECEIVED + offset)
    raw = enc(event)
    out = prepare([raw])
    if reason is None:
        assert out.valid == 1 and out.rejections == []
    else:
        assert out.valid == 0 and out.ad_rows == []
        [rej] = out.rejections
        assert (rej.index, rej.event_id, rej.reason, rej.raw) == (0, event["event_id"], reason, raw)


def test_skew_brings_a_fast_clock_back_into_the_window() -> None:
    ahead = 3_600_000
    event = ad_event(ts=RECEIVED + ahead - 10)
    assert prepare([enc(event)]).rejections[0].reason == "ts_in_future"
    out = prepare([enc(event)], sent=RECEIVED + ahead)
    assert out.rejections == []
    assert parse(out.ad_rows[0])["ts"] == seconds(RECEIVED - 10)
    assert parse(out.ad_rows[0])["clock_skew_ms"] == -ahead


def test_event_too_large_boundary() -> None:
    raw = enc(ad_event(ts=RECEIVED))
    out = prepare([raw], max_event_bytes=len(raw))
    assert out.valid == 1
    out = prepare([raw], max_event_bytes=len(raw) - 1)
    [rej] = out.rejections
    assert (rej.reason, rej.event_id, rej.raw) == ("event_too_large", "", raw)
    assert f"{len(raw)} bytes > {len(raw) - 1}" == rej.detail
    assert out.valid == 0


def test_rejections_keep_their_index_and_the_rest_is_kept() -> None:
    good1, good2 = ad_event(ts=RECEIVED), content_event(ts=RECEIVED)
    bad = ad_event(country="XX")
    raws = [enc(good1), enc(bad), enc(good2), b"{oops", b"x" * 20_000]
    out = prepare(raws)
    assert out.valid == 2
    assert [(r.index, r.reason) for r in out.rejections] == [
        (1, "invalid_field"), (3, "malformed"), (4, "event_too_large")]
    assert out.rejections[0].event_id == bad["event_id"]
    assert "country" in out.rejections[0].detail
    assert [r.raw for r in out.rejections] == [raws[1], raws[3], raws[4]]


@pytest.mark.parametrize("wire", ["json", "msgpack"])
def test_rejected_event_id_is_read_from_the_raw_event(wire: str) -> None:
    event = ad_event("bogus", event_id="client-id-1")
    encode = enc if wire == "json" else msgspec.msgpack.encode
    decoder = DECODERS.json_event if wire == "json" else DECODERS.msgpack_event
    [rej] = prepare([encode(event)], decoder=decoder).rejections
    assert (rej.reason, rej.event_id) == ("unknown_type", "client-id-1")


@pytest.mark.parametrize("raw", [enc(ad_event(event_id=12)), enc([1, 2]), b"{oops"])
def test_rejected_event_id_is_empty_when_unreadable(raw: bytes) -> None:
    [rej] = prepare([raw]).rejections
    assert rej.event_id == ""


def test_rejected_event_id_is_cut_to_64_chars() -> None:
    [rej] = prepare([enc(ad_event(event_id="e" * 100))]).rejections
    assert rej.event_id == "e" * 64


def test_rejected_event_id_with_leading_space() -> None:
    [rej] = prepare([b" " + enc(ad_event("bogus", event_id="abc"))]).rejections
    assert rej.event_id == "abc"


# Regression: _guess_id only read raw starting with '{' or ' ' as JSON, so an NDJSON line
# starting with a tab lost its event_id.
@pytest.mark.parametrize("prefix", [b"\t", b"\r", b"\n ", b"  \t"])
def test_rejected_event_id_with_leading_whitespace(prefix: bytes) -> None:
    [rej] = prepare([prefix + enc(ad_event("bogus", event_id="abc"))]).rejections
    assert rej.event_id == "abc"


# ---- rejected_rows ---------------------------------------------------------------------------


def test_rejected_rows_are_json_lines_with_raw_text() -> None:
    json_bad = enc(ad_event("bogus", event_id="j-1"))
    msgpack_bad = msgspec.msgpack.encode(ad_event(country="XX", event_id="m-1"))
    out_json = prepare([json_bad, b"{oops"])
    out_msgpack = prepare([b"\xc1\xc1", msgpack_bad], decoder=DECODERS.msgpack_event)
    rejections = out_json.rejections + out_msgpack.rejections

    text = rejected_rows(rejections, RECEIVED, "batch", "b-1", "k-1")
    lines = text.splitlines(keepends=True)
    assert len(lines) == 4 and all(line.endswith(b"\n") for line in lines)
    rows = [json.loads(line) for line in lines]

    assert [r["idx"] for r in rows] == [0, 1, 0, 1]
    assert [r["reason"] for r in rows] == ["unknown_type", "malformed", "malformed", "invalid_field"]
    assert [r["event_id"] for r in rows] == ["j-1", "", "", "m-1"]
    assert rows[0]["raw"] == json_bad.decode()
    assert rows[1]["raw"] == "{oops"
    assert rows[2]["raw"] == "b64:wcE="  # base64: a third over the bytes, not hex's double
    assert json.loads(rows[3]["raw"]) == msgspec.msgpack.decode(msgpack_bad)
    for row, rej in zip(rows, rejections):
        assert row["detail"] == rej.detail
        assert row["received_at"] == RECEIVED / 1000
        assert (row["source"], row["batch_id"], row["key_id"]) == ("batch", "b-1", "k-1")


def test_rejected_rows_truncate_detail_and_clamp_index() -> None:
    rej = Rejection(-1, "", "unknown_type", "d" * 5000, b'{"e": "\xff"}')
    [row] = [json.loads(line) for line in rejected_rows([rej], RECEIVED, "pixel", "b", "k")
             .splitlines()]
    assert row["idx"] == 0
    assert row["detail"] == "d" * 1000
    assert row["raw"] == "b64:" + base64.b64encode(b'{"e": "\xff"}').decode()  # not valid UTF-8
    assert row["source"] == "pixel"


def test_rejected_rows_empty() -> None:
    assert rejected_rows([], RECEIVED, "batch", "b", "k") == b""


def test_ad_rows_end_with_a_profile_ord_placeholder_the_flusher_fills() -> None:
    """Every ad row carries ``profile_ord`` 0 in a fixed width at its end (valid JSON as it
    is); viewing rows have no such field."""
    from adtier.ingest.normalise import ORD_PLACEHOLDER

    out = prepare([enc(e) for e in EVENTS])
    assert out.ad_rows and out.content_rows
    for row in out.ad_rows:
        assert row.endswith(ORD_PLACEHOLDER + b"}\n")
        assert parse(row)["profile_ord"] == 0
    assert all(b"profile_ord" not in row for row in out.content_rows)


def test_no_events_need_no_decoder() -> None:
    """A refused request is kept through the same step with no events and no decoder."""
    out = prepare([], decoder=None)
    assert out.valid == 0 and out.rejections == [] and out.ad_rows == out.content_rows == []


# ---- the answer's words for the model's own checks -------------------------------------------
# The country and playhead checks moved out of a Python __post_init__ (the country into a
# msgspec Literal, checked in C): a client still reads the same detail for the same event.


@pytest.mark.parametrize("wire", ["json", "msgpack"])
@pytest.mark.parametrize("country", ["XX", "us", "Ä1", "X'"])
def test_unknown_country_is_answered_in_the_same_words(wire: str, country: str) -> None:
    event = ad_event(country=country)
    encode = enc if wire == "json" else msgspec.msgpack.encode
    decoder = DECODERS.json_event if wire == "json" else DECODERS.msgpack_event
    [rej] = prepare([encode(event)], decoder=decoder).rejections
    assert (rej.reason, rej.event_id) == ("invalid_field", event["event_id"])
    assert rej.detail == f"`country` {country!r} is not an ISO 3166-1 alpha-2 code"


def test_playhead_beyond_duration_is_answered_in_the_same_words() -> None:
    event = ad_event("midpoint", ad_duration_ms=1000, ad_playhead_ms=1001)
    [rej] = prepare([enc(event)]).rejections
    assert (rej.reason, rej.event_id) == ("invalid_field", event["event_id"])
    assert rej.detail == "`ad_playhead_ms` 1001 is beyond `ad_duration_ms` 1000"


def test_a_country_of_other_length_is_still_refused() -> None:
    for country in ("USA", "U", ""):
        [rej] = prepare([enc(ad_event(country=country))]).rejections
        assert rej.reason == "invalid_field" and "country" in rej.detail


def test_a_long_country_is_quoted_short_in_the_answer() -> None:
    country = "X" * 2_000
    [rej] = prepare([enc(ad_event(country=country))]).rejections
    assert rej.reason == "invalid_field"
    assert rej.detail == f"`country` {'X' * 16!r}… is not an ISO 3166-1 alpha-2 code"
