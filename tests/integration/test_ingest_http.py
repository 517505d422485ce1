"""POST /v1/events end to end: HTTP -> Valkey stream -> flusher -> ClickHouse."""

from __future__ import annotations

import gzip
import json

import msgspec
import pytest

from tests.helpers import ad_event, batch, content_event, now_ms
from tests.integration.conftest import count

AD_TYPES = ["impression", "viewable_impression", "start", "first_quartile", "midpoint",
            "third_quartile", "complete", "skip", "click", "pause", "resume", "mute", "unmute",
            "error"]
CONTENT_TYPES = ["content_start", "content_heartbeat", "content_complete", "content_stop", "rating"]


def test_every_event_type_lands_exactly_once(api, flush, ch):
    events = [ad_event(t) for t in AD_TYPES] + [content_event(t) for t in CONTENT_TYPES]
    answer = api.post_events(batch(events))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (len(events), 0, [])
    flush()
    assert count(ch, "ad_events") == len(AD_TYPES)
    assert count(ch, "content_events") == len(CONTENT_TYPES)
    stored_types = {r[0] for r in ch.query("SELECT type FROM ad_events").result_rows}
    assert stored_types == set(AD_TYPES)
    rating = ch.query("SELECT value FROM content_events WHERE type = 'rating'").result_rows
    assert rating == [(1,)]
    error = ch.query("SELECT error_code FROM ad_events WHERE type = 'error'").result_rows
    assert error == [(402,)]


def test_fields_are_kept_as_sent(api, flush, ch):
    ts = now_ms() - 60_000
    event = ad_event("midpoint", ts=ts, pod_id="pod-9", pod_position=2, break_position="mid",
                     ad_duration_ms=30_000, ad_playhead_ms=15_000, content_id="title-7")
    sent = now_ms()
    assert api.post_events(batch([event], sent_at=sent)).status_code == 200
    flush()
    row = ch.query(
        "SELECT toString(event_id), toUnixTimestamp64Milli(ts), toUnixTimestamp64Milli(client_ts),"
        " toUnixTimestamp64Milli(sent_at), clock_skew_ms, profile_id, pod_id, pod_position,"
        " break_position, ad_duration_ms, ad_playhead_ms, content_id, source, key_id FROM ad_events"
    ).result_rows[0]
    assert row == (event["event_id"], ts, ts, sent, 0, "pf-1", "pod-9", 2, "mid", 30_000,
                   15_000, "title-7", "batch", api.ingest_key_id)


