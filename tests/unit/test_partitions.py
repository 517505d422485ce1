"""Buffer partitions: key groups on one slot each, spread over the slot space; stable routing."""

from __future__ import annotations

import uuid

from redis.crc import key_slot

from adtier.ingest.partitions import LEGACY, BufferLayout, layout_for
from adtier.ingest.service import new_batch_id


def test_one_partition_on_one_server_keeps_the_historical_names():
    assert layout_for(1, cluster=False) is LEGACY
    p = LEGACY.partitions[0]
    assert (p.stream, p.buffered, p.dedup_set(20000), p.plan_key("c")) == (
        "adtier:events", "adtier:buffered", "adtier:dd:20000", "adtier:plan:c")
    assert LEGACY.batch_key("b1") == "adtier:batch:b1"
    assert LEGACY.idempotency_key("k", "i") == "adtier:idem:k:i"


def test_every_key_of_a_partition_is_on_one_slot_in_its_share_of_the_slots():
    for count in (1, 3, 6, 16):
        layout = layout_for(count, cluster=True)
        for p in layout.partitions:
            keys = [p.stream, p.buffered, p.dedup_set(20000), p.plan_key("host-1"),
                    p.batch_key("b1"), p.idempotency_key("key", "idem")]
            slots = {key_slot(k.encode()) for k in keys}
            assert len(slots) == 1, keys
            slot = slots.pop()
            assert p.index * 16384 // count <= slot < (p.index + 1) * 16384 // count


def test_an_event_always_routes_to_the_same_partition():
    layout, again = BufferLayout(6), BufferLayout(6)
    ids = [uuid.uuid4().bytes for _ in range(600)]
    routed = [layout.of_event(i) for i in ids]
    assert routed == [again.of_event(i) for i in ids]
    assert set(routed) == set(range(6))  # and spreads over all of them


def test_a_batch_id_is_drawn_in_its_idempotency_keys_partition():
    layout = BufferLayout(6)
    for n in range(20):
        home = layout.of_idempotency("key_1", f"idem-{n}")
        batch_id = new_batch_id(1_700_000_000_000, layout, home.index)
        assert layout.of_batch(batch_id) == home
        assert layout.batch_key(batch_id).startswith(home.prefix)
