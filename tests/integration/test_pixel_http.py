"""GET /v1/px end to end, and the tracking-URL template."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from adtier.ingest.pixel import GIF
from tests.helpers import ad_event, batch, now_ms
from tests.integration.conftest import count


def _px(api, **params):
    params.setdefault("k", api.ingest_key)
    return api.client.get("/v1/px", params=params)


BASE = {"asid": "play-1", "cmp": "cmp-1", "cr": "cr-1", "acc": "acc-1", "pf": "pf-1",
        "ses": "ses-1", "dev": "tv", "cc": "us"}


def _assert_gif(response):
    assert response.status_code == 200
    assert response.content == GIF
    assert response.headers["content-type"] == "image/gif"
    assert "no-store" in response.headers["cache-control"]


def test_pixel_events_land_and_retries_are_duplicates(api, flush, ch):
    for vast in ("impression", "start", "firstQuartile", "midpoint", "thirdQuartile", "complete"):
        _assert_gif(_px(api, e=vast, ts="[TIMESTAMP]", cb="[CACHEBUSTING]", **BASE))
    _assert_gif(_px(api, e="start", **BASE))  # the player retried a tracking URL
    _assert_gif(_px(api, e="pause", ph="00:00:05.000", **BASE))
    _assert_gif(_px(api, e="pause", ph="00:00:09.500", **BASE))  # a second, real pause
    flush()
    rows = ch.query("SELECT type, source, country, device, ad_playhead_ms FROM ad_events "
                    "ORDER BY type, ad_playhead_ms").result_rows
    types = [r[0] for r in rows]
    assert sorted(types) == sorted(["impression", "start", "first_quartile", "midpoint",
                                    "third_quartile", "complete", "pause", "pause"])
    assert {r[1:4] for r in rows} == {("pixel", "US", "tv")}
    assert [r[4] for r in rows if r[0] == "pause"] == [5000, 9500]


def test_pixel_answers_carry_a_request_id(api):
    """Pixels are answered before Litestar's routing (AdtierApp): the request id still comes
    with each, the client's own kept, like every other answer's."""
    made = _px(api, e="impression", **BASE)
    _assert_gif(made)
    assert len(made.headers["x-request-id"]) == 16
    kept = api.client.get("/v1/px", params={"k": api.ingest_key, "e": "start", **BASE},
                          headers={"X-Request-Id": "trace-7"})
    _assert_gif(kept)
    assert kept.headers["x-request-id"] == "trace-7"
    assert "x-content-type-options" not in kept.headers  # the browser pages' header, not here


def test_pixel_time_and_macros(api, flush, ch):
    ts = now_ms() - 30_000
    _px(api, e="impression", ts=str(ts), pos="[POD_POSITION]", bp="midroll", dur="00:00:30.000", **BASE)
    flush()
    row = ch.query("SELECT toUnixTimestamp64Milli(ts), pod_position, break_position, ad_duration_ms "
                   "FROM ad_events").result_rows
    assert row == [(ts, None, "mid", 30_000)]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"e": "teleport"}, "unknown_type"),
        ({"e": "[EVENT]"}, "missing_field"),
        ({"e": "fullscreen"}, "unknown_type"),
        ({"e": "start", "ph": "00:00:inf"}, "invalid_field"),
        ({"e": "start", "bp": "7"}, "invalid_field"),
        ({"e": "progress"}, "missing_field"),
        ({"e": "start", "pf": "[PROFILE_ID]"}, "missing_field"),
        ({"e": "start", "cc": "XX"}, "invalid_field"),
        ({"e": "error", "err": "42"}, "invalid_field"),
        ({"e": "start", "dur": "1000", "ph": "5000"}, "invalid_field"),
        ({"e": "start", "ts": str(now_ms() + 86_400_000)}, "ts_in_future"),
    ],
)
def test_pixel_rejections_are_kept_and_still_answer_a_gif(api, flush, ch, params, reason):
    _assert_gif(_px(api, **{**BASE, **params}))
    flush()
    kept = ch.query("SELECT reason, source FROM rejected_events").result_rows
    assert kept == [(reason, "pixel")]
    assert count(ch, "ad_events") == 0


def test_pixel_with_a_bad_key_answers_a_gif_and_stores_nothing(api, flush, ch):
    _assert_gif(api.client.get("/v1/px", params={"k": "wrong", "e": "start", **BASE}))
    _assert_gif(api.client.get("/v1/px", params={"e": "start", **BASE}))
    flush()
    assert count(ch, "ad_events") == 0 and count(ch, "rejected_events") == 0


def test_pixel_and_batch_share_dedup(api, flush, ch):
    from adtier.ingest.pixel import pixel_event

    event = pixel_event({"e": "complete", **BASE}, now_ms())
    _px(api, e="complete", **BASE)
    answer = api.post_events(batch([ad_event("complete", event_id=event["event_id"])])).json()
    assert answer["duplicates"] == 1
    flush()
    assert count(ch, "ad_events") == 1


def test_template_prints_tracking_urls(api):
    answer = api.client.get("/v1/px/template", params={"campaign_id": "cmp-9", "creative_id": "cr-3"},
                            headers=api.admin)
    assert answer.status_code == 200
    urls = answer.json()["urls"]
    assert set(urls) >= {"impression", "start", "firstQuartile", "complete", "error", "viewable"}
    query = parse_qs(urlsplit(urls["error"]).query)
    assert query["cmp"] == ["cmp-9"] and query["cr"] == ["cr-3"]
    assert query["asid"] == ["[ADSERVINGID]"] and query["err"] == ["[ERRORCODE]"]
    # the template's own URL, fired with its macros unsubstituted, is a rejection not a crash
    forbidden = api.client.get("/v1/px/template", params={"campaign_id": "c", "creative_id": "c"},
                               headers=api.ingest)
    assert forbidden.status_code == 403


def test_plays_with_a_constant_or_unsubstituted_ad_serving_id_do_not_collide(api, flush, ch):
    for campaign, profile in (("cmp-1", "pf-1"), ("cmp-2", "pf-1"), ("cmp-1", "pf-2")):
        _assert_gif(_px(api, **{**BASE, "e": "impression", "asid": "0", "cmp": campaign, "pf": profile}))
    _assert_gif(_px(api, **{**BASE, "e": "impression", "asid": "${ADSERVINGID}"}))
    flush()
    assert count(ch, "ad_events") == 3
    assert ch.query("SELECT reason FROM rejected_events").result_rows == [("missing_field",)]


def test_concurrent_pixels_are_appended_together_and_each_answered(api, flush, ch):
    from concurrent.futures import ThreadPoolExecutor

    def fire(i: int):
        return _px(api, **{**BASE, "e": "start", "asid": f"play-{i % 40}"})

    from adtier import metrics

    duplicates_before = metrics.PIXELS.labels("duplicate")._value.get()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(fire, range(80)))  # every play fired twice
    assert all(a.content == GIF for a in answers)
    flush()
    assert count(ch, "ad_events") == 40
    assert metrics.PIXELS.labels("duplicate")._value.get() - duplicates_before == 40
