"""The event model: every type decodes from JSON and msgpack; bad events get a stable reason."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Callable

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adtier.events import (
    AD_EVENT_TYPES,
    CONTENT_EVENT_TYPES,
    DECODERS,
    AdError,
    AdEvent,
    ContentEvent,
    Rating,
    rejection_reason,
)
from adtier.ingest.normalise import to_ms
from tests.helpers import ad_event, content_event

MAX_MILLIS = 2**31 - 1


def _json(event: dict[str, Any]) -> Any:
    return DECODERS.json_event.decode(msgspec.json.encode(event))


def _msgpack(event: dict[str, Any]) -> Any:
    return DECODERS.msgpack_event.decode(msgspec.msgpack.encode(event))


DECODE = [pytest.param(_json, id="json"), pytest.param(_msgpack, id="msgpack")]


def _reason(decode: Callable[[dict[str, Any]], Any], event: dict[str, Any]) -> str:
    with pytest.raises((msgspec.ValidationError, msgspec.DecodeError)) as info:
        decode(event)
    return rejection_reason(info.value)


def _any_event(type_: str, **fields: Any) -> dict[str, Any]:
    return ad_event(type_, **fields) if type_ in AD_EVENT_TYPES else content_event(type_, **fields)


# ---- every type decodes ----------------------------------------------------------------------


@pytest.mark.parametrize("decode", DECODE)
@pytest.mark.parametrize("type_", AD_EVENT_TYPES)
def test_every_ad_type_decodes(decode, type_: str) -> None:
    event = ad_event(type_, pod_position=2, break_position="mid", ad_duration_ms=15_000,
                     ad_playhead_ms=7_500, pod_id="pod-9", content_id="title-3")
    decoded = decode(event)

    assert isinstance(decoded, AdEvent)
    assert decoded.__struct_config__.tag == type_
    assert decoded.event_id == uuid.UUID(event["event_id"])
    assert decoded.ts == event["ts"]
    assert (decoded.account_id, decoded.profile_id, decoded.session_id) == ("acc-1", "pf-1", "ses-1")
    assert (decoded.campaign_id, decoded.creative_id, decoded.ad_serving_id) == ("cmp-1", "cr-1", "as-1")
    assert (decoded.pod_id, decoded.pod_position, decoded.break_position) == ("pod-9", 2, "mid")
    assert (decoded.ad_duration_ms, decoded.ad_playhead_ms) == (15_000, 7_500)
    assert decoded.content_id == "title-3"
    assert isinstance(decoded, AdError) == (type_ == "error")
    if type_ == "error":
        assert decoded.error_code == 402


@pytest.mark.parametrize("decode", DECODE)
@pytest.mark.parametrize("type_", CONTENT_EVENT_TYPES)
def test_every_content_type_decodes(decode, type_: str) -> None:
    extra = {} if type_ == "rating" else {"position_ms": 60_000, "watched_ms": 30_000}
    event = content_event(type_, **extra)
    decoded = decode(event)

    assert not isinstance(decoded, AdEvent)
    assert decoded.__struct_config__.tag == type_
    assert decoded.event_id == uuid.UUID(event["event_id"])
    assert decoded.content_id == "title-1"
    if type_ == "rating":
        assert isinstance(decoded, Rating)
        assert decoded.value == 1
    else:
        assert isinstance(decoded, ContentEvent)
        assert (decoded.position_ms, decoded.watched_ms) == (60_000, 30_000)


@pytest.mark.parametrize("decode", DECODE)
def test_optional_fields_default(decode) -> None:
    event = ad_event()
    del event["session_id"]
    decoded = decode(event)
    assert decoded.session_id == ""
    assert decoded.pod_id == "" and decoded.content_id == ""
    assert decoded.pod_position is None and decoded.break_position is None
    assert decoded.ad_duration_ms is None and decoded.ad_playhead_ms is None


def test_json_and_msgpack_decode_to_the_same_event() -> None:
    event = ad_event("error", error_code=901, pod_position=1, ad_duration_ms=10, ad_playhead_ms=10)
    assert _json(event) == _msgpack(event)


# ---- timestamps --------------------------------------------------------------------------------


@pytest.mark.parametrize("decode", DECODE)
@pytest.mark.parametrize(
    "ts",
    [
        "2024-01-01T00:00:00.123Z",
        "2024-01-01T00:00:00.123+00:00",
        "2024-01-01T02:00:00.123+02:00",
        "2023-12-31T19:30:00.123-04:30",
    ],
)
def test_rfc3339_timestamps_decode_to_the_same_instant(decode, ts: str) -> None:
    decoded = decode(ad_event(ts=ts))
    assert isinstance(decoded.ts, datetime)
    assert decoded.ts.tzinfo is not None
    assert decoded.ts == datetime(2024, 1, 1, 0, 0, 0, 123_000, tzinfo=timezone.utc)
    assert to_ms(decoded.ts) == 1_704_067_200_123


@pytest.mark.parametrize("decode", DECODE)
@pytest.mark.parametrize("ts", [0, 1_704_067_200_123, 253_402_300_799_999])
def test_epoch_millis_timestamps_stay_integers(decode, ts: int) -> None:
    decoded = decode(ad_event(ts=ts))
    assert decoded.ts == ts and isinstance(decoded.ts, int)


# ---- rejections --------------------------------------------------------------------------------


def _without(field: str, type_: str = "impression") -> dict[str, Any]:
    event = _any_event(type_)
    del event[field]
    return event


REJECTIONS = [
    pytest.param(ad_event("bogus"), "unknown_type", id="unknown-type"),
    pytest.param(ad_event(type=5), "unknown_type", id="type-not-a-string"),
    pytest.param(ad_event("Impression"), "unknown_type", id="type-wrong-case"),
    pytest.param(_without("account_id"), "missing_field", id="missing-account"),
    pytest.param(_without("event_id"), "missing_field", id="missing-event-id"),
    pytest.param(_without("ts"), "missing_field", id="missing-ts"),
    pytest.param(_without("campaign_id"), "missing_field", id="missing-campaign"),
    pytest.param(_without("content_id", "content_start"), "missing_field", id="missing-content-id"),
    pytest.param(_without("type"), "missing_field", id="missing-type"),
    pytest.param(ad_event("error", error_code=None), "invalid_field", id="error-code-null"),
    pytest.param({k: v for k, v in ad_event("error").items() if k != "error_code"},
                 "missing_field", id="error-without-code"),
    pytest.param(ad_event(event_id="not-a-uuid"), "invalid_field", id="bad-uuid"),
    pytest.param(ad_event(device="smartwatch"), "invalid_field", id="bad-device"),
    pytest.param(ad_event(device="TV"), "invalid_field", id="device-uppercase"),
    pytest.param(ad_event(country="XX"), "invalid_field", id="country-not-iso"),
    pytest.param(ad_event(country="us"), "invalid_field", id="country-lowercase"),
    pytest.param(ad_event(country="USA"), "invalid_field", id="country-alpha3"),
    pytest.param(ad_event(country="U"), "invalid_field", id="country-one-letter"),
    pytest.param(ad_event(account_id="a" * 65), "invalid_field", id="account-over-64"),
    pytest.param(ad_event(profile_id=""), "invalid_field", id="profile-empty"),
    pytest.param(ad_event(session_id="s" * 65), "invalid_field", id="session-over-64"),
    pytest.param(ad_event(ad_serving_id="x" * 65), "invalid_field", id="asid-over-64"),
    pytest.param(ad_event(pod_id="p" * 65), "invalid_field", id="pod-id-over-64"),
    pytest.param(ad_event(ad_duration_ms=-1), "invalid_field", id="negative-duration"),
    pytest.param(ad_event(ad_playhead_ms=-1), "invalid_field", id="negative-playhead"),
    pytest.param(ad_event(ad_duration_ms=MAX_MILLIS + 1), "invalid_field", id="duration-too-big"),
    pytest.param(ad_event(ad_duration_ms=1000, ad_playhead_ms=1001), "invalid_field",
                 id="playhead-beyond-duration"),
    pytest.param(ad_event(pod_position=0), "invalid_field", id="pod-position-0"),
    pytest.param(ad_event(pod_position=65), "invalid_field", id="pod-position-65"),
    pytest.param(ad_event(break_position="middle"), "invalid_field", id="bad-break-position"),
    pytest.param(ad_event("error", error_code=99), "invalid_field", id="error-code-99"),
    pytest.param(ad_event("error", error_code=903), "invalid_field", id="error-code-903"),
    pytest.param(content_event("rating", value=0), "invalid_field", id="rating-0"),
    pytest.param(content_event("rating", value=3), "invalid_field", id="rating-3"),
    pytest.param(content_event(position_ms=-5), "invalid_field", id="negative-position"),
    pytest.param(content_event(content_id="c" * 65), "invalid_field", id="content-id-over-64"),
    pytest.param(ad_event(ts=-1), "invalid_field", id="ts-negative"),
    pytest.param(ad_event(ts=253_402_300_800_000), "invalid_field", id="ts-after-year-9999"),
    pytest.param(ad_event(ts="yesterday"), "invalid_field", id="ts-not-a-date"),
    pytest.param(ad_event(ts=1.5), "invalid_field", id="ts-float"),
    pytest.param([1, 2], "not_an_object", id="array"),
    pytest.param("impression", "not_an_object", id="string"),
]


@pytest.mark.parametrize("decode", DECODE)
@pytest.mark.parametrize(("event", "reason"), REJECTIONS)
def test_rejection_reasons(decode, event: Any, reason: str) -> None:
    assert _reason(decode, event) == reason


@pytest.mark.parametrize(
    "body",
    [b"{", b"not json", b'{"type": "impression",}', b""],
)
def test_malformed_json_is_malformed(body: bytes) -> None:
    with pytest.raises(msgspec.DecodeError) as info:
        DECODERS.json_event.decode(body)
    assert rejection_reason(info.value) == "malformed"


@pytest.mark.parametrize("body", [b"\xc1", b"", b"\x81\xa4type"])
def test_malformed_msgpack_is_malformed(body: bytes) -> None:
    with pytest.raises(msgspec.DecodeError) as info:
        DECODERS.msgpack_event.decode(body)
    assert rejection_reason(info.value) == "malformed"


@pytest.mark.parametrize("decode", DECODE)
@pytest.mark.parametrize(
    "event",
    [
        pytest.param(ad_event(account_id="a" * 64), id="account-64"),
        pytest.param(ad_event(pod_position=1), id="pod-position-1"),
        pytest.param(ad_event(pod_position=64), id="pod-position-64"),
        pytest.param(ad_event("error", error_code=100), id="error-100"),
        pytest.param(ad_event("error", error_code=902), id="error-902"),
        pytest.param(ad_event(ad_duration_ms=0, ad_playhead_ms=0), id="zero-duration"),
        pytest.param(ad_event(ad_duration_ms=MAX_MILLIS, ad_playhead_ms=MAX_MILLIS), id="max-millis"),
        pytest.param(ad_event(country="ZZ"), id="country-unknown-ZZ"),
        pytest.param(ad_event(break_position="post"), id="break-post"),
        pytest.param(content_event("rating", value=-1), id="rating-minus-1"),
        pytest.param(content_event("rating", value=2), id="rating-2"),
    ],
)
def test_boundary_values_are_accepted(decode, event: dict[str, Any]) -> None:
    assert decode(event).event_id == uuid.UUID(event["event_id"])


@pytest.mark.parametrize("decode", DECODE)
@pytest.mark.parametrize("device", ["vintage type", "missing required field"])
def test_reason_does_not_depend_on_the_rejected_value(decode, device: str) -> None:
    assert _reason(decode, ad_event(device=device)) == "invalid_field"


# ---- properties --------------------------------------------------------------------------------


millis = st.integers(min_value=0, max_value=MAX_MILLIS)


@given(duration=millis, playhead=millis)
def test_accepted_iff_playhead_within_duration(duration: int, playhead: int) -> None:
    event = msgspec.json.encode(ad_event(ad_duration_ms=duration, ad_playhead_ms=playhead))
    try:
        decoded = DECODERS.json_event.decode(event)
    except msgspec.ValidationError as err:
        assert playhead > duration
        assert rejection_reason(err) == "invalid_field"
        assert "ad_playhead_ms" in str(err)
    else:
        assert playhead <= duration
        assert (decoded.ad_duration_ms, decoded.ad_playhead_ms) == (duration, playhead)


@given(value=st.one_of(millis, st.none()), duration_given=st.booleans())
def test_one_sided_playhead_or_duration_is_accepted(value: int | None, duration_given: bool) -> None:
    field = "ad_duration_ms" if duration_given else "ad_playhead_ms"
    decoded = DECODERS.json_event.decode(msgspec.json.encode(ad_event(**{field: value})))
    assert getattr(decoded, field) == value


@given(country=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2))
def test_country_accepted_iff_iso_code(country: str) -> None:
    from adtier.countries import COUNTRY_CODES

    event = msgspec.json.encode(ad_event(country=country))
    try:
        DECODERS.json_event.decode(event)
    except msgspec.ValidationError as err:
        assert country not in COUNTRY_CODES
        assert rejection_reason(err) == "invalid_field"
    else:
        assert country in COUNTRY_CODES
