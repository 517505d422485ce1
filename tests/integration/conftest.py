from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from litestar.testing import TestClient

from adtier.app import create_app
from adtier.features.live import LiveCounters
from adtier.ingest.flusher import Flusher
from adtier.settings import Settings
from adtier.store import connect


class Api:
    """A test client with the admin key and an ingest key ready."""

    def __init__(self, client: TestClient, settings: Settings):
        self.client = client
        self.settings = settings
        self.admin = {"Authorization": f"Bearer {settings.admin_key}"}
        created = client.post("/v1/keys", json={"role": "ingest", "name": "test"}, headers=self.admin)
        assert created.status_code == 201, created.text
        self.ingest_key = created.json()["key"]
        self.ingest_key_id = created.json()["key_id"]
        self.ingest = {"Authorization": f"Bearer {self.ingest_key}"}

    def post_events(self, body: object, headers: dict[str, str] | None = None, **kw):
        return self.client.post("/v1/events", json=body, headers={**self.ingest, **(headers or {})}, **kw)


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    with TestClient(create_app(settings)) as client:
        yield Api(client, settings)


@pytest.fixture
def flush(settings: Settings, ch, rds: redis.Redis):
    """Run a flusher until the buffer is empty (the in-app flusher is off in these tests)."""
    client = connect(settings.clickhouse_dsn)
    flusher = Flusher(client, rds, consumer="test-flusher", max_rows=50_000, max_seconds=0.2,
                      on_stored=LiveCounters(rds, client).on_stored)  # as the app subscribes

    def run() -> Flusher:
        flusher.drain()
        return flusher

    yield run
    client.close()


def count(ch, table: str, where: str = "1", parameters: dict | None = None) -> int:
    return ch.query(f"SELECT count() FROM {table} WHERE {where}", parameters=parameters or {}).result_rows[0][0]


def load_world(ch, seed: int, profiles: int, days: int, rds=None):
    """A simulated world of ``days`` days ending yesterday, its catalog and events stored
    straight into ClickHouse (the rollup views fill as in production). With a Valkey client
    the events take profile ordinals as the flusher's do (the report's bitmap cells)."""
    import datetime as dt
    import uuid

    from adtier.simulate.direct import load_catalog_direct, run_direct
    from adtier.simulate.world import build_world

    start = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=days + 1)
    world = build_world(seed, profiles, days, start)
    load_catalog_direct(ch, world)
    from adtier.ingest.ordinals import Ordinals

    ordinals = Ordinals(rds, ch) if rds is not None else None
    run_direct(world, ch, tag=uuid.uuid4().hex[:8], ordinals=ordinals)
    return world
