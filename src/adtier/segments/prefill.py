"""A shared build pass's new Valkey sets, filled chunk by chunk while the pass runs."""

from __future__ import annotations

import secrets
from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa
import redis

from adtier.logs import get_logger
from adtier.segments import store
from adtier.segments.build_lock import LOCK_SECONDS
from adtier.segments.valkey_bulk import add_to_set

__all__ = ["Prefill"]

log = get_logger("adtier.segments")


class Prefill:
    """The new Valkey sets of a shared pass's rule segments, filled while the pass runs.

    Valkey spends ~1 µs of its one thread per member added (6.1M members: 6-8 CPU s), which
    took most of a build's write phase; filled chunk by chunk it overlaps ClickHouse's reads
    and the kernels. Each set is filled under a private key (no version is known before the
    segment's lock is taken), which expires in case the build dies; once the build has its
    version the key is renamed to it (O(1), time to live removed) on the same thread, after
    every fill. Keys never renamed (a failed or busy build) are unlinked by ``discard``."""

    def __init__(self, r: redis.Redis, pool: ThreadPoolExecutor, segment_ids: list[str]):
        token = secrets.token_hex(8)
        self.r, self.pool = r, pool
        self.keys = {sid: f"adtier:{{seg}}:fill:{sid}:{token}" for sid in segment_ids}
        self.jobs: dict[str, list[Future]] = {sid: [] for sid in segment_ids}

    def add(self, segment_id: str, ids: pa.Array) -> None:
        if len(ids):
            self.jobs[segment_id].append(self.pool.submit(
                add_to_set, self.r, self.keys[segment_id], ids, LOCK_SECONDS))

    def filling(self, segment_id: str) -> bool:
        return segment_id in self.jobs

    def move(self, segment_id: str, version: int) -> Future:
        """The set becomes ``version``'s, once every fill is done; a failed fill fails it."""
        jobs = self.jobs.pop(segment_id)
        return self.pool.submit(self._move, jobs, self.keys[segment_id],
                                store.member_key(segment_id, version))

    def _move(self, jobs: list[Future], source: str, key: str) -> None:
        for job in jobs:  # done already: one thread, in order
            job.result()
        store.move_set(self.r, source, key)

    def discard(self) -> None:
        """Unlink the keys not renamed (call once the pool is done)."""
        try:
            self.r.unlink(*self.keys.values())
        except Exception as err:  # noqa: BLE001 - they expire anyway
            log.warning("segment_fill_discard_failed", error=str(err)[:300])
