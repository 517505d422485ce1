"""Requests a hostile or broken client sends: each answers 4xx with a reason (never 5xx), is
kept in rejected_events when it came with an ingest key, and cannot stop the flushers."""

from __future__ import annotations

import gzip

import msgspec
import pytest

from adtier.ingest.pixel import GIF
from tests.helpers import ad_event, batch
from tests.integration.conftest import count

DEEP_JSON = b"[" * 5000 + b"]" * 5000
DEEP_MSGPACK = b"\x91" * 5000 + b"\x90"


@pytest.mark.parametrize("sent_at", ["18446744073709551615", "18446744073709551616",
                                     "99999999999999999999999999", "10413792000000",
                                     "0001-01-01T00:00:00Z"])
def test_sent_at_header_out_of_range_is_400_kept_and_flushing_goes_on(api, flush, ch, sent_at):
    refused = api.post_events({"events": []}, headers={"Sent-At": sent_at})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "bad_sent_at"
    assert "kept as rejected batch" in refused.json()["detail"]
    ok = api.post_events(batch([ad_event()]))
    assert ok.status_code == 200
    flush()  # returns: nothing in the buffer is refused by ClickHouse
    assert count(ch, "ad_events") == 1
    assert ch.query("SELECT reason FROM rejected_events").result_rows == [("bad_sent_at",)]


def test_body_sent_at_out_of_range_is_400(api):
    late = api.post_events({"sent_at": "2400-01-01T00:00:00Z", "events": [ad_event()]})
    assert late.status_code == 400 and late.json()["error"] == "bad_sent_at"


def test_epoch_zero_sent_at_is_a_clock_to_correct_not_an_error(api, flush, ch):
    # a device without a real-time clock says 1970: its events are corrected, not refused
    answer = api.post_events(batch([ad_event(ts=1_000)], sent_at=0))
    assert answer.status_code == 200 and answer.json()["accepted"] == 1
    flush()
    assert count(ch, "ad_events") == 1


@pytest.mark.parametrize(("content_type", "body"), [
    ("application/json", b'{"events":' + DEEP_JSON + b"}"),
    ("application/json", b'{"events":[],"x":' + DEEP_JSON + b"}"),
    # an event inside the envelope is skipped over by the envelope's decoder, which has to
    # follow its nesting: the whole body is refused
    ("application/json", b'{"events":[{"type":"impression","x":' + DEEP_JSON + b"}]}"),
    ("application/msgpack", b"\x81\xa6events\x91" + DEEP_MSGPACK),
])
def test_deeply_nested_envelope_is_400_and_kept(api, flush, ch, content_type, body):
    answer = api.client.post("/v1/events", content=body,
                             headers={**api.ingest, "Content-Type": content_type})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "body_too_deep"
    flush()
    assert ch.query("SELECT reason FROM rejected_events").result_rows == [("body_too_deep",)]


def test_deeply_nested_ndjson_event_is_rejected_alone(api, flush, ch):
    body = (b'{"type":"impression","x":' + DEEP_JSON + b"}\n"
            + msgspec.json.encode(ad_event()) + b"\n")
    answer = api.client.post("/v1/events", content=body,
                             headers={**api.ingest, "Content-Type": "application/x-ndjson"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 1
    assert [r["reason"] for r in answer.json()["rejected"]] == ["too_deep"]
    flush()
    assert count(ch, "ad_events") == 1


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/keys", b'{"role":' + DEEP_JSON + b"}"),
    ("/v1/segments", b'{"name":"s","kind":"rule","rule":' + DEEP_JSON + b"}"),
    # under the decoder's limit: the rule parser's own depth limit answers
    ("/v1/segments", b'{"name":"s","kind":"rule","rule":' + b'{"all":[' * 450
     + b'{"feature":"device","op":"eq","value":"tv"}' + b"]}" * 450 + b"}"),
])
def test_deeply_nested_json_elsewhere_is_400(api, path, body):
    answer = api.client.post(path, content=body,
                             headers={**api.admin, "Content-Type": "application/json"})
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()["error"] in ("body_too_deep", "invalid_rule"), answer.text
    assert answer.headers["x-request-id"]


def test_every_response_carries_a_request_id_and_keeps_the_clients(api):
    assert len(api.client.get("/healthz").headers["x-request-id"]) == 16
    mine = api.client.get("/healthz", headers={"X-Request-Id": "trace-42"})
    assert mine.headers["x-request-id"] == "trace-42"
    odd = api.client.get("/healthz", headers={"X-Request-Id": "bad id\x7f"})
    assert odd.headers["x-request-id"] != "bad id\x7f"


def test_a_500_is_logged_with_the_request_id_it_answers(api, capsys):
    from litestar import get

    from adtier.logs import configure_logging

    configure_logging("warning")  # log lines to this test's captured stderr

    @get("/boom", sync_to_thread=False)
    def boom() -> None:
        raise ZeroDivisionError("planted")

    api.client.app.register(boom)
    answer = api.client.get("/boom")
    assert answer.status_code == 500
    request_id = answer.headers["x-request-id"]
    assert request_id in answer.json()["detail"]
    logged = capsys.readouterr().err
    line = next(line for line in logged.splitlines() if "internal_error" in line)
    assert request_id in line and "planted" in line


