"""The one thread hop of the route modules (``state.off_loop``): a store call runs off the
event loop; a store failure reaches the app's exception handlers unchanged (they answer 503
with Retry-After: tests/integration/test_store_errors.py), and so does anything else, so a bug
is not disguised as a store failure."""

from __future__ import annotations

import anyio
import pytest
from clickhouse_connect.driver.exceptions import ClickHouseError

from adtier.errors import exception_handlers
from adtier.state import off_loop


def test_a_store_call_answers_its_rows(ch) -> None:
    async def main():
        return await off_loop(lambda c: c.query("SELECT 41 + 1").result_rows, ch)

    assert anyio.run(main) == [(42,)]


def test_a_clickhouse_failure_reaches_the_store_handler(ch) -> None:
    async def main():
        await off_loop(lambda: ch.query("SELECT * FROM no_such_table_anywhere"))

    with pytest.raises(ClickHouseError) as caught:
        anyio.run(main)
    # the handler the app answers it with: 503 store_unavailable, Retry-After
    handler = next(h for t, h in exception_handlers.items() if isinstance(caught.value, t)
                   and t is not Exception)
    assert handler is exception_handlers[ClickHouseError]


def test_a_bug_is_not_answered_as_a_store_failure() -> None:
    def broken():
        raise ValueError("a bug, not the store")

    async def main():
        await off_loop(broken)

    with pytest.raises(ValueError, match="a bug"):
        anyio.run(main)
