"""``POST /v1/events`` is answered before Litestar's routing (``app.AdtierApp``), like pixels:
every answer must be the one the routed handler gives, for good and for bad input.

``/v1/events/`` (the trailing slash) still goes through Litestar's router to the same
handler, so each case is sent both ways and the two answers compared."""

from __future__ import annotations

import gzip
import re
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient

import adtier.app
from adtier.app import create_app
from adtier.settings import Settings
from tests.helpers import ad_event, batch

FAST, ROUTED = "/v1/events", "/v1/events/"
_BATCH_ID = re.compile(r"\bb[0-9a-f]{11}[0-9a-f]{12}\b")
_EVENT_ID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")


class Client:
    def __init__(self, client: TestClient, settings: Settings):
        self.client = client
        admin = {"Authorization": f"Bearer {settings.admin_key}"}
        self.keys = {}
        for role in ("ingest", "recs"):
            made = client.post("/v1/keys", json={"role": role, "name": role}, headers=admin)
            assert made.status_code == 201, made.text
            self.keys[role] = {"Authorization": f"Bearer {made.json()['key']}"}


@pytest.fixture
def small(settings: Settings) -> Iterator[Client]:
    """An app whose body limit is 4 KiB, so the 413 cases are cheap."""
    limited = msgspec.structs.replace(settings, max_body_bytes=4096)
    with TestClient(create_app(limited)) as client:
        yield Client(client, limited)


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths answered by the fast path."""
    seen: list[str] = []
    real = adtier.app.answer_events

    async def counted(app, scope, receive, send):
        seen.append(scope["path"])
        await real(app, scope, receive, send)

    monkeypatch.setattr(adtier.app, "answer_events", counted)
    return seen


def _events(n: int = 2, **fields: Any) -> list[dict[str, Any]]:
    return [ad_event(**fields) for _ in range(n)]


def _cases(keys: dict[str, dict[str, str]]) -> dict[str, tuple[dict[str, str], Any]]:
    """name -> (headers, body maker); a maker gives fresh event ids on each call."""
    ingest, js = keys["ingest"], {"Content-Type": "application/json"}
    return {
        "good": ({**ingest, **js}, lambda: msgspec.json.encode(batch(_events()))),
        "one_bad_event": ({**ingest, **js},
                          lambda: msgspec.json.encode(batch(_events() + _events(1, country="XX")))),
        "gzip": ({**ingest, **js, "Content-Encoding": "gzip"},
                 lambda: gzip.compress(msgspec.json.encode(batch(_events())))),
        "msgpack": ({**ingest, "Content-Type": "application/msgpack"},
                    lambda: msgspec.msgpack.encode(batch(_events()))),
        "no_key": (js, lambda: msgspec.json.encode(batch(_events()))),
        "bad_key": ({"Authorization": "Bearer nope", **js},
                    lambda: msgspec.json.encode(batch(_events()))),
        "wrong_role": ({**keys["recs"], **js}, lambda: msgspec.json.encode(batch(_events()))),
        "malformed": ({**ingest, **js}, lambda: b'{"events": [}'),
        "not_an_envelope": ({**ingest, **js}, lambda: b'[1, 2]'),
        "media_type": ({**ingest, "Content-Type": "text/csv"}, lambda: b"a,b"),
        "bad_gzip": ({**ingest, **js, "Content-Encoding": "gzip"}, lambda: b"not gzip"),
        "encoding": ({**ingest, **js, "Content-Encoding": "br"}, lambda: b"{}"),
        "too_large": ({**ingest, **js}, lambda: b'{"events": [' + b" " * 5000 + b"]}"),
        "gzip_of_no_json": ({**ingest, **js, "Content-Encoding": "gzip"},
                               lambda: gzip.compress(b" " * 20_000)),
        "sent_at": ({**ingest, **js, "Sent-At": "yesterday"},
                    lambda: msgspec.json.encode(batch(_events()))),
        "idempotency_key": ({**ingest, **js, "Idempotency-Key": "k" * 129},
                            lambda: msgspec.json.encode(batch(_events()))),
        "empty": ({**ingest, **js}, lambda: b""),
    }


def _answer(response) -> tuple[int, Any, dict[str, str]]:
    body = response.content
    assert response.headers["content-length"] == str(len(body))
    assert re.fullmatch(r"[0-9a-f]{16}", response.headers["x-request-id"])
    text = _EVENT_ID.sub("<event>", _BATCH_ID.sub("<batch>", body.decode()))
    kept = {name: response.headers[name] for name in
            ("content-type", "www-authenticate", "retry-after") if name in response.headers}
    return response.status_code, msgspec.json.decode(text), kept


def test_every_answer_is_the_routed_handlers(small: Client, taken: list[str]) -> None:
    for name, (headers, body) in _cases(small.keys).items():
        fast = _answer(small.client.post(FAST, content=body(), headers=headers))
        routed = _answer(small.client.post(ROUTED, content=body(), headers=headers))
        assert fast == routed, name
    assert taken and set(taken) == {FAST}  # the fast path took /v1/events, never /v1/events/


def test_a_refused_batch_is_kept_with_its_reason(small: Client, taken: list[str], ch,
                                                 flush) -> None:
    answer = small.client.post(FAST, content=b'{"events": [}', headers={
        **small.keys["ingest"], "Content-Type": "application/json"})
    assert answer.status_code == 400 and taken == [FAST]
    batch_id = _BATCH_ID.search(answer.json()["detail"]).group(0)
    flush()
    rows = ch.query("SELECT reason, raw FROM rejected_events WHERE batch_id = {b:String}",
                    parameters={"b": batch_id}).result_rows
    assert rows == [("undecodable_body", '{"events": [}')]


def test_a_retry_gets_the_first_answer(small: Client, taken: list[str]) -> None:
    headers = {**small.keys["ingest"], "Content-Type": "application/json",
               "Idempotency-Key": uuid.uuid4().hex}
    body = msgspec.json.encode(batch(_events(3)))
    first = small.client.post(FAST, content=body, headers=headers)
    again = small.client.post(FAST, content=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() and first.json()["accepted"] == 3
    other = small.client.post(FAST, content=msgspec.json.encode(batch(_events(1))),
                              headers=headers)
    assert other.status_code == 422 and other.json()["error"] == "idempotency_key_reused"
    assert taken == [FAST] * 3


def test_a_client_request_id_is_kept(small: Client) -> None:
    answer = small.client.post(FAST, content=msgspec.json.encode(batch(_events(1))), headers={
        **small.keys["ingest"], "Content-Type": "application/json", "X-Request-Id": "trace-1"})
    assert answer.status_code == 200 and answer.headers["x-request-id"] == "trace-1"


def test_other_methods_are_routed(small: Client, taken: list[str]) -> None:
    assert small.client.get(FAST, headers=small.keys["ingest"]).status_code == 405
    assert taken == []