def test_rfc3339_timestamps_and_clock_drift_correction(api, flush, ch):
    # The client clock is 1 hour behind: its sent_at and ts are both shifted; we correct ts.
    skew = 3_600_000
    true_ts = now_ms() - 5_000
    event = ad_event(ts=true_ts - skew)
    answer = api.post_events(batch([event], sent_at=now_ms() - skew))
    assert answer.json()["accepted"] == 1
    # ordinary network delay (under the threshold) is not "corrected"
    iso_event = content_event(ts="2026-01-01T10:00:00+01:00")
    late = api.post_events(batch([iso_event], sent_at=now_ms() - 1500))
    flush()
    corrected, client = ch.query(
        "SELECT toUnixTimestamp64Milli(ts), toUnixTimestamp64Milli(client_ts) FROM ad_events"
    ).result_rows[0]
    assert client == true_ts - skew
    assert abs(corrected - true_ts) < 2_000
    if late.json()["accepted"]:  # only within retention of the day the suite runs
        row = ch.query("SELECT clock_skew_ms FROM content_events").result_rows[0]
        assert row == (0,)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda e: e.update(type="unknown_thing"), "unknown_type"),
        (lambda e: e.pop("profile_id"), "missing_field"),
        (lambda e: e.update(event_id="not-a-uuid"), "invalid_field"),
        (lambda e: e.update(device="fridge"), "invalid_field"),
        (lambda e: e.update(country="XX"), "invalid_field"),
        (lambda e: e.update(country="usa"), "invalid_field"),
        (lambda e: e.update(profile_id="p" * 65), "invalid_field"),
        (lambda e: e.update(ad_duration_ms=-1), "invalid_field"),
        (lambda e: e.update(ad_duration_ms=1000, ad_playhead_ms=2000), "invalid_field"),
        (lambda e: e.update(break_position="sideways"), "invalid_field"),
        (lambda e: e.update(ts=now_ms() + 3_600_000), "ts_in_future"),
        (lambda e: e.update(ts=now_ms() - 90 * 86_400_000), "ts_too_old"),
        (lambda e: e.update(padding="x" * 20_000), "event_too_large"),
    ],
)
def test_rejections_have_reasons_and_are_kept(api, flush, ch, mutate, reason):
    bad = ad_event()
    mutate(bad)
    good = ad_event()
    answer = api.post_events(batch([good, bad]))
    assert answer.status_code == 200
    body = answer.json()
    assert body["accepted"] == 1
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [(1, reason)]
    assert body["rejected"][0]["detail"]
    flush()
    kept = ch.query("SELECT reason, idx, raw, batch_id FROM rejected_events").result_rows
    assert len(kept) == 1
    assert kept[0][:2] == (reason, 1)
    assert kept[0][3] == body["batch_id"]
    assert json.loads(kept[0][2]) == bad  # the raw event, as sent
    assert count(ch, "ad_events") == 1


def test_error_event_needs_a_vast_code(api):
    missing = ad_event("error")
    missing.pop("error_code")
    out_of_range = ad_event("error", error_code=42)
    body = api.post_events(batch([missing, out_of_range])).json()
    assert [r["reason"] for r in body["rejected"]] == ["missing_field", "invalid_field"]


def test_duplicates_across_batches_and_within_a_batch(api, flush, ch):
    first = [ad_event() for _ in range(5)]
    a = api.post_events(batch(first)).json()
    again = first[:2] + [ad_event() for _ in range(3)]
    again.append(dict(again[-1]))  # a duplicate inside the same batch
    b = api.post_events(batch(again)).json()
    assert (a["accepted"], a["duplicates"]) == (5, 0)
    assert (b["accepted"], b["duplicates"]) == (3, 3)
    flush()
    assert count(ch, "ad_events") == 8
    assert ch.query("SELECT count() - uniqExact(event_id) FROM ad_events").result_rows[0][0] == 0
    provenance = dict(ch.query("SELECT batch_id, duplicates FROM ingest_batches").result_rows)
    assert provenance == {a["batch_id"]: 0, b["batch_id"]: 3}


def test_idempotency_key_replays_the_first_answer(api, flush, ch):
    body = batch([ad_event() for _ in range(3)] + [{"type": "nope"}])
    headers = {"Idempotency-Key": "retry-42"}
    first = api.post_events(body, headers=headers)
    second = api.post_events(body, headers={**headers, "Sent-At": str(now_ms())})
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert first.json()["accepted"] == 3
    flush()
    third = api.post_events(body, headers=headers)
    assert third.json() == first.json()  # still the first answer after the flush
    assert count(ch, "ad_events") == 3
    assert count(ch, "ingest_batches") == 1
    # the same key with another body is a client bug: refuse it rather than drop the batch
    reused = api.post_events(batch([ad_event()]), headers=headers)
    assert reused.status_code == 422 and reused.json()["error"] == "idempotency_key_reused"


def test_sent_at_header_is_the_attempt_time(api, flush, ch):
    # A body first built 10 minutes ago and re-sent now: the header says when it was sent, so
    # the 10 minutes are not taken for client clock drift.
    old = now_ms() - 600_000
    event = ad_event(ts=old)
    answer = api.post_events(batch([event], sent_at=old), headers={"Sent-At": str(now_ms())})
    assert answer.json()["accepted"] == 1
    flush()
    skew, ts = ch.query("SELECT clock_skew_ms, toUnixTimestamp64Milli(ts) FROM ad_events").result_rows[0]
    assert (skew, ts) == (0, old)
    bad = api.post_events(batch([ad_event()]), headers={"Sent-At": "yesterday"})
    assert bad.status_code == 400 and bad.json()["error"] == "bad_sent_at"


