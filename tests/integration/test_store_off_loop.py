"""The one thread hop of the route modules (``state.off_loop``): a ClickHouse call runs off the
event loop; a store failure answers 503 with Retry-After, anything else is not disguised."""

from __future__ import annotations

import anyio
import pytest

from adtier.api_error import ApiError
from adtier.state import off_loop


def test_a_store_call_answers_its_rows(ch) -> None:
    async def main():
        return await off_loop("measure", lambda c: c.query("SELECT 41 + 1").result_rows, ch)

    assert anyio.run(main) == [(42,)]


def test_a_clickhouse_failure_answers_503_with_retry_after(ch) -> None:
    async def main():
        await off_loop("catalog", lambda: ch.query("SELECT * FROM no_such_table_anywhere"))

    with pytest.raises(ApiError) as caught:
        anyio.run(main)
    assert caught.value.status == 503
    assert caught.value.code == "store_unavailable"
    assert caught.value.headers == {"Retry-After": "5"}


def test_a_bug_is_not_answered_as_a_store_failure() -> None:
    def broken():
        raise ValueError("a bug, not the store")

    async def main():
        await off_loop("segments", broken)

    with pytest.raises(ValueError, match="a bug"):
        anyio.run(main)
