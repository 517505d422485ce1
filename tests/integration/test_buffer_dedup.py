"""The append script's duplicate marks against a model: an event is a duplicate iff its id was
appended before (in this batch, an earlier one, or a day-set of the window), whatever mix of
new, repeated and old ids a batch holds. Real Valkey, the script as the server calls it."""

from __future__ import annotations

import asyncio
import random
import time

import redis.asyncio as aredis

from adtier.ingest.buffer import BatchRecord, IngestBuffer
from adtier.ingest.partitions import LEGACY


def _record(batch_id: str, n: int) -> BatchRecord:
    return BatchRecord(batch_id, "k", "batch", int(time.time() * 1000), None, "", n, n, n)


def _id(number: int) -> bytes:
    return number.to_bytes(16, "big")


async def _append(buffer: IngestBuffer, batch_id: str, numbers: list[int]) -> bytes:
    ids = b"".join(_id(n) for n in numbers)
    rows = b'{"x":1}\n' * len(numbers)
    got = await buffer.append(_record(batch_id, len(numbers)), ids, rows, b"", b"")
    assert got.status == "ok"
    assert got.duplicates == got.bitmap.count(b"1")
    return got.bitmap


def test_marks_match_a_model_of_every_mix(settings, rds):
    rng = random.Random(18)

    async def run() -> None:
        client = aredis.Redis.from_url(settings.redis_url)
        buffer = IngestBuffer(client, 0, 24, 3600)
        seen: set[int] = set()
        sizes = [1, 2, 5, 40, 300, 2500, 4100]  # across the script's 2,000-id chunks
        for round_ in range(24):
            size = sizes[round_ % len(sizes)]
            kind = round_ % 4
            if kind == 0:  # all new and distinct (the usual batch)
                numbers = [rng.randrange(10**12) for _ in range(size)]
            elif kind == 1:  # repeats inside the batch only
                base = [rng.randrange(10**12) for _ in range(max(1, size // 3))]
                numbers = [rng.choice(base) for _ in range(size)]
            elif kind == 2:  # some seen before, some new, some repeated
                old = list(seen) or [1]
                numbers = [rng.choice(old) if rng.random() < 0.3 else rng.randrange(50_000)
                           for _ in range(size)]
            else:  # a whole retried batch
                numbers = rng.sample(sorted(seen), min(size, len(seen))) or [2]
            expected = []
            for n in numbers:
                expected.append("1" if n in seen else "0")
                seen.add(n)
            assert await _append(buffer, f"b{round_}", numbers) == "".join(expected).encode()
        await client.aclose()

    asyncio.run(run())


def test_an_id_in_the_previous_day_set_is_a_duplicate(settings, rds):
    """The window spans today's set and the earlier days' (dedup_window_hours): an id the
    previous day's set holds is a duplicate today, in any position of any batch."""
    day = int(rds.time()[0]) // 86_400
    rds.sadd(LEGACY.partitions[0].dedup_set(day - 1), _id(7), _id(9))

    async def run() -> None:
        client = aredis.Redis.from_url(settings.redis_url)
        buffer = IngestBuffer(client, 0, 24, 3600)
        assert await _append(buffer, "b-old", [5, 7, 6, 9, 5]) == b"01011"
        assert await _append(buffer, "b-all-old", [9, 7]) == b"11"
        assert await _append(buffer, "b-again", [6, 8, 8]) == b"101"
        await client.aclose()

    asyncio.run(run())


def test_a_duplicate_from_an_earlier_day_renews_its_window(settings, rds):
    """An id found in an earlier day's set is added to today's set too: its window runs from
    its latest copy, so a client that retries the same event day after day keeps getting
    "duplicate" for as long as it retries, not only for the window after the first copy."""
    day = int(rds.time()[0]) // 86_400
    partition = LEGACY.partitions[0]
    rds.sadd(partition.dedup_set(day - 1), _id(7))

    async def run() -> None:
        client = aredis.Redis.from_url(settings.redis_url)
        buffer = IngestBuffer(client, 0, 24, 3600)
        assert await _append(buffer, "b-retry", [7, 3]) == b"10"
        await client.aclose()

    asyncio.run(run())
    assert rds.smismember(partition.dedup_set(day), [_id(7), _id(3)]) == [1, 1]
