"""VAST tracking pixels: query parameters -> an event dict for the shared validator, or a
rejection with its reason (never nothing)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adtier.events import AD_EVENT_TYPES, DECODERS, AdError, AdEvent, rejection_reason
from adtier.ingest.normalise import to_ms
from adtier.ingest.pixel import (
    _NAMESPACE,
    PIXEL_EVENTS,
    PixelRejected,
    _present,
    pixel_event,
    query_pairs,
    uuid5_text,
)
from adtier.ingest.vast_macros import unfilled

RECEIVED = 1_717_000_000_123
BASE = {"acc": "acc-1", "pf": "pf-1", "asid": "as-1", "cmp": "cmp-1", "cr": "cr-1"}


def px(**params: str) -> dict[str, object]:
    return pixel_event({**BASE, **params}, RECEIVED)


def rejected(**params: str) -> PixelRejected:
    with pytest.raises(PixelRejected) as info:
        px(**params)
    return info.value


def validate(event: dict[str, object]) -> Any:
    return DECODERS.json_event.decode(msgspec.json.encode(event))


# ---- names and fields ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vast", "ours"),
    [("impression", "impression"), ("viewable", "viewable_impression"), ("start", "start"),
     ("firstQuartile", "first_quartile"), ("midpoint", "midpoint"),
     ("thirdQuartile", "third_quartile"), ("complete", "complete"), ("skip", "skip"),
     ("click", "click"), ("pause", "pause"), ("resume", "resume"), ("mute", "mute"),
     ("unmute", "unmute"), ("error", "error"), ("notViewable", "not_viewable"),
     ("viewUndetermined", "view_undetermined"), ("loaded", "loaded"),
     ("creativeView", "creative_view"), ("closeLinear", "close_linear"),
     ("playerExpand", "player_expand"), ("interactiveStart", "interactive_start"),
     ("otherAdInteraction", "other_ad_interaction"), ("notUsed", "not_used")],
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
    event = px(e="error", ses="ses-1", pod="pod-1", pos="2", bp="2", dur="30000",
               ph="00:00:12.500", c="title-1", dev="tv", cc="de", err="402",
               ts="2024-05-29T16:26:40.000Z", cb="12345678", k="adt_key", ss="1",
               mph="00:05:21.123", uaid="ad-id.org CNPA0484000H")
    assert event == {
        "type": "error", "account_id": "acc-1", "profile_id": "pf-1", "session_id": "ses-1",
        "ad_serving_id": "as-1", "campaign_id": "cmp-1", "creative_id": "cr-1",
        "pod_id": "pod-1", "content_id": "title-1", "device": "tv", "country": "DE",
        "universal_ad_id": "ad-id.org CNPA0484000H", "break_position": "mid",
        "pod_position": 2, "ad_duration_ms": 30_000, "ad_playhead_ms": 12_500,
        "content_playhead_ms": 321_123, "error_code": 402, "server_side": 1,
        "ts": 1_717_000_000_000, "event_id": event["event_id"],
    }
    decoded = validate(event)
    assert isinstance(decoded, AdError)
    assert (decoded.error_code, decoded.pod_position, decoded.break_position) == (402, 2, "mid")
    assert (decoded.ad_duration_ms, decoded.ad_playhead_ms) == (30_000, 12_500)
    assert (decoded.country, decoded.server_side) == ("DE", 1)
    assert to_ms(decoded.ts) == 1_717_000_000_000


def test_defaults_device_country_ts_and_firer() -> None:
    event = px(e="impression")
    assert (event["device"], event["country"], event["ts"]) == ("other", "ZZ", RECEIVED)
    assert event["server_side"] == 0  # the IAB default when [SERVERSIDE] is missing
    assert "session_id" not in event and "pod_position" not in event
    decoded = validate(event)
    assert (decoded.device, decoded.country, decoded.ts) == ("other", "ZZ", RECEIVED)


@pytest.mark.parametrize(("bp", "expected"), [("preroll", "pre"), ("MIDROLL", "mid"),
                                              ("postroll", "post"), ("pre", "pre"),
                                              ("Post", "post"), ("1", "pre"), ("2", "mid"),
                                              ("3", "post")])
def test_break_position_iab_integers_and_our_names(bp: str, expected: str) -> None:
    assert px(e="start", bp=bp)["break_position"] == expected


@pytest.mark.parametrize("bp", ["0", "4"])
def test_break_position_other_and_standalone_are_no_break(bp: str) -> None:
    event = px(e="start", bp=bp)
    assert "break_position" not in event
    assert validate(event).break_position is None


@pytest.mark.parametrize(("param", "value", "field"),
                         [("pos", "abc", "pod_position"), ("pos", "0", "pod_position"),
                          ("err", "42", "error_code"), ("err", "abc", "error_code"),
                          ("dur", "abc", "ad_duration_ms"), ("ph", "abc", "ad_playhead_ms"),
                          ("ph", "00:00:inf", "ad_playhead_ms"), ("ph", "1e3", "ad_playhead_ms"),
                          ("ph", "00:61:00", "ad_playhead_ms"), ("bp", "sideroll", "break_position"),
                          ("bp", "5", "break_position"), ("ss", "3", "server_side"),
                          ("ts", "yesterday", "ts"), ("ts", "2024-13-01T00:00:00Z", "ts"),
                          ("mph", "nan", "content_playhead_ms")])
def test_values_outside_the_iab_format_are_rejected_with_the_field(param: str, value: str,
                                                                   field: str) -> None:
    err = rejected(**{"e": "error", "err": "402", param: value})
    assert err.reason == "invalid_field"
    assert field in err.detail and repr(value) in err.detail


def test_a_progress_pixel_carries_its_offset() -> None:
    event = px(e="progress", off="00:00:05")
    assert validate(event).progress_offset == "00:00:05"
    assert px(e="progress", off="25%")["progress_offset"] == "25%"
    assert rejected(e="progress", off="5 seconds").reason == "invalid_field"
    # the schema requires the offset for progress: without one the validator names it
    with pytest.raises(msgspec.ValidationError) as info:
        validate(px(e="progress"))
    assert rejection_reason(info.value) == "missing_field"
    assert "progress_offset" in str(info.value)


@pytest.mark.parametrize(("e", "reason"), [(None, "missing_field"), ("[EVENT]", "missing_field"),
                                           ("", "missing_field"), ("bogus", "unknown_type"),
                                           ("Impression", "unknown_type"),
                                           ("fullscreen", "unknown_type"),  # VAST 3, not 4.2
                                           ("acceptInvitationLinear", "unknown_type")])
def test_missing_or_unknown_event_is_rejected_with_a_reason(e: str | None, reason: str) -> None:
    params = dict(BASE) if e is None else {**BASE, "e": e}
    with pytest.raises(PixelRejected) as info:
        pixel_event(params, RECEIVED)
    assert info.value.reason == reason


# ---- macros ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "   ", "[TIMESTAMP]", "[ts]", "%5BTIMESTAMP%5D",
                                   " [TIMESTAMP] ", "%255BTIMESTAMP%255D", "${ADSERVINGID}",
                                   "%24%7BADSERVINGID%7D", "[AD_DURATION_MS]"])
def test_present_treats_unsubstituted_macros_as_absent(value: str | None) -> None:
    assert _present(value) is None


# `__NAME__` and `{NAME}` are no IAB macro syntax: such ids are values
@pytest.mark.parametrize(("value", "expected"), [("x", "x"), (" 12 ", "12"), ("[x", "[x"),
                                                 ("x]", "x]"), ("a[B]", "a[B]"),
                                                 ("__0__", "__0__"), ("__ASID__", "__ASID__"),
                                                 ("{x}", "{x}"), ("[a b]", "[a b]")])
def test_present_keeps_real_values(value: str, expected: str) -> None:
    assert _present(value) == expected


@pytest.mark.parametrize("macro", ["[TIMESTAMP]", "%5BTIMESTAMP%5D"])
def test_unsubstituted_macros_are_absent_from_the_event(macro: str) -> None:
    event = px(e="pause", ses="[SESSION_ID]", pod=macro, pos="[POD_POSITION]",
               ph="[ADPLAYHEAD]", dur="%5BAD_DURATION_MS%5D", c="[CONTENTID]",
               dev="[DEVICE]", cc="[COUNTRY]", bp="[BREAKPOSITION]", ts=macro,
               ss="[SERVERSIDE]", mph="[MEDIAPLAYHEAD]", uaid="[UNIVERSALADID]",
               cb="[CACHEBUSTING]")
    for field in ("session_id", "pod_id", "pod_position", "ad_playhead_ms", "ad_duration_ms",
                  "content_id", "break_position", "content_playhead_ms", "universal_ad_id"):
        assert field not in event
    assert (event["device"], event["country"], event["ts"]) == ("other", "ZZ", RECEIVED)
    assert event["server_side"] == 0
    assert validate(event).ts == RECEIVED


def test_lowercase_percent_encoded_macro_is_absent() -> None:
    event = px(e="impression", ts="%5btimestamp%5d")
    assert event["ts"] == RECEIVED
    validate(event)


# ---- SSAI ------------------------------------------------------------------------------------


def test_a_stitcher_is_known_by_the_vast_device_headers_when_the_macro_is_missing() -> None:
    params = {**BASE, "e": "impression"}
    stitcher = pixel_event(params, RECEIVED, {b"x-device-user-agent": b"Roku/DVP-9.10",
                                              b"x-forwarded-for": b"203.0.113.7"})
    proxy_only = pixel_event(params, RECEIVED, {b"x-forwarded-for": b"203.0.113.7"})
    said = pixel_event({**params, "ss": "2"}, RECEIVED, {b"x-device-ip": b"203.0.113.7"})
    assert (stitcher["server_side"], proxy_only["server_side"], said["server_side"]) == (1, 0, 2)
    # who fired it is not part of the event: one ad play and event, one id
    assert stitcher["event_id"] == proxy_only["event_id"] == said["event_id"]


# ---- timestamps ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "expected"),
    [("1717000000000", 1_717_000_000_000), ("0", 0),
     ("2024-05-29T16:26:40.000Z", 1_717_000_000_000),
     ("2024-05-29T18:26:40.000+02:00", 1_717_000_000_000),
     # An unencoded '+' in a query string arrives as a space.
     ("2024-05-29T18:26:40.000 02:00", 1_717_000_000_000),
     ("2024-05-29T11:26:40-05", 1_717_000_000_000),
     ("2024-05-29T21:56:40.000+05:30", 1_717_000_000_000)],
)
def test_ts_from_epoch_ms_or_iso8601(ts: str, expected: int) -> None:
    event = px(e="impression", ts=ts)
    assert event["ts"] == expected
    assert to_ms(validate(event).ts) == expected


# ---- event ids -------------------------------------------------------------------------------


def test_same_play_and_event_gives_the_same_id() -> None:
    first = pixel_event({**BASE, "e": "impression", "ts": "1717000000000"}, RECEIVED)
    again = pixel_event({**BASE, "e": "impression", "cb": "99999999"}, RECEIVED + 5_000)
    assert first["event_id"] == again["event_id"]
    assert uuid.UUID(str(first["event_id"])).version == 5


@pytest.mark.parametrize(
    ("a", "b"),
    [({"e": "impression"}, {"e": "start"}),
     ({"e": "impression"}, {"e": "impression", "asid": "as-2"}),
     ({"e": "firstQuartile"}, {"e": "midpoint"}),
     ({"e": "viewable"}, {"e": "notViewable"}),
     ({"e": "progress", "off": "00:00:05"}, {"e": "progress", "off": "00:00:10"})],
)
def test_different_play_or_event_gives_a_different_id(a: dict, b: dict) -> None:
    assert px(**a)["event_id"] != px(**b)["event_id"]


@pytest.mark.parametrize("vast", ["pause", "resume", "mute", "unmute", "rewind", "playerExpand",
                                  "playerCollapse", "adExpand", "adCollapse", "minimize",
                                  "otherAdInteraction", "overlayViewDuration"])
def test_repeatable_events_take_the_playhead_into_the_id(vast: str) -> None:
    at_1s, at_2s = px(e=vast, ph="00:00:01.000"), px(e=vast, ph="00:00:02.000")
    assert at_1s["event_id"] != at_2s["event_id"]
    # the same playhead written two ways is the same moment, so the same id
    assert at_1s["event_id"] == px(e=vast, ph="1000")["event_id"]


@pytest.mark.parametrize("vast", ["impression", "start", "complete", "click", "skip", "loaded",
                                  "creativeView", "closeLinear", "notViewable", "notUsed"])
def test_once_per_play_events_ignore_the_playhead(vast: str) -> None:
    assert px(e=vast, ph="1000")["event_id"] == px(e=vast, ph="2000")["event_id"]


# Ad-serving ids as players send them; an unfilled macro ([NAME] / ${NAME}, raw or encoded) is
# the one kind of text that is not an id, so the generator leaves those out.
_ASIDS = (st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=64)
          .map(str.strip).filter(lambda s: s and not unfilled(s)))


@settings(max_examples=200, derandomize=True)
@given(vast=st.sampled_from(sorted(PIXEL_EVENTS)), asid=_ASIDS,
       playhead=st.integers(0, 2**31 - 1))
def test_any_pixel_with_required_fields_validates(vast: str, asid: str, playhead: int) -> None:
    params = {**BASE, "e": vast, "asid": asid, "ph": str(playhead), "err": "900",
              "off": "50%"}
    event = pixel_event(params, RECEIVED)
    decoded = validate(event)
    assert decoded.__struct_config__.tag == PIXEL_EVENTS[vast]
    assert decoded.ad_serving_id == asid
    assert decoded.ad_playhead_ms == playhead
    assert decoded.event_id == uuid.UUID(str(event["event_id"]))
    assert pixel_event(params, RECEIVED + 1)["event_id"] == event["event_id"]


def test_double_underscore_ids_are_stored_as_sent() -> None:
    """`__0__` is an id (the IAB's macros are bracketed), not an unfilled macro."""
    decoded = validate(px(e="impression", asid="__0__", pf="__pf__"))
    assert (decoded.ad_serving_id, decoded.profile_id) == ("__0__", "__pf__")


# Every query string, however odd, ends as an event the validator takes or rejects with a
# reason, or a PixelRejected with a reason: never an exception of another kind.
_VALUES = st.one_of(st.text(max_size=24), st.sampled_from(
    ["[ADPLAYHEAD]", "00:00:inf", "00:00:11.355", "2", "9" * 30, "-1", "%5BX%5D", "NaN",
     "2016-01-17T8:15:07.127-05", "1e309", "00:00:99", "\x00", "+05:30", "progress"]))
_PARAMS = st.sampled_from(["e", "asid", "cmp", "cr", "acc", "pf", "ses", "pod", "pos", "bp",
                           "dur", "ph", "mph", "cph", "c", "uaid", "dev", "cc", "ss", "ts",
                           "cb", "err", "rsn", "off", "zz"])


@settings(max_examples=300, derandomize=True)
@given(pairs=st.lists(st.tuples(_PARAMS, _VALUES), max_size=12),
       vast=st.sampled_from(sorted(PIXEL_EVENTS) + ["fullscreen", ""]))
def test_every_query_string_ends_stored_or_rejected_with_a_reason(pairs, vast: str) -> None:
    query = urlencode([("e", vast), *BASE.items(), *pairs])
    params = dict(parse_qsl(query, keep_blank_values=True))
    try:
        event = pixel_event(params, RECEIVED)
    except PixelRejected as err:
        assert err.reason in {"missing_field", "unknown_type", "invalid_field"} and err.detail
        return
    try:
        validate(event)
    except (msgspec.ValidationError, msgspec.DecodeError) as err:
        assert rejection_reason(err) in {"missing_field", "invalid_field"}


def test_iso_ts_datetime_is_exact() -> None:
    event = px(e="impression", ts="2024-05-29T16:26:40.123Z")
    assert event["ts"] == int(datetime(2024, 5, 29, 16, 26, 40, 123_000,
                                       tzinfo=timezone.utc).timestamp() * 1000)


@given(st.text(max_size=200))
def test_the_event_id_is_the_uuid5_of_its_identity(name):
    assert uuid5_text(name) == str(uuid.uuid5(_NAMESPACE, name))


_QUERY_CHARS = st.sampled_from(list("ab=&k%+[]:._-") + ["%6B", "%FF", "%20", "%3D", "%26", "é"])


@given(st.lists(_QUERY_CHARS, max_size=40).map("".join))
def test_query_pairs_are_parse_qsl_s(query):
    assert query_pairs(query) == parse_qsl(query, keep_blank_values=True)


def test_query_pairs_of_a_plain_pixel_url():
    query = "k=ing_x&e=start&asid=as-1&cmp=cmp-1&cc=US&ts=[TIMESTAMP]&&flag&x="
    assert query_pairs(query) == parse_qsl(query, keep_blank_values=True)
