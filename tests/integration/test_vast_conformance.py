"""VAST 4.x conformance over HTTP on the real stores: every tracking event name a standard
player fires is stored or rejected with its reason (ClickHouse and /metrics agree), a client's
and an SSAI stitcher's beacon of one ad play count once, MRC viewability on a hand-counted
world, and a player that fills the IAB macros of the helper's VAST 4.2 document."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from urllib.parse import quote, urlencode, urlsplit

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from adtier.ingest.pixel import GIF
from adtier.ingest.vast_events import PIXEL_EVENTS, SCHEMA_TRACKING_EVENTS
from adtier.ingest.vast_xml import VAST_NAMESPACE
from adtier.measure import reach
from tests.helpers import now_ms
from tests.integration.conftest import count

NS = "{" + VAST_NAMESPACE + "}"
BASE = {"asid": "play-1", "cmp": "cmp-v", "cr": "cr-1", "acc": "acc-1", "pf": "pf-1",
        "ses": "ses-1", "dev": "tv", "cc": "us"}
# VAST names a VAST 4.2 player must not be stored as: VAST 2/3 events the schema dropped
# (acceptInvitationLinear, timeSpentViewing, fullscreen, exitFullscreen, expand, collapse),
# our own type names, a wrong case, and nonsense.
NOT_VAST_4_2 = ["acceptInvitationLinear", "timeSpentViewing", "fullscreen", "exitFullscreen",
                "expand", "collapse", "viewable_impression", "Impression", "teleport"]


@pytest.fixture(name="settings")
def small_k(settings):
    # small hand-counted worlds: every row released (admin reads exact numbers anyway)
    return msgspec.structs.replace(settings, privacy_k=1)


def _px(api, headers=None, **params):
    params.setdefault("k", api.ingest_key)
    answer = api.client.get("/v1/px", params=params, headers=headers or {})
    assert answer.status_code == 200 and answer.content == GIF
    return answer


def _metrics(api) -> dict[tuple[str, tuple], float]:
    text = api.client.get("/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def _catalog(api, campaign_id: str) -> None:
    for path, items in (
        ("/v1/catalog/advertisers", [{"advertiser_id": "adv-v", "name": "V"}]),
        ("/v1/catalog/campaigns", [{"campaign_id": campaign_id, "advertiser_id": "adv-v",
                                    "name": "V", "ad_category": "IAB2",
                                    "start_date": "2025-01-01", "end_date": "2030-12-31",
                                    "frequency_cap": 0, "holdout_percent": 0.0}]),
    ):
        answer = api.client.put(path, json={"items": items}, headers=api.admin)
        assert answer.status_code == 200, answer.text


def _fire_all(api, vast: str, **extra: str) -> None:
    params = {**BASE, "e": vast, **extra}
    if vast == "error":
        params["err"] = "900"
    if vast == "progress":
        params["off"] = "00:00:05"
    if vast == "verificationNotExecuted":
        params["rsn"] = "1"
    _px(api, **params)


def test_every_vast_event_name_is_stored_or_rejected_with_its_reason(api, flush, ch):
    before = _metrics(api)
    for vast in PIXEL_EVENTS:
        _fire_all(api, vast)
    for name in NOT_VAST_4_2:
        _px(api, **{**BASE, "e": name})
    _px(api, **{**BASE, "e": "start", "asid": "play-2", "ph": "00:00:inf"})  # the lost pixel
    _px(api, **{**BASE, "e": "progress", "asid": "play-2"})  # progress without its offset
    after = _metrics(api)
    flush()

    stored = dict(ch.query("SELECT type, count() FROM ad_events GROUP BY type").result_rows)
    assert stored == {t: 1 for t in PIXEL_EVENTS.values()}
    assert set(SCHEMA_TRACKING_EVENTS) <= set(PIXEL_EVENTS)
    kept = ch.query("SELECT reason, count() FROM rejected_events WHERE source = 'pixel' "
                    "GROUP BY reason ORDER BY reason").result_rows
    assert kept == [("invalid_field", 1), ("missing_field", 1), ("unknown_type", len(NOT_VAST_4_2))]
    detail = ch.query("SELECT detail, raw FROM rejected_events WHERE reason = 'invalid_field'"
                      ).result_rows[0]
    assert "00:00:inf" in detail[0] and "ADPLAYHEAD" in detail[0]
    assert "e=start" in detail[1] and api.ingest_key not in detail[1]  # the query, key removed
    # /metrics counts both, in the same numbers
    for event_type in PIXEL_EVENTS.values():
        assert _delta(before, after, "adtier_events_accepted_total", type=event_type) == 1
    assert _delta(before, after, "adtier_events_rejected_total", reason="unknown_type") == len(
        NOT_VAST_4_2)
    assert _delta(before, after, "adtier_events_rejected_total", reason="invalid_field") == 1
    assert _delta(before, after, "adtier_events_rejected_total", reason="missing_field") == 1
    assert _delta(before, after, "adtier_pixels_total", outcome="accepted") == len(PIXEL_EVENTS)
    assert _delta(before, after, "adtier_pixels_total", outcome="rejected") == len(
        NOT_VAST_4_2) + 2


def test_a_client_and_a_stitcher_beacon_of_one_play_count_once(api, flush, ch):
    stitcher = {"X-Forwarded-For": "203.0.113.7",
                "X-Device-User-Agent": "Roku/DVP-9.10 (519.10E04111A)"}
    before = _metrics(api)
    for vast in ("impression", "start", "firstQuartile", "complete"):
        _px(api, **{**BASE, "e": vast, "ss": "0"})  # the player
        _px(api, headers=stitcher, **{**BASE, "e": vast, "ss": "1"})  # the SSAI stitcher
    # a stitcher that only sends the VAST device headers, for another play, fires first
    _px(api, headers=stitcher, **{**BASE, "e": "impression", "asid": "play-2"})
    _px(api, **{**BASE, "e": "impression", "asid": "play-2"})
    after = _metrics(api)
    flush()
    rows = ch.query("SELECT ad_serving_id, type, server_side FROM ad_events "
                    "ORDER BY ad_serving_id, type").result_rows
    assert rows == [("play-1", "complete", 0), ("play-1", "first_quartile", 0),
                    ("play-1", "impression", 0), ("play-1", "start", 0),
                    ("play-2", "impression", 1)]
    assert _delta(before, after, "adtier_events_duplicate_total") == 5
    assert _delta(before, after, "adtier_pixels_total", outcome="duplicate") == 5


def _viewability_world(api) -> dict[str, int]:
    """24 profiles, one ad play each: every play an impression and exactly one of the three
    ViewableImpression outcomes (VAST fires one per play): 12 viewable, 7 not viewable,
    5 undetermined (the player could not measure). One Viewable beacon is retried: a
    duplicate, not a second viewable impression."""
    plan = ["viewable"] * 12 + ["notViewable"] * 7 + ["viewUndetermined"] * 5
    for i, outcome in enumerate(plan):
        play = {**BASE, "asid": f"v-{i}", "pf": f"pf-{i}", "cmp": "cmp-view"}
        _px(api, **play, e="impression")
        _px(api, **play, e=outcome)
        if i == 0:
            _px(api, **play, e=outcome)  # retried: a duplicate, not a second viewable
    return {"impressions": 24, "viewable_impressions": 12, "not_viewable_impressions": 7,
            "undetermined": 5}


@pytest.mark.parametrize("source", reach.REPORT_SOURCES)
def test_viewability_the_mrc_way_on_a_hand_counted_world(api, flush, ch, source):
    _catalog(api, "cmp-view")
    truth = _viewability_world(api)
    flush()
    today = dt.datetime.now(dt.timezone.utc).date()
    body = reach.report(ch, "cmp-view", "device", today - dt.timedelta(days=1), today, 1,
                        source=source)
    totals = body["totals"]
    for name, value in truth.items():
        assert totals[name] == value, name
    assert totals["measurable_impressions"] == 19  # viewable + not viewable
    assert totals["viewable_rate"] == round(12 / 19, 6)  # undetermined stay out of it
    # and over HTTP
    answer = api.client.get("/v1/campaigns/cmp-view/report?by=day", headers=api.admin)
    assert answer.status_code == 200, answer.text
    assert answer.json()["totals"]["viewable_rate"] == round(12 / 19, 6)
    assert answer.json()["totals"]["undetermined"] == 5


def _iab_values(doc: ET.Element) -> dict[str, str]:
    """The macro values a player fills, in the formats and with the examples of the IAB macro
    list (tests/iab/vast4_macros.toml), percent-encoded as the IAB shows them; our SDK's own
    macros as our SDK fills them."""
    serving_id = doc.find(f"{NS}Ad/{NS}InLine/{NS}AdServingId").text
    # [TIMESTAMP] like the IAB example (one-digit hour allowed, hours-only offset), for now
    eastern = dt.datetime.now(dt.timezone(dt.timedelta(hours=-5))) - dt.timedelta(seconds=30)
    stamp = (f"{eastern:%Y-%m-%d}T{eastern.hour}:{eastern:%M:%S}."
             f"{eastern.microsecond // 1000:03d}-05")
    return {
        "[ADSERVINGID]": quote(serving_id, safe=""), "[TIMESTAMP]": quote(stamp, safe=""),
        "[CACHEBUSTING]": "12345678", "[ADPLAYHEAD]": "00%3A00%3A11.355",
        "[MEDIAPLAYHEAD]": "00%3A05%3A21.123", "[BREAKPOSITION]": "2",
        "[UNIVERSALADID]": "ad-id.org%20CNPA0484000H",
        "[CONTENTID]": "my-domain.com%20my-video-123", "[SERVERSIDE]": "0",
        "[ERRORCODE]": "900", "[REASON]": "1",
        # our SDK's macros; [POD_ID], [POD_POSITION], [AD_DURATION_MS] stay unfilled (absent)
        "[ACCOUNT_ID]": "acc-1", "[PROFILE_ID]": "pf-1", "[SESSION_ID]": "ses-1",
        "[DEVICE]": "tv", "[COUNTRY]": "us",
    }


def test_a_player_fires_every_url_of_the_helpers_vast_document(api, flush, ch):
    _catalog(api, "cmp-play")
    answer = api.client.get("/v1/vast/tracking", headers=api.admin, params={
        "campaign_id": "cmp-play", "creative_id": "cr-9", "ingest_key": api.ingest_key,
        "document": "true", "progress": "00:00:05,50%"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/xml")
    doc = ET.fromstring(answer.content)
    assert doc.tag == NS + "VAST" and doc.attrib["version"] == "4.2"
    values = _iab_values(doc)
    urls = [e.text.strip() for e in doc.iter() if e.text and "/v1/px?" in e.text]
    assert len(urls) == len(SCHEMA_TRACKING_EVENTS) + 1 + 6
    for url in urls:
        for macro, value in values.items():
            url = url.replace(macro, value)
        path = urlsplit(url)
        fired = api.client.get(f"{path.path}?{path.query}")
        assert fired.status_code == 200 and fired.content == GIF
    flush()
    assert count(ch, "rejected_events") == 0, ch.query(
        "SELECT reason, detail FROM rejected_events").result_rows
    stored = ch.query("SELECT type, count(), any(break_position), any(ad_playhead_ms), "
                      "any(content_playhead_ms), any(universal_ad_id), any(content_id) "
                      "FROM ad_events WHERE campaign_id = 'cmp-play' GROUP BY type").result_rows
    types = {r[0]: r[1] for r in stored}
    expected = {PIXEL_EVENTS[e] for e in SCHEMA_TRACKING_EVENTS} | {
        "impression", "error", "click", "viewable_impression", "not_viewable",
        "view_undetermined"}
    assert set(types) == expected
    assert types["progress"] == 2  # one per offset
    assert {r[2:] for r in stored} == {("mid", 11_355, 321_123, "ad-id.org CNPA0484000H",
                                        "my-domain.com my-video-123")}
    serving = doc.find(f"{NS}Ad/{NS}InLine/{NS}AdServingId").text
    assert ch.query("SELECT DISTINCT ad_serving_id FROM ad_events").result_rows == [(serving,)]
    # ... and in the campaign report
    report = api.client.get("/v1/campaigns/cmp-play/report?by=break_position",
                            headers=api.admin).json()
    totals = report["totals"]
    assert [r["break_position"] for r in report["rows"]] == ["mid"]
    for name in ("impressions", "starts", "first_quartile", "midpoint", "third_quartile",
                 "completes", "skips", "clicks", "viewable_impressions",
                 "not_viewable_impressions", "undetermined", "errors"):
        assert totals[name] == 1, name
    assert totals["reach"] == 1 and totals["measurable_impressions"] == 2


def test_the_tracking_elements_to_paste_and_bad_parameters(api):
    answer = api.client.get("/v1/vast/tracking", headers=api.admin,
                            params={"campaign_id": "cmp-1", "creative_id": "cr-1"})
    assert answer.status_code == 200
    fragment = ET.fromstring(f"<root xmlns='{VAST_NAMESPACE}'>{answer.text}</root>")
    assert [c.tag.removeprefix(NS) for c in fragment] == [
        "Error", "Impression", "ViewableImpression", "TrackingEvents", "ClickTracking"]
    assert "k=[INGEST_KEY]" in answer.text  # the key is the admin's to fill in
    bad = api.client.get("/v1/vast/tracking", headers=api.admin, params={
        "campaign_id": "c", "creative_id": "c", "progress": "5 seconds"})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_parameter"
    forbidden = api.client.get("/v1/vast/tracking", headers=api.ingest,
                               params={"campaign_id": "c", "creative_id": "c"})
    assert forbidden.status_code == 403


def test_the_iab_timestamp_of_a_player_sets_the_event_time(api, flush, ch):
    at = now_ms() - 60_000
    eastern = dt.datetime.fromtimestamp(at / 1000, dt.timezone(dt.timedelta(hours=5, minutes=30)))
    stamp = eastern.isoformat(timespec="milliseconds")  # ...+05:30, '+' unencoded in the URL
    url = (f"/v1/px?k={api.ingest_key}&e=impression&asid=p&cmp=c&cr=r&acc=a&pf=p"
           f"&ts={stamp}")
    assert api.client.get(url).content == GIF
    flush()
    assert ch.query("SELECT toUnixTimestamp64Milli(ts) FROM ad_events").result_rows == [(at,)]


# Random pixels over HTTP: every one fired is stored, a duplicate of a stored one, or kept in
# rejected_events with a reason (a pixel such as `ph=00:00:inf` used to vanish).
_VALUES = st.one_of(st.text(max_size=16), st.sampled_from(
    ["[ADPLAYHEAD]", "00:00:inf", "00%3A00%3A11.355", "2", "9" * 25, "-1", "%5BX%5D", "NaN",
     "2016-01-17T8:15:07.127-05", "1e309", "00:00:99", "+05:30", "50%", "pf-1", "us", "tv"]))
_PARAMS = st.sampled_from(["e", "asid", "cmp", "cr", "acc", "pf", "ses", "pod", "pos", "bp",
                           "dur", "ph", "mph", "c", "uaid", "dev", "cc", "ss", "ts", "cb",
                           "err", "rsn", "off"])
_PIXELS = st.lists(st.tuples(st.sampled_from(sorted(PIXEL_EVENTS) + ["fullscreen", ""]),
                             st.lists(st.tuples(_PARAMS, _VALUES), max_size=6)),
                   min_size=1, max_size=6)


@settings(max_examples=12, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(pixels=_PIXELS)
def test_every_random_pixel_is_stored_or_rejected(api, flush, ch, pixels):
    stored0, rejected0 = count(ch, "ad_events"), count(ch, "rejected_events")
    before = _metrics(api)
    for vast, pairs in pixels:
        query = urlencode([("k", api.ingest_key), ("e", vast), *BASE.items(), *pairs])
        assert api.client.get(f"/v1/px?{query}").content == GIF
    after = _metrics(api)
    flush()
    stored = count(ch, "ad_events") - stored0
    rejected = count(ch, "rejected_events") - rejected0
    duplicates = _delta(before, after, "adtier_pixels_total", outcome="duplicate")
    assert stored + rejected + duplicates == len(pixels)
    assert _delta(before, after, "adtier_pixels_total", outcome="error") == 0