def test_413_415_and_422_are_kept_with_their_bytes_capped(settings, flush, ch):
    from litestar.testing import TestClient

    from adtier.app import create_app
    from tests.integration.conftest import Api

    small = msgspec.structs.replace(settings, max_decompressed_bytes=50_000, max_body_bytes=200_000)
    with TestClient(create_app(small)) as client:
        api = Api(client, small)
        bomb = gzip.compress(b'{"events":[' + b" " * 300_000 + b"]}")
        too_big = client.post("/v1/events", content=bomb, headers={
            **api.ingest, "Content-Type": "application/json", "Content-Encoding": "gzip"})
        assert too_big.status_code == 413
        raw_too_big = client.post("/v1/events", content=b"x" * 300_000, headers=api.ingest)
        assert raw_too_big.status_code == 413
        plain = client.post("/v1/events", content=b"hello",
                            headers={**api.ingest, "Content-Type": "text/plain"})
        assert plain.status_code == 415
        first = api.post_events(batch([ad_event()]), headers={"Idempotency-Key": "k1"})
        reused = api.post_events(batch([ad_event()]), headers={"Idempotency-Key": "k1"})
        assert first.status_code == 200 and reused.status_code == 422
        for answer in (too_big, raw_too_big, plain, reused):
            assert "kept as rejected batch" in answer.json()["detail"], answer.text
    flush()
    rows = ch.query("SELECT reason, length(raw) FROM rejected_events ORDER BY reason").result_rows
    assert sorted(r[0] for r in rows) == ["body_too_large", "body_too_large",
                                         "idempotency_key_reused", "unsupported_media_type"]
    assert max(r[1] for r in rows) <= 70_000  # capped, not the 300 KB sent


def test_pixel_refuses_an_admin_key_but_answers_a_gif_and_keeps_a_record(api, flush, ch):
    from adtier import metrics

    before = metrics.PIXELS.labels("wrong_key_role")._value.get()
    params = {"k": api.settings.admin_key, "e": "impression", "asid": "a", "cmp": "c", "cr": "r",
              "acc": "a", "pf": "p"}
    answer = api.client.get("/v1/px", params=params)
    assert answer.status_code == 200 and answer.content == GIF
    advertiser = api.client.post("/v1/keys", json={"role": "advertiser", "advertiser_id": "adv"},
                                 headers=api.admin).json()
    again = api.client.get("/v1/px", params={**params, "k": advertiser["key"]})
    assert again.content == GIF
    assert metrics.PIXELS.labels("wrong_key_role")._value.get() == before + 2
    flush()
    assert count(ch, "ad_events") == 0
    rows = ch.query("SELECT reason, source, raw FROM rejected_events").result_rows
    assert [r[:2] for r in rows] == [("wrong_key_role", "pixel")] * 2
    assert all(api.settings.admin_key not in r[2] and advertiser["key"] not in r[2] for r in rows)


def test_a_503_is_logged_with_the_request_id_it_answers(settings, capsys):
    from litestar.testing import TestClient

    from adtier.app import create_app
    from adtier.logs import configure_logging
    from tests.integration.conftest import Api

    full = msgspec.structs.replace(settings, buffer_high_water_events=1)
    with TestClient(create_app(full)) as client:
        api = Api(client, full)
        configure_logging("warning")
        assert api.post_events(batch([ad_event()])).status_code == 200
        refused = api.post_events(batch([ad_event()]))
        assert refused.status_code == 503
        logged = capsys.readouterr().err
    assert refused.headers["x-request-id"] in next(
        line for line in logged.splitlines() if "server_error_answered" in line)


async def _send_half_then_leave(app, path: str, headers: dict[str, str], half: bytes) -> list:
    """An ASGI call whose client sends part of its body and disconnects."""
    messages = [{"type": "http.request", "body": half, "more_body": True},
                {"type": "http.disconnect"}]
    sent: list = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "client": ("192.0.2.1", 1), "server": ("adtier", 80),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize("path", ["/v1/events", "/v1/events/"])
def test_a_client_leaving_mid_body_is_not_a_500(api, capsys, path):
    from adtier.logs import configure_logging

    configure_logging("info")
    body = msgspec.json.encode(batch([ad_event()]))
    sent = api.client.blocking_portal.call(
        _send_half_then_leave, api.client.app, path,
        {**api.ingest, "content-type": "application/json"}, body[:10])
    [start] = [m for m in sent if m["type"] == "http.response.start"]
    answer = msgspec.json.decode(b"".join(m.get("body", b"") for m in sent
                                          if m["type"] == "http.response.body"))
    assert (start["status"], answer["error"]) == (400, "client_disconnected")
    logged = capsys.readouterr().err
    assert "internal_error" not in logged and "client_disconnected" in logged
