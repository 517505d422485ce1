"""One way to open ClickHouse: clickhouse-connect, from a DSN (``chdb://...`` or ``http://...``)."""

from __future__ import annotations

from pathlib import Path

import clickhouse_connect
from clickhouse_connect.driver.client import Client

__all__ = ["connect", "Client"]


def connect(dsn: str) -> Client:
    """A sync client. chdb clients share one in-process engine per path; each owns a handle."""
    if dsn.startswith("chdb:"):
        path = dsn.removeprefix("chdb://")
        if path.startswith("/"):
            Path(path).mkdir(parents=True, exist_ok=True)
    return clickhouse_connect.get_client(dsn=dsn)
