"""Attacks from outside on the pixel, the VAST helper and the console's pages: what a hostile
or careless client sends, and what must still hold (secrets stay out of stored rows, documents
stay well-formed, pages carry their security headers)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from adtier.ingest.pixel import GIF
from adtier.ingest.vast_xml import VAST_NAMESPACE

NS = f"{{{VAST_NAMESPACE}}}"


def test_a_percent_encoded_pixel_key_is_not_kept_in_rejected_events(api, flush, ch):
    """`%6B=` is `k=` once decoded: the pixel authenticates with it, so the copy of the query
    kept for a refused pixel must drop it too (the key would be readable on the operator page
    and by anyone with access to rejected_events)."""
    for name in ("%6B", "%6b", "k"):
        answer = api.client.get(f"/v1/px?{name}={api.ingest_key}&e=notAnEvent&cmp=cmp-1")
        assert answer.status_code == 200 and answer.content == GIF
    flush()
    rows = ch.query("SELECT reason, raw FROM rejected_events WHERE source = 'pixel'").result_rows
    assert [r[0] for r in rows] == ["unknown_type"] * 3  # every pixel kept, with its reason
    for _, raw in rows:
        assert api.ingest_key not in raw
        assert "cmp=cmp-1" in raw and "e=notAnEvent" in raw


def _fill(url: str) -> str:
    """What a player does: the macros substituted (those we need for a storable event)."""
    for macro, value in {"[ACCOUNT_ID]": "acc-1", "[PROFILE_ID]": "pf-1",
                         "[SESSION_ID]": "ses-1", "[ADSERVINGID]": "play-1"}.items():
        url = url.replace(macro, value)
    return url


@pytest.mark.parametrize("campaign_id, creative_id", [
    ('cmp<1>&"\'', "cr]]>-<!--"),
    ("cmp-%41", "cr%2Fx 50%"),  # a percent sign in an id must survive the URL
])
def test_the_vast_document_carries_hostile_ids_exactly(api, flush, ch, campaign_id, creative_id):
    answer = api.client.get("/v1/vast/tracking", headers=api.admin, params={
        "campaign_id": campaign_id, "creative_id": creative_id, "document": "true",
        "ingest_key": api.ingest_key})
    assert answer.status_code == 200, answer.text
    doc = ET.fromstring(answer.content)  # well-formed: everything escaped
    assert doc.find(f"{NS}Ad").get("id") == campaign_id
    assert doc.find(f".//{NS}Creative").get("id") == creative_id
    impression = doc.find(f".//{NS}Impression").text.strip()
    path = impression[impression.index("/v1/px"):]
    assert api.client.get(_fill(path)).content == GIF
    flush()
    assert ch.query("SELECT campaign_id, creative_id FROM ad_events").result_rows == [
        (campaign_id, creative_id)]


@pytest.mark.parametrize("param", ["campaign_id", "creative_id", "ingest_key", "media_url"])
def test_the_vast_helper_refuses_what_xml_cannot_hold(api, param):
    """XML 1.0 has no way to write most control characters (not even as &#1;): such an id
    is a clear 400, never a document a player cannot parse."""
    params = {"campaign_id": "cmp-1", "creative_id": "cr-1", "document": "true",
              param: "bad\x01\x1b[31m"}
    answer = api.client.get("/v1/vast/tracking", headers=api.admin, params=params)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_parameter"
    assert param in answer.json()["detail"]


@pytest.mark.parametrize("path", ["/console", "/console/static/js/app.js",
                                  "/console/vendor/plotly.min.js", "/docs", "/docs/swagger",
                                  "/docs/openapi.json"])
def test_the_console_and_docs_carry_their_security_headers(api, path):
    """No MIME sniffing of what the pages load; the HTML pages refuse to be framed
    (clickjacking a signed-in console) and any script but this server's own."""
    answer = api.client.get(path)
    assert answer.status_code == 200, answer.text[:200]
    assert answer.headers["x-content-type-options"] == "nosniff"
    if answer.headers["content-type"].startswith("text/html"):
        assert answer.headers["x-frame-options"] == "DENY"
        policy = dict(part.strip().split(" ", 1) for part in
                      answer.headers["content-security-policy"].split(";"))
        assert policy["frame-ancestors"] == "'none'"
        assert policy["connect-src"] == "'self'"
        assert not [s for s in policy["script-src"].split() if not s.startswith("'")]
        assert answer.headers["referrer-policy"] == "no-referrer"


def test_readyz_tells_an_anonymous_caller_what_is_down_not_the_stores_errors(api, monkeypatch):
    """/readyz answers without a key (load balancers, probes): the stores' error texts (their
    addresses, a statement) are for the log, not for whoever asks."""
    from redis import asyncio as aredis

    state = api.client.app.state.adtier
    monkeypatch.setattr(state, "redis",
                        aredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5))
    answer = api.client.get("/readyz")
    assert answer.status_code == 503
    body = answer.json()
    assert body["redis"] == "unreachable" and "redis unreachable" in body["problems"]
    assert "127.0.0.1" not in answer.text and "Error" not in answer.text


