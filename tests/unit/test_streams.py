"""Streamed bodies through a real Litestar app: a body that fails half-way must abort the
response, never end as a clean, short 200 (what Litestar does with a ValueError)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar import Litestar, get
from litestar.exceptions import LitestarException
from litestar.response import Stream
from litestar.testing import TestClient

from adtier.streams import StreamFailed, fail_loudly


def _half_then(error: Exception) -> Iterator[bytes]:
    yield b"first half;"
    raise error


def _app(guarded: bool, error: Exception) -> Litestar:
    @get("/body")
    def body() -> Stream:
        chunks = _half_then(error)
        return Stream(fail_loudly(chunks) if guarded else chunks)

    return Litestar([body])


def test_unguarded_value_error_ends_as_a_short_200() -> None:
    """The hazard itself, so a Litestar change that fixes it shows up here."""
    with TestClient(_app(False, ValueError("bad Arrow message"))) as client:
        got = client.get("/body")
    assert (got.status_code, got.content) == (200, b"first half;")


@pytest.mark.parametrize("error", [ValueError("bad Arrow message"), OSError("socket"),
                                   KeyError("x")])
def test_a_guarded_body_that_fails_half_way_aborts(error: Exception) -> None:
    """The server aborts the response it had started (the test client reports it so)."""
    with TestClient(_app(True, error)) as client, \
            pytest.raises(LitestarException, match="after response started"):
        client.get("/body")


def test_the_guard_names_the_cause() -> None:
    error = ValueError("bad Arrow message")
    with pytest.raises(StreamFailed, match="half-way: bad Arrow message") as failed:
        list(fail_loudly(_half_then(error)))
    assert failed.value.__cause__ is error


def test_a_guarded_body_passes_every_chunk() -> None:
    assert list(fail_loudly(iter([b"a", b"b"]))) == [b"a", b"b"]
