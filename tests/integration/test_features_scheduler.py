"""Batch computations inside `adtier serve`: one at a time, every interval, from the lifespan."""

from __future__ import annotations

import msgspec
from litestar.testing import TestClient

from adtier.app import create_app
from adtier.features.scheduler import ComputeRunner, FeatureScheduler
from tests.conftest import wait_until
from tests.integration.conftest import count
from tests.integration.test_features_http import ad_play, seed, send


def test_one_computation_at_a_time_and_once_per_interval(api, flush, ch, rds):
    seed(api)
    send(api, ad_play("pf-1", "as-1"))
    flush()
    runner = ComputeRunner()
    dsn = api.settings.clickhouse_dsn
    scheduler = FeatureScheduler(dsn, rds, interval_s=3600, runner=runner)
    due = scheduler.next_compute
    assert scheduler.tick(now=due - 1) in ("idle", "rebuilt")  # not due yet
    assert runner.try_start("someone else") is not None  # e.g. POST /v1/features/compute
    assert scheduler.tick(now=due) == "busy"
    assert count(ch, "profile_features") == 0
    runner.status = msgspec.structs.replace(runner.status, running=False)  # it finished
    assert scheduler.tick(now=due) == "computed"
    assert count(ch, "profile_features") == 1
    assert runner.status.last.written == 1 and runner.status.by == "scheduler"
    assert count(ch, "audit_log", "endpoint = 'features_compute' AND key_id = 'scheduler'") == 1
    # another worker on the same Valkey, due at the same time: this interval is taken
    other = FeatureScheduler(dsn, rds, interval_s=3600, runner=ComputeRunner())
    assert other.tick(now=other.next_compute) == "busy"
    assert count(ch, "audit_log", "endpoint = 'features_compute'") == 1
    assert scheduler.tick(now=due + 1) in ("idle", "rebuilt")  # next one an interval later


def test_serve_computes_periodically(settings, flush, ch, rds):
    fast = msgspec.structs.replace(settings, features_compute_interval_s=0.3)
    with TestClient(create_app(fast)) as client:
        admin = {"Authorization": f"Bearer {fast.admin_key}"}
        from tests.integration.conftest import Api

        api = Api(client, fast)
        seed(api)
        send(api, ad_play("pf-1", "as-1"))
        flush()
        wait_until(lambda: count(ch, "profile_features") == 1)
        status = wait_until(lambda: (s := client.get("/v1/features/compute",
                                                     headers=admin).json())
                            and s["last"] and s)
        assert status["error"] is None
        body = wait_until(lambda: (r := client.get("/v1/features/profiles/pf-1", headers=admin))
                          .status_code == 200 and r.json()["batch"] and r.json())
        assert body["batch"]["impressions"] == 1
