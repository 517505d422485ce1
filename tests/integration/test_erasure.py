"""Erasure reaches every copy of a profile: its events and its segment memberships, at once."""

from __future__ import annotations

from tests.helpers import ad_event, batch
from tests.integration.conftest import count
from tests.integration.test_segments_http import build, create, members


def test_erased_profile_leaves_events_and_built_segments(api, flush, ch):
    events = [ad_event(profile_id=p) for p in ("pf-keep", "pf-gone", "pf-gone")]
    assert api.post_events(batch(events)).json()["accepted"] == 3
    flush()
    seg = create(api, {"name": "crm", "kind": "static", "profile_ids": ["pf-keep", "pf-gone"]})
    built = build(api, seg["segment_id"])
    assert members(ch, built) == {"pf-keep", "pf-gone"}

    erased = api.client.delete("/v1/privacy/profiles/pf-gone", headers=api.admin)
    assert erased.status_code == 202

    assert count(ch, "ad_events", "profile_id = 'pf-gone'") == 0
    assert count(ch, "ad_events", "profile_id = 'pf-keep'") == 1
    assert members(ch, built) == {"pf-keep"}
    looked_up = api.client.get("/v1/profiles/pf-gone/segments", headers=api.admin).json()
    assert looked_up["segments"] == []
    kept = api.client.get("/v1/profiles/pf-keep/segments", headers=api.admin).json()
    assert kept["segments"] == [seg["segment_id"]]