def test_invalid_utf8_in_msgpack_rejects_one_event_not_the_batch(api, flush, ch):
    good = msgspec.msgpack.encode(ad_event())
    bad_event = msgspec.msgpack.encode(ad_event(profile_id="PLACEHOLDER"))
    bad_event = bad_event.replace(b"PLACEHOLDER", b"\xff" * len(b"PLACEHOLDER"))  # not UTF-8
    envelope = msgspec.msgpack.encode({"events": [msgspec.Raw(good), msgspec.Raw(bad_event)]})
    answer = api.client.post("/v1/events", content=envelope,
                             headers={**api.ingest, "Content-Type": "application/msgpack"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 1
    assert [r["reason"] for r in answer.json()["rejected"]] == ["malformed"]


def test_msgpack_ndjson_and_gzip_bodies(api, flush, ch):
    events = [ad_event() for _ in range(3)]
    packed = msgspec.msgpack.encode(batch(events))
    r1 = api.client.post("/v1/events", content=packed,
                         headers={**api.ingest, "Content-Type": "application/msgpack"})
    nd = b"\n".join(msgspec.json.encode(content_event()) for _ in range(4)) + b"\n"
    r2 = api.client.post("/v1/events", content=gzip.compress(nd),
                         headers={**api.ingest, "Content-Type": "application/x-ndjson",
                                  "Content-Encoding": "gzip"})
    r3 = api.client.post("/v1/events", content=gzip.compress(msgspec.json.encode(batch([ad_event()]))),
                         headers={**api.ingest, "Content-Type": "application/json",
                                  "Content-Encoding": "gzip"})
    assert [r.json()["accepted"] for r in (r1, r2, r3)] == [3, 4, 1]
    flush()
    assert count(ch, "ad_events") == 4
    assert count(ch, "content_events") == 4


def test_bad_msgpack_event_is_rejected_with_its_raw_form(api, flush, ch):
    body = msgspec.msgpack.encode({"events": [{"type": "impression", "event_id": 7}]})
    answer = api.client.post("/v1/events", content=body,
                             headers={**api.ingest, "Content-Type": "application/msgpack"})
    assert answer.json()["rejected"][0]["reason"] == "invalid_field"
    flush()
    raw = ch.query("SELECT raw FROM rejected_events").result_rows[0][0]
    assert json.loads(raw) == {"type": "impression", "event_id": 7}


@pytest.mark.parametrize(
    ("content", "headers", "status", "code"),
    [
        (b"{not json", {"Content-Type": "application/json"}, 400, "undecodable_body"),
        (b'{"events": 5}', {"Content-Type": "application/json"}, 400, "bad_batch"),
        (b"plain", {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        (b"x", {"Content-Type": "application/json", "Content-Encoding": "br"}, 415,
         "unsupported_encoding"),
        (b"not gzip", {"Content-Type": "application/json", "Content-Encoding": "gzip"}, 400,
         "bad_encoding"),
    ],
)
def test_bad_bodies(api, flush, ch, content, headers, status, code):
    answer = api.client.post("/v1/events", content=content, headers={**api.ingest, **headers})
    assert answer.status_code == status
    assert answer.json()["error"] == code
    assert answer.json()["detail"]
    if status == 400:  # an unreadable body is kept too, with its reason
        flush()
        assert ch.query("SELECT reason FROM rejected_events").result_rows == [(code,)]


def test_limits_answer_413_on_decompressed_size(settings, flush):
    from litestar.testing import TestClient

    from adtier.app import create_app
    from tests.integration.conftest import Api

    small = msgspec.structs.replace(settings, max_decompressed_bytes=50_000, max_events_per_batch=50)
    with TestClient(create_app(small)) as client:
        api = Api(client, small)
        bomb = gzip.compress(msgspec.json.encode(batch([ad_event(session_id="s" * 60) for _ in range(40)])) + b" " * 100_000)
        r1 = client.post("/v1/events", content=bomb,
                         headers={**api.ingest, "Content-Type": "application/json", "Content-Encoding": "gzip"})
        assert len(bomb) < 50_000 and r1.status_code == 413
        assert r1.json()["error"] == "body_too_large"
        r2 = api.post_events(batch([ad_event() for _ in range(51)]))
        assert r2.status_code == 413 and r2.json()["error"] == "too_many_events"


def test_auth(api):
    assert api.client.post("/v1/events", json=batch([])).status_code == 401
    wrong = api.client.post("/v1/events", json=batch([]), headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
    recs = api.client.post("/v1/keys", json={"role": "recs"}, headers=api.admin).json()
    forbidden = api.post_events(batch([]), headers={"Authorization": f"Bearer {recs['key']}"})
    assert forbidden.status_code == 403


def test_buffer_high_water_answers_503_with_retry_after(settings):
    from litestar.testing import TestClient

    from adtier.app import create_app
    from tests.integration.conftest import Api

    tight = msgspec.structs.replace(settings, buffer_high_water_events=5)
    with TestClient(create_app(tight)) as client:
        api = Api(client, tight)
        assert api.post_events(batch([ad_event() for _ in range(5)])).status_code == 200
        full = api.post_events(batch([ad_event()]))
        assert full.status_code == 503
        assert full.json()["error"] == "buffer_full"
        assert int(full.headers["retry-after"]) > 0


def test_batch_provenance(api, flush, ch):
    body = msgspec.json.encode(batch([ad_event(), content_event(), {"type": "x"}]))
    answer = api.client.post("/v1/events", content=body,
                             headers={**api.ingest, "Content-Type": "application/json"}).json()
    url = f"/v1/ingest/batches/{answer['batch_id']}"
    buffered = api.client.get(url, headers=api.ingest).json()
    assert buffered["state"] == "buffered" and buffered["stored"] == 0
    assert buffered["events"] == 3 and buffered["accepted"] == 2 and buffered["rejected"] == 1
    import hashlib

    assert buffered["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert buffered["key_id"] == api.ingest_key_id
    flush()
    stored = api.client.get(url, headers=api.admin).json()
    assert stored["state"] == "stored" and stored["stored"] == 2
    other = api.client.post("/v1/keys", json={"role": "ingest"}, headers=api.admin).json()
    hidden = api.client.get(url, headers={"Authorization": f"Bearer {other['key']}"})
    assert hidden.status_code == 404
    # once Redis has forgotten the batch, ClickHouse still answers
    from adtier.ingest.buffer import batch_key
    import redis as _r

    _r.Redis.from_url(api.settings.redis_url).delete(batch_key(answer["batch_id"]))
    again = api.client.get(url, headers=api.ingest).json()
    assert (again["state"], again["stored"], again["accepted"]) == ("stored", 2, 2)
    assert again["body_sha256"] == buffered["body_sha256"]


def test_unreadable_gzip_body_is_kept_inflated_and_counted(api, flush, ch):
    answer = api.client.post("/v1/events", content=gzip.compress(b'{"events": [oops'),
                             headers={**api.ingest, "Content-Type": "application/json",
                                      "Content-Encoding": "gzip"})
    assert answer.status_code == 400 and "kept as rejected batch" in answer.json()["detail"]
    flush()
    assert ch.query("SELECT reason, raw FROM rejected_events").result_rows == [
        ("undecodable_body", '{"events": [oops')]
    assert ch.query("SELECT events, rejected FROM ingest_batches").result_rows == [(1, 1)]