def test_a_body_of_many_gzip_members_is_refused_not_inflated_for_minutes(api, flush, ch):
    """RFC 1952 lets members follow each other, and each empty one is 20 bytes: 8 MB of them
    made the inflater copy the rest of the body once per member (quadratic: a minute of the
    event loop for one request). Real clients send one member, or a few."""
    import gzip
    import json

    from tests.helpers import ad_event, batch

    text = json.dumps(batch([ad_event("impression"), ad_event("start")])).encode()
    thirds = [text[: len(text) // 3], text[len(text) // 3: 2 * len(text) // 3],
              text[2 * len(text) // 3:]]
    few = b"".join(gzip.compress(part) for part in thirds)
    answer = api.post_events(None, content=few, headers={
        "Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert answer.status_code == 200 and answer.json()["accepted"] == 2, answer.text
    flood = gzip.compress(text) + gzip.compress(b"") * 5_000
    refused = api.post_events(None, content=flood, headers={
        "Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "bad_encoding"
    assert "members" in refused.json()["detail"]
    flush()  # the refused body is kept, with its reason
    assert ch.query("SELECT count() FROM rejected_events WHERE reason = 'bad_encoding'"
                    ).result_rows == [(1,)]


def test_an_admin_key_hidden_behind_a_second_k_is_still_refused_and_kept(api, flush, ch):
    """A tag with `k` twice (an ingest key appended after an admin one): the pixel read the last
    and stored the event, and the published admin key left no trace to revoke it by."""
    from urllib.parse import urlencode

    base = {"e": "impression", "asid": "a", "cmp": "c", "cr": "r", "acc": "a", "pf": "p",
            "ses": "s"}
    admin, ingest = api.settings.admin_key, api.ingest_key
    for keys in (f"k={admin}&k={ingest}", f"k={ingest}&k={admin}", f"%6B={admin}&k={ingest}"):
        answer = api.client.get(f"/v1/px?{keys}&{urlencode(base)}")
        assert answer.status_code == 200 and answer.content == GIF
    flush()
    assert ch.query("SELECT count() FROM ad_events").result_rows == [(0,)]
    rows = ch.query("SELECT reason, raw FROM rejected_events").result_rows
    assert [r[0] for r in rows] == ["wrong_key_role"] * 3
    assert all(api.settings.admin_key not in r[1] and api.ingest_key not in r[1] for r in rows)


def test_an_unreachable_buffer_is_a_503_without_the_stores_error_text(api, monkeypatch):
    """Ingest keys sit in VAST tags (anyone can read one): a 503 tells the client to retry,
    the Redis error (its address) goes to the log with the request id."""
    from redis import asyncio as aredis

    from tests.helpers import ad_event, batch

    api.post_events(batch([ad_event("impression")]))  # the key is known and cached
    buffer = api.client.app.state.adtier.ingest.buffer
    dead = aredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    monkeypatch.setattr(buffer, "_client", dead)
    monkeypatch.setattr(buffer, "_script", dead.register_script(buffer._script.script))
    answer = api.post_events(batch([ad_event("impression")]))
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == "buffer_unavailable" and answer.headers["retry-after"]
    assert "127.0.0.1" not in answer.text and "Error" not in answer.text


def test_pixel_values_that_are_not_utf8_are_rejected_not_merged(api, flush, ch):
    """`cmp=%FF` and `cmp=%FE` both decoded to U+FFFD: two plays of different campaigns became
    one event (the second a "duplicate"), under an id no catalog holds. Such a pixel is
    rejected naming the parameter, and kept; a real U+FFFD (valid UTF-8) is a value like any."""
    base = f"k={api.ingest_key}&e=impression&asid=a&cr=r&acc=a&pf=p&ses=s"
    for value in ("%FF", "%FE", "ok%C3", "%EF%BF%BD", "caf%C3%A9"):
        answer = api.client.get(f"/v1/px?{base}&cmp={value}")
        assert answer.status_code == 200 and answer.content == GIF
    flush()
    assert sorted(ch.query("SELECT campaign_id FROM ad_events").result_rows) == [
        ("café",), ("\ufffd",)]
    rows = ch.query("SELECT reason, detail FROM rejected_events").result_rows
    assert len(rows) == 3
    assert all(reason == "invalid_field" and "`cmp`" in detail for reason, detail in rows)
