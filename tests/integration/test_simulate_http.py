"""HTTP mode against the real app: catalog via the admin API, batches and pixels via ingest;
deliberate re-sends are counted as duplicates, and what is stored equals the truth."""

from __future__ import annotations

import datetime as dt

from adtier.simulate.http_mode import HttpOptions, load_catalog_http, run_http
from adtier.simulate.truth import TruthRecorder
from adtier.simulate.world import build_world, default_start
from tests.integration.conftest import count


def test_http_mode_stores_exactly_the_truth(api, flush, ch):
    # inside the retention window the server enforces
    world = build_world(8, 400, 3, default_start(3))
    loaded = load_catalog_http(api.client, world, api.settings.admin_key)
    assert loaded["campaigns"] == len(world.catalog.campaigns)
    assert loaded["profiles"] == 400 and loaded["opt_outs"] == int(world.opted_out.sum())

    recorder = TruthRecorder(world)
    options = HttpOptions(batch_size=300, pixel_permille=80, replay_percent=15,
                          requeue_percent=20, refire_percent=10, concurrency=1)
    result = run_http(world, api.client, api.ingest_key, options, recorder)
    truth = recorder.finish()

    assert result.rejected == 0, result.rejections
    assert result.events == truth.n_events
    assert result.requeued_events > 0 and result.replays > 0 and result.refired_pixels > 0
    # every re-queued event, and only those, came back as a duplicate
    assert result.duplicates == result.requeue_duplicates == result.requeued_events
    assert result.accepted == result.batch_events
    # a replay with the same Idempotency-Key got the first answer again
    assert result.replay_mismatches == 0

    flush()
    assert count(ch, "ad_events") == truth.n_ad_events
    assert count(ch, "content_events") == truth.n_content_events
    assert count(ch, "ad_events", "source = 'pixel'") == result.pixel_events
    stored = dict(ch.query(
        "SELECT type, count() FROM (SELECT type FROM ad_events UNION ALL "
        "SELECT type FROM content_events) GROUP BY type").result_rows)
    assert stored == truth.events_by_type
    assert count(ch, "rejected_events") == 0
    # catalog tables hold the world
    assert count(ch, "campaigns FINAL") == len(world.catalog.campaigns)
    assert count(ch, "profiles FINAL", "kind = 'kids'") == int(world.kids.sum())
    assert count(ch, "privacy_optouts") == int(world.opted_out.sum())
    # reach per campaign in the store equals the true reach
    reach = dict(ch.query("SELECT campaign_id, uniqExact(profile_id) FROM ad_events "
                          "WHERE type = 'impression' GROUP BY campaign_id").result_rows)
    true_reach = dict(zip(truth.campaigns["campaign_id"].to_pylist(),
                          truth.campaigns["reach"].to_pylist()))
    assert reach == {c: r for c, r in true_reach.items() if r}
    last = api.client.get(f"/v1/ingest/batches/{result.last_batch_id}", headers=api.ingest)
    assert last.status_code == 200 and last.json()["state"] == "stored"
    assert dt.date.fromisoformat(truth.summary["start"]) == world.start
