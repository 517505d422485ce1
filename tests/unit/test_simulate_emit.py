"""What leaves the simulator: JSON events and pixels the API accepts, Arrow rows like the tables."""

from __future__ import annotations

import datetime as dt
import uuid
from urllib.parse import parse_qsl

import msgspec
import numpy as np
import pyarrow as pa
import pytest

from adtier.events import DECODERS, AdEvent
from adtier.ingest.pixel import pixel_event
from adtier.simulate import emit
from adtier.simulate import params as P
from adtier.simulate.sessions import ChunkState, simulate_day
from adtier.simulate.world import build_world


@pytest.fixture(scope="module")
def world_block():
    world = build_world(3, 1_500, 2, dt.date(2026, 11, 1))
    state = ChunkState(0, 0, world.n_profiles, len(world.catalog.campaign_ids))
    simulate_day(world, state, 0)
    return world, simulate_day(world, state, 1)


def _rows(array: pa.Array) -> list[bytes]:
    return [row[:-1].encode() for row in array.to_pylist()]  # drop the trailing comma


def test_every_generated_event_validates_and_matches_the_arrays(world_block):
    world, block = world_block
    ads = _rows(emit.ad_json(world, block))
    views = _rows(emit.content_json(world, block))
    assert len(ads) == len(block.ad) and len(views) == len(block.content)
    decoded = [DECODERS.json_event.decode(raw) for raw in ads + views]
    types = [e.__struct_config__.tag for e in decoded]
    assert types == [P.EVENT_TYPES[t] for t in np.r_[block.ad.type, block.content.type]]
    ids = [e.event_id for e in decoded]
    assert ids == [uuid.UUID(bytes=row.tobytes()) for row in block.event_ids]
    a = block.ad
    for i in range(0, len(block.ad), 97):
        e = decoded[i]
        assert isinstance(e, AdEvent)
        assert e.ts == a.ts[i] and e.ad_playhead_ms == a.playhead[i]
        assert e.profile_id == world.profile_id(int(a.profile[i]))
        assert e.account_id == world.account_id(int(world.account[a.profile[i]]))
        assert e.campaign_id == world.catalog.campaign_ids[a.campaign[i]]
        assert e.break_position == ("pre" if a.break_pre[i] else "mid")
        assert getattr(e, "error_code", 0) == a.error_code[i]


def test_batches_are_ordered_by_session_and_time(world_block):
    world, block = world_block
    rows, pixels = emit.block_json(world, block, pixel_permille=100)
    assert 0 < pixels.sum() < len(block.ad)
    assert len(rows) == len(block.ad) - pixels.sum() + len(block.content)
    body = b'{"events":[' + b"".join(r.encode() for r in rows.to_pylist())[:-1] + b"]}"
    batch = DECODERS.json_batch.decode(body)
    events = [DECODERS.json_event.decode(r) for r in batch.events]
    keys = [(e.session_id, e.ts) for e in events]
    assert keys == sorted(keys)


def test_pixel_queries_become_the_same_events(world_block):
    world, block = world_block
    mask = emit.pixel_mask(block, 200)
    queries = emit.pixel_queries(world, block, mask).to_pylist()
    assert len(queries) == mask.sum()
    seen = set()
    a = block.ad
    by_play = {(f"{int(s):016x}", P.EVENT_TYPES[t], int(ph)) for s, t, ph in
               zip(a.ad_serving[mask], a.type[mask], a.playhead[mask])}
    for query in queries:
        params = dict(parse_qsl(query))
        event = DECODERS.json_event.decode(msgspec.json.encode(pixel_event(params, 0)))
        tag = event.__struct_config__.tag
        assert (event.ad_serving_id, tag, event.ad_playhead_ms) in by_play
        seen.add(event.event_id)
    assert len(seen) == len(queries), "each pixel is a distinct event for the server"


def test_arrow_tables_have_the_table_columns(world_block):
    world, block = world_block
    ad = emit.ad_table(world, block, "b1")
    content = emit.content_table(world, block, "b1")
    assert ad.num_rows == len(block.ad) and content.num_rows == len(block.content)
    assert {"event_id", "type", "ts", "campaign_id", "ad_serving_id", "error_code",
            "source", "batch_id"} <= set(ad.column_names)
    assert {"content_id", "position_ms", "watched_ms", "value"} <= set(content.column_names)
    assert ad["error_code"].null_count == int((block.ad.error_code == 0).sum())
    assert content["value"].null_count == int((block.content.value == 0).sum())
    assert ad["profile_id"][0].as_py() == world.profile_id(int(block.ad.profile[0]))
