"""VAST tracking pixels: query parameters -> an event dict for the shared validator."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adtier.events import AD_EVENT_TYPES, DECODERS, AdError, AdEvent, rejection_reason
from adtier.ingest.normalise import to_ms
from adtier.ingest.pixel import PIXEL_EVENTS, _playhead_ms, _present, pixel_event

RECEIVED = 1_717_000_000_123
BASE = {"acc": "acc-1", "pf": "pf-1", "asid": "as-1", "cmp": "cmp-1", "cr": "cr-1"}


def px(**params: str) -> dict[str, object]:
    return pixel_event({**BASE, **params}, RECEIVED)


def validate(event: dict[str, object]) -> Any:
    return DECODERS.json_event.decode(msgspec.json.encode(event))


# ---- names and fields ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vast", "ours"),
    [("impression", "impression"), ("viewable", "viewable_impression"), ("start", "start"),
     ("firstQuartile", "first_quartile"), ("midpoint", "midpoint"),
     ("thirdQuartile", "third_quartile"), ("complete", "complete"), ("skip", "skip"),
     ("click", "click"), ("pause", "pause"), ("resume", "resume"), ("mute", "mute"),
     ("unmute", "unmute"), ("error", "error")],
)
def test_vast_names_map_to_event_types(vast: str, ours: str) -> None:
    assert PIXEL_EVENTS[vast] == ours
    event = px(e=vast, err="402")
    assert event["type"] == ours
    decoded = validate(event)
    assert isinstance(decoded, AdEvent)
    assert decoded.__struct_config__.tag == ours


def test_every_ad_event_type_has_a_pixel_name() -> None:
    assert sorted(PIXEL_EVENTS.values()) == sorted(AD_EVENT_TYPES)


def test_all_parameters_map_to_fields_and_validate() -> None:
    event = px(e="error", ses="ses-1", pod="pod-1", pos="2", bp="midroll", dur="30000",
               ph="00:00:12.500", c="title-1", dev="tv", cc="de", err="402",
               ts="2024-05-29T16:26:40.000Z", cb="12345", k="adt_key")
    assert event == {
        "type": "error", "account_id": "acc-1", "profile_id": "pf-1", "session_id": "ses-1",
        "ad_serving_id": "as-1", "campaign_id": "cmp-1", "creative_id": "cr-1",
        "pod_id": "pod-1", "content_id": "title-1", "device": "tv", "country": "DE",
        "break_position": "mid", "pod_position": 2, "ad_duration_ms": 30_000,
        "ad_playhead_ms": 12_500, "error_code": 402, "ts": "2024-05-29T16:26:40.000Z",
        "event_id": event["event_id"],
    }
    decoded = validate(event)
    assert isinstance(decoded, AdError)
    assert (decoded.error_code, decoded.pod_position, decoded.break_position) == (402, 2, "mid")
    assert (decoded.ad_duration_ms, decoded.ad_playhead_ms) == (30_000, 12_500)
    assert decoded.country == "DE"
    assert to_ms(decoded.ts) == 1_717_000_000_000


def test_defaults_device_country_and_ts() -> None:
    event = px(e="impression")
    assert (event["device"], event["country"], event["ts"]) == ("other", "ZZ", RECEIVED)
    assert "session_id" not in event and "pod_position" not in event
    decoded = validate(event)
    assert (decoded.device, decoded.country, decoded.ts) == ("other", "ZZ", RECEIVED)


@pytest.mark.parametrize(("bp", "expected"), [("preroll", "pre"), ("MIDROLL", "mid"),
                                              ("postroll", "post"), ("pre", "pre"),
                                              ("Post", "post"), ("sideroll", "sideroll")])
def test_break_position_aliases(bp: str, expected: str) -> None:
    assert px(e="start", bp=bp)["break_position"] == expected


def test_unknown_break_position_is_left_for_the_validator() -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        validate(px(e="start", bp="sideroll"))
    assert "break_position" in str(info.value)


@pytest.mark.parametrize(("param", "field"), [("pos", "pod_position"), ("err", "error_code"),
                                              ("dur", "ad_duration_ms"), ("ph", "ad_playhead_ms")])
def test_non_numeric_ints_are_kept_for_the_validator_to_reject(param: str, field: str) -> None:
    event = px(**{"e": "error", "err": "402", param: "abc"})
    assert event[field] == "abc"
    with pytest.raises(msgspec.ValidationError) as info:
        validate(event)
    assert rejection_reason(info.value) == "invalid_field"
    assert field in str(info.value)


@pytest.mark.parametrize("e", [None, "[EVENT]", "", "bogus", "Impression"])
def test_missing_or_unknown_event_is_rejected_as_unknown_type(e: str | None) -> None:
    params = dict(BASE) if e is None else {**BASE, "e": e}
    event = pixel_event(params, RECEIVED)
    with pytest.raises(msgspec.ValidationError) as info:
        validate(event)
    assert rejection_reason(info.value) == "unknown_type"


# ---- macros ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "   ", "[TIMESTAMP]", "[ts]", "%5BTIMESTAMP%5D",
                                   " [TIMESTAMP] "])
def test_present_treats_unsubstituted_macros_as_absent(value: str | None) -> None:
    assert _present(value) is None


@pytest.mark.parametrize(("value", "expected"), [("x", "x"), (" 12 ", "12"), ("[x", "[x"),
                                                 ("x]", "x]"), ("a[B]", "a[B]")])
def test_present_keeps_real_values(value: str, expected: str) -> None:
    assert _present(value) == expected


@pytest.mark.parametrize("macro", ["[TIMESTAMP]", "%5BTIMESTAMP%5D"])
def test_unsubstituted_macros_are_absent_from_the_event(macro: str) -> None:
    event = px(e="pause", ses="[SESSION_ID]", pod=macro, pos="[POD_POSITION]",
               ph="[ADPLAYHEAD]", dur="%5BAD_DURATION_MS%5D", c="[CONTENTID]",
               dev="[DEVICE]", cc="[COUNTRY]", bp="[BREAKPOSITION]", ts=macro)
    for field in ("session_id", "pod_id", "pod_position", "ad_playhead_ms", "ad_duration_ms",
                  "content_id", "break_position"):
        assert field not in event
    assert (event["device"], event["country"], event["ts"]) == ("other", "ZZ", RECEIVED)
    assert validate(event).ts == RECEIVED


def test_lowercase_percent_encoded_macro_is_absent() -> None:
    event = px(e="impression", ts="%5btimestamp%5d")
    assert event["ts"] == RECEIVED
    validate(event)


# ---- timestamps ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "expected"),
    [("1717000000000", 1_717_000_000_000), ("0", 0),
     ("2024-05-29T16:26:40.000Z", "2024-05-29T16:26:40.000Z"),
     ("2024-05-29T18:26:40.000+02:00", "2024-05-29T18:26:40.000+02:00"),
     # An unencoded '+' in a query string arrives as a space.
     ("2024-05-29T18:26:40.000 02:00", "2024-05-29T18:26:40.000+02:00")],
)
def test_ts_from_epoch_ms_or_rfc3339(ts: str, expected: object) -> None:
    event = px(e="impression", ts=ts)
    assert event["ts"] == expected
    decoded = validate(event)
    assert to_ms(decoded.ts) == (expected if isinstance(expected, int) else 1_717_000_000_000)


def test_unparseable_ts_is_rejected_not_replaced() -> None:
    event = px(e="impression", ts="yesterday")
    assert event["ts"] == "yesterday"
    with pytest.raises(msgspec.ValidationError) as info:
        validate(event)
    assert "ts" in str(info.value)


# ---- playhead --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ms"),
    [("00:00:05.250", 5_250), ("01:02:03.004", 3_723_004), ("00:00:00", 0),
     ("00:00:15", 15_000), ("00:00:00.001", 1), ("10:00:00.000", 36_000_000), ("1500", 1_500),
     ("0", 0)],
)
def test_playhead_parsing(value: str, ms: int) -> None:
    assert _playhead_ms(value) == ms


@pytest.mark.parametrize("value", ["1:2", "a:b:c", "12.5", "00:00:xx", "1:2:3:4"])
def test_playhead_parsing_errors_are_value_errors(value: str) -> None:
    with pytest.raises(ValueError):
        _playhead_ms(value)


@given(h=st.integers(0, 99), m=st.integers(0, 59), s=st.integers(0, 59), ms=st.integers(0, 999))
def test_playhead_hh_mm_ss_mmm_is_exact(h: int, m: int, s: int, ms: int) -> None:
    assert _playhead_ms(f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}") == ((h * 60 + m) * 60 + s) * 1000 + ms


# ---- event ids -------------------------------------------------------------------------------


def test_same_play_and_event_gives_the_same_id() -> None:
    first = pixel_event({**BASE, "e": "impression", "ts": "1717000000000"}, RECEIVED)
    again = pixel_event({**BASE, "e": "impression", "cb": "999"}, RECEIVED + 5_000)
    assert first["event_id"] == again["event_id"]
    assert uuid.UUID(str(first["event_id"])).version == 5


@pytest.mark.parametrize(
    ("a", "b"),
    [({"e": "impression"}, {"e": "start"}),
     ({"e": "impression"}, {"e": "impression", "asid": "as-2"}),
     ({"e": "firstQuartile"}, {"e": "midpoint"})],
)
def test_different_play_or_event_gives_a_different_id(a: dict, b: dict) -> None:
    assert px(**a)["event_id"] != px(**b)["event_id"]


@pytest.mark.parametrize("vast", ["pause", "resume", "mute", "unmute"])
def test_repeatable_events_take_the_playhead_into_the_id(vast: str) -> None:
    at_1s, at_2s = px(e=vast, ph="00:00:01.000"), px(e=vast, ph="00:00:02.000")
    assert at_1s["event_id"] != at_2s["event_id"]
    # the same playhead written two ways is the same moment, so the same id
    assert at_1s["event_id"] == px(e=vast, ph="1000")["event_id"]


@pytest.mark.parametrize("vast", ["impression", "start", "complete", "click", "skip"])
def test_once_per_play_events_ignore_the_playhead(vast: str) -> None:
    assert px(e=vast, ph="1000")["event_id"] == px(e=vast, ph="2000")["event_id"]


@given(
    vast=st.sampled_from(sorted(PIXEL_EVENTS)),
    asid=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="[]"),
                 min_size=1, max_size=64).map(str.strip)
    .filter(lambda s: s and not s.startswith("%5B")),
    playhead=st.integers(0, 2**31 - 1),
)
def test_any_pixel_with_required_fields_validates(vast: str, asid: str, playhead: int) -> None:
    params = {**BASE, "e": vast, "asid": asid, "ph": str(playhead), "err": "900"}
    event = pixel_event(params, RECEIVED)
    decoded = validate(event)
    assert decoded.__struct_config__.tag == PIXEL_EVENTS[vast]
    assert decoded.ad_serving_id == asid
    assert decoded.ad_playhead_ms == playhead
    assert decoded.event_id == uuid.UUID(str(event["event_id"]))
    assert pixel_event(params, RECEIVED + 1)["event_id"] == event["event_id"]


def test_rfc3339_ts_datetime_is_aware() -> None:
    decoded = validate(px(e="impression", ts="2024-05-29T16:26:40.123Z"))
    assert decoded.ts == datetime(2024, 5, 29, 16, 26, 40, 123_000, tzinfo=timezone.utc)
