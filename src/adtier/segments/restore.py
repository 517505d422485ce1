"""Rebuilding the Valkey look-up state (member sets and the live pointer) from ClickHouse,
which is the record, when Valkey was emptied or replaced: at start-up when the live hash is
missing, and from ``adtier segments restore``."""

from __future__ import annotations

import redis
from clickhouse_connect.driver.client import Client

from adtier.logs import get_logger
from adtier.segments import store
from adtier.segments.build_lock import acquire, release
from adtier.segments.members import Progress

__all__ = ["restore_redis"]

log = get_logger("adtier.segments")


def restore_redis(client: Client, r: redis.Redis, *, only_if_missing: bool = False,
                  progress: Progress | None = None) -> dict[str, int]:
    """Rebuild the Valkey look-up state from ClickHouse: for every segment with a served
    version, its member set and its entry in the live hash. Answers {segment_id: members}.

    ClickHouse is the record; Valkey holds a copy for fast look-ups, so when Valkey is replaced
    or emptied (no AOF, a new node) the sets are reloaded from ``segment_members``.
    ``only_if_missing`` (start-up): do nothing if the live hash exists. Each segment is
    restored under its build lock (a build running now is skipped: it writes its own set), and
    its row is re-read under the lock so the version restored is the one served."""
    store.drop_untagged(r)
    if only_if_missing and r.exists(store.LIVE):
        return {}
    rows = [row for row in store.list_segments(client) if row.version > 0]
    done: dict[str, int] = {}
    for i, listed in enumerate(rows):
        token = acquire(r, listed.segment_id)
        if token is None:
            log.warning("segment_restore_skipped_busy", segment_id=listed.segment_id)
            continue
        try:
            row = store.get_segment(client, listed.segment_id) or listed
            done[row.segment_id] = store.restore_set(client, r, row.segment_id, row.version,
                                                     row.owner)
        finally:
            release(r, listed.segment_id, token)
        if progress:
            progress(i + 1, len(rows))
    log.info("segments_restored", segments=len(done), members=sum(done.values()))
    return done
