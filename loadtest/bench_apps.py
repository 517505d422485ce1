"""Baseline servers for ``bench_ingest.py``, on the same stack as adtier (granian + Litestar).

* ``ceiling_app``: ``POST /v1/events`` reads the body and answers 204. Nothing else: the most
  this stack can take in on one worker. ``GET /v1/px`` answers the 1x1 GIF and records nothing.
* ``naive_app``: ``POST /v1/events`` decodes the batch with msgspec and inserts it into
  ClickHouse (chdb through clickhouse-connect) in the request, off the event loop, with no
  buffer. Answers once the rows are in the table. ``GET /count`` says how many rows are stored.

Start one the way ``adtier serve`` starts (granian's ``Server``, ASGI, one worker, factory)::

    python -m loadtest.bench_apps ceiling --port 18001
    BENCH_NAIVE_DIR=/tmp/x python -m loadtest.bench_apps naive --port 18002

or with the granian command line::

    granian --interface asgi --factory loadtest.bench_apps:ceiling_app
"""

from __future__ import annotations

import argparse
import base64
import os
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
from litestar import Litestar, Request, Response, get, post

__all__ = ["ceiling_app", "naive_app", "main"]

# The same request size limit as adtier (Settings.max_body_bytes).
MAX_BODY_BYTES = 8 * 1024 * 1024


@get("/readyz", sync_to_thread=False)
def readyz() -> dict[str, str]:
    return {"status": "ready"}


# ---- ceiling ---------------------------------------------------------------------------------
@post("/v1/events", status_code=204)
async def ceiling_events(request: Request) -> None:
    await request.body()


_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_GIF_HEADERS = {"Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
                "Pragma": "no-cache"}


@get("/v1/px")
async def ceiling_pixel(request: Request) -> Response:
    """The pixel answer alone: read the query, answer the 1x1 GIF, record nothing."""
    dict(request.query_params.items())
    return Response(_GIF, media_type="image/gif", headers=_GIF_HEADERS)


def ceiling_app() -> Litestar:
    return Litestar(route_handlers=[readyz, ceiling_events, ceiling_pixel],
                    request_max_body_size=MAX_BODY_BYTES, openapi_config=None)


# ---- naive -----------------------------------------------------------------------------------
class NaiveEvent(msgspec.Struct):
    type: str
    event_id: uuid.UUID
    ts: int
    account_id: str
    profile_id: str
    device: str
    country: str
    campaign_id: str
    creative_id: str
    ad_serving_id: str
    session_id: str = ""


class NaiveBatch(msgspec.Struct):
    events: list[NaiveEvent]
    sent_at: int | None = None


_DECODER = msgspec.json.Decoder(NaiveBatch)
_COLUMNS = ["event_id", "type", "ts", "account_id", "profile_id", "session_id", "device",
            "country", "campaign_id", "creative_id", "ad_serving_id"]
_DDL = """
CREATE TABLE IF NOT EXISTS naive_events
(
    event_id      UUID,
    type          LowCardinality(String),
    ts            DateTime64(3, 'UTC'),
    account_id    String,
    profile_id    String,
    session_id    String,
    device        LowCardinality(String),
    country       LowCardinality(String),
    campaign_id   LowCardinality(String),
    creative_id   LowCardinality(String),
    ad_serving_id String
)
ENGINE = MergeTree
ORDER BY (campaign_id, ts)
"""


class _Clients:
    """One clickhouse-connect client per thread (chdb clients on one path share the engine)."""

    def __init__(self, dsn: str):
        import clickhouse_connect

        self._connect = lambda: clickhouse_connect.get_client(dsn=dsn)
        self._local = threading.local()
        self._all = []
        self._lock = threading.Lock()

    def get(self):
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._connect()
            with self._lock:
                self._all.append(client)
        return client

    def close(self) -> None:
        for client in self._all:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - best effort
                pass


def naive_app() -> Litestar:
    import anyio.to_thread

    data_dir = os.environ.get("BENCH_NAIVE_DIR") or tempfile.mkdtemp(prefix="bench-naive-")
    os.makedirs(os.path.join(data_dir, "ch"), exist_ok=True)
    clients = _Clients(f"chdb://{os.path.abspath(os.path.join(data_dir, 'ch'))}")

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(lambda: clients.get().command(_DDL))
        try:
            yield
        finally:
            clients.close()

    def insert(rows: list[tuple]) -> None:
        clients.get().insert("naive_events", rows, column_names=_COLUMNS)

    @post("/v1/events", status_code=200)
    async def naive_events(request: Request) -> dict[str, int]:
        batch = _DECODER.decode(await request.body())
        rows = [(e.event_id, e.type, e.ts, e.account_id, e.profile_id, e.session_id, e.device,
                 e.country, e.campaign_id, e.creative_id, e.ad_serving_id) for e in batch.events]
        await anyio.to_thread.run_sync(insert, rows)
        return {"accepted": len(rows), "duplicates": 0}

    @get("/count")
    async def count() -> dict[str, int]:
        n = await anyio.to_thread.run_sync(
            lambda: clients.get().query("SELECT count() FROM naive_events").result_rows[0][0])
        return {"rows": int(n)}

    return Litestar(route_handlers=[readyz, naive_events, count], lifespan=[lifespan],
                    request_max_body_size=MAX_BODY_BYTES, openapi_config=None)


# ---- launcher --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    from granian.constants import Interfaces
    from granian.server import Server

    parser = argparse.ArgumentParser(description="run a bench baseline app like `adtier serve`")
    parser.add_argument("app", choices=["ceiling", "naive"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18000)
    args = parser.parse_args(argv)
    # The same granian settings as adtier.cli.cmd_serve.
    Server(
        f"loadtest.bench_apps:{args.app}_app",
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGI,
        workers=1,
        factory=True,
        log_access=False,
        backlog=2048,
    ).serve()


if __name__ == "__main__":
    main()
