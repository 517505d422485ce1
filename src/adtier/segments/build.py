"""Building a segment: features -> kernels -> members -> a new version, swapped in atomically.

``build_segment`` runs one build (sync; the API runs it in a background thread, the CLI in the
foreground):

1. take the segment's build lock in Redis (one build of a segment at a time) and record
   ``status = building``;
2. compute the members (``members``): rule (``aggregate`` + ``kernels`` per chunk of
   profiles), lookalike (``lookalike``) or static (the uploaded list); kids', opted-out and
   erased profiles are excluded in every case;
3. write them to ``segment_members`` under a new version, fill the version's Redis set;
4. re-check the exclusions recorded since the members were computed (an erasure, opt-out or
   kids' profile recorded while the build ran) and drop those profiles from the new version in
   ClickHouse and Valkey (``drop_excluded``);
5. commit: the ``segments`` row naming the new version (ClickHouse readers switch), then the
   Redis live pointer (look-ups switch); re-check once more (an erasure recorded between the
   re-check and the swap removed the profile from the old set only); then drop versions older
   than the previous one (without waiting: no reader uses them);
6. write the build to the audit log (who, what, when, member count, SHA-256 of the members),
   ready or failed.

``build_many`` does the same for many segments with each step batched: the rule segments'
members come from one shared pass, during which one thread fills their new Valkey sets chunk
by chunk under private keys (``Prefill``: Valkey is single-threaded and one connection keeps
it busy, so this overlaps ClickHouse's reads and the kernels); their locks and ``building``
rows are then taken together, the sets renamed to their versions, their ClickHouse rows
inserted one segment after another, and the staged ones commit with one ``segments`` insert
and one ``HSET`` (all of them switch at once), then each is audited.

The build lock is ``build_lock``; the shared pass's early Valkey fill is ``prefill``;
``restore.restore_redis`` rebuilds the Redis side from ClickHouse.

A failure anywhere before the commit removes what the build staged and records
``status = failed`` with the error, keeping the previous version, size and times: readers keep
the previous membership. The commit point is the ``ready`` row in ClickHouse (the record): once
it is written the build stands, and a failure of the Valkey swap after it is logged loudly
(``segment_swap_failed``) and left for ``restore_redis`` to repair, never undone (undoing it
would leave the row naming a deleted version). Whatever fails, each build's lock is released
exactly once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import redis
from clickhouse_connect.driver.client import Client

from adtier import audit
from adtier.logs import get_logger
from adtier.segments import aggregate as A
from adtier.segments import store
from adtier.segments.build_lock import BuildBusy, acquire, release
from adtier.segments.members import (
    Members,
    Precomputed,
    Progress,
    check_tenancy,
    distinct,
    excluded_since,
    members_of,
    rule_members_hashed,
)
from adtier.segments.prefill import Prefill
from adtier.segments.rules import Node, parse_rule

__all__ = ["drop_excluded", "build_segment", "build_many", "AUDIT_ENDPOINT"]

log = get_logger("adtier.segments")
AUDIT_ENDPOINT = "segments.build"  # the audit log's `endpoint` of a build (docs/privacy.md)
# Exclusions are re-checked from a little before the build started: opt-outs and profiles
# carry the writer's clock, erasures ClickHouse's; re-checking a few extra is harmless.
CLOCK_MARGIN = dt.timedelta(seconds=60)
Hook = Callable[[], Any]


def drop_excluded(client: Client, r: redis.Redis, builds: list[_Build]) -> None:
    """Take the profiles excluded since each build computed its members out of its staged
    version, in ClickHouse and in Valkey, and out of ``b.members`` (size and audit hash
    follow).

    The members were computed against the exclusions of that moment; an erasure, opt-out or
    kids' profile recorded during the build would otherwise go live with the new version (an
    erasure's own clean-up removes the profile from the versions served, not from one being
    built)."""
    staged = [b for b in builds if b.members is not None and b.version]
    if not staged:
        return
    excluded = excluded_since(client, min(b.since for b in staged) - CLOCK_MARGIN)
    if not excluded.shape[0]:
        return
    for b in staged:
        assert b.members is not None
        hit = np.isin(b.members.hashes, excluded)
        if hit.any():
            gone = b.members.ids.filter(pa.array(hit)).to_pylist()
            store.drop_members(client, r, b.segment_id, b.version, gone)
            b.members = b.members.keep(~hit)
            log.info("segment_build_dropped_exclusions", segment_id=b.segment_id,
                     version=b.version, profiles=len(gone))


@dataclass
class _Build:
    """One build between its start (lock taken, ``building`` recorded) and its end."""

    segment_id: str
    token: str
    row: store.SegmentRow
    # when the members were (about to be) computed: exclusions recorded since are re-checked
    since: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    version: int = 0
    members: Members | None = None
    through: Any = None
    redis: Future | None = None  # the Valkey set being filled (``_stage``)
    error: BaseException | None = None


def _begin(client: Client, r: redis.Redis, segment_id: str, token: str | None) -> _Build:
    """Take the build lock (unless the caller holds it) and record ``building``."""
    if token is None:
        token = acquire(r, segment_id)
        if token is None:
            raise BuildBusy(f"segment {segment_id} is already being built")
    try:
        row = store.get_segment(client, segment_id)
        if row is None:
            raise KeyError(segment_id)
        row = store.write_state(client, row, status="building", error="")
    except BaseException:
        release(r, segment_id, token)
        raise
    return _Build(segment_id, token, row)


def _stage(client: Client, r: redis.Redis, b: _Build, chunk_profiles: int,
           progress: Progress | None, precomputed: Precomputed | None,
           source: str, pool: ThreadPoolExecutor | None,
           fill: Prefill | None = None) -> None:
    """Compute the members and write them under a new, not yet served version: the
    ClickHouse rows here, the Valkey set on ``pool`` (or here) at the same time. A failure
    is kept on ``b`` for ``_finish``."""
    try:
        if precomputed is not None:
            members, _, b.through = precomputed
        else:
            day, b.through = A.as_of(client)
            members = members_of(client, b.row, day, chunk_profiles, progress, source)
        if b.row.kind != "rule":  # rule members are distinct by construction
            members = distinct(members)
        b.members = members
        b.version = b.version or store.next_version(client, b.row)
        if fill is not None and fill.filling(b.segment_id):
            b.redis = fill.move(b.segment_id, b.version)
        else:
            b.redis = _submit_redis(r, b.segment_id, b.version, members.ids, pool)
        store.insert_members(client, b.segment_id, b.version, members.ids)
    except Exception as err:  # noqa: BLE001 - recorded on the segment by _finish
        b.error = err


def _submit_redis(r: redis.Redis, segment_id: str, version: int, ids: pa.Array,
                  pool: ThreadPoolExecutor | None) -> Future:
    """Fill the new version's set on ``pool`` (chdb and the socket both release the GIL, so
    it runs while ClickHouse inserts), or right here for a small set or without a pool."""
    if pool is not None and len(ids) >= 50_000:
        return pool.submit(store.stage_redis, r, segment_id, version, ids)
    done: Future = Future()
    try:
        store.stage_redis(r, segment_id, version, ids)
        done.set_result(None)
    except Exception as err:  # noqa: BLE001 - re-raised by _finish
        done.set_exception(err)
    return done


def _finish(client: Client, r: redis.Redis, b: _Build, by: str, role: str,
            cleanup: list[tuple[str, int]] | None,
            before_commit: Hook | None = None) -> store.SegmentRow:
    """Commit a staged build (exclusions recorded meanwhile dropped, the ``segments`` row
    naming the new version, then the Valkey live pointer), or record it as failed and drop
    what it staged; audit it; release the lock."""
    try:
        try:
            if b.redis is not None:
                b.redis.result()  # a failed fill of the set fails the build
            if b.error is not None:
                raise b.error
            if before_commit is not None:
                before_commit()
            drop_excluded(client, r, [b])  # a failure fails the build: never serve them
            assert b.members is not None
            row = store.write_state(
                client, b.row, status="ready", version=b.version, size=len(b.members.ids),
                built_at=dt.datetime.now(dt.timezone.utc), data_through=b.through, error="")
        except Exception as err:  # noqa: BLE001 - recorded on the segment, then re-checked
            return _record_failed(client, r, b, err, by, role)
        # committed: the row names the new version; a failed swap is repaired, not undone
        _swap(r, [(b.segment_id, b.version, row.owner, b.row.version)])
        _drop_late_exclusions(client, r, [b])
        if cleanup is None:
            _forget_old(client, b.segment_id, b.row.version)
        else:
            cleanup.append((b.segment_id, b.row.version))
        _audit_built(client, row, b, by, role)
        return row
    finally:
        release(r, b.segment_id, b.token)


def _record_failed(client: Client, r: redis.Redis, b: _Build, err: BaseException, by: str,
                   role: str) -> store.SegmentRow:
    """Drop what ``b`` staged and record it ``failed`` with the PREVIOUS version, size and
    times (from ``b.row``: readers keep the previous membership). A store that fails here too
    is logged; the failed row is then answered without being written (the caller still
    releases the lock and goes on with the other builds)."""
    log.warning("segment_build_failed", segment_id=b.segment_id, error=str(err)[:500])
    if b.version:
        _discard(client, r, b.segment_id, b.version)
    keep = {"status": "failed", "error": f"{type(err).__name__}: {err}"[:2000],
            "version": b.row.version, "size": b.row.size, "built_at": b.row.built_at,
            "data_through": b.row.data_through}
    try:
        failed = store.write_state(client, store.get_segment(client, b.segment_id) or b.row,
                                   **keep)
    except Exception as store_err:  # noqa: BLE001 - ClickHouse is down: logged, lock released
        log.error("segment_build_failed_unrecorded", segment_id=b.segment_id,
                  error=str(store_err)[:300])
        return msgspec.structs.replace(b.row, **keep)
    _audit(client, failed, by, role, version=0, size=0, digest=_digest(pa.array([])))
    return failed


def _swap(r: redis.Redis, swaps: list[tuple[str, int, str, int]]) -> None:
    """Switch Valkey to committed versions. The ``ready`` rows are the record, so a failure
    here does not undo the builds: it is logged loudly and ``restore_redis`` repairs Valkey."""
    try:
        store.swap_many(r, swaps)
    except Exception as err:  # noqa: BLE001 - committed in ClickHouse; Valkey is a copy
        log.error("segment_swap_failed", segments=[s for s, *_ in swaps],
                  error=str(err)[:300], hint="run `adtier segments restore`")


def _drop_late_exclusions(client: Client, r: redis.Redis, builds: list[_Build]) -> None:
    """After the swap, ``drop_excluded`` once more: an erasure recorded between the re-check
    and the swap removed the profile from the versions served then (the old ones), not from
    the new one. Committed builds stand, so a failure here is logged loudly (the sizes
    recorded may count a profile dropped here)."""
    try:
        drop_excluded(client, r, builds)
    except Exception as err:  # noqa: BLE001 - committed; the next build leaves them out
        log.error("segment_late_exclusions_failed", segments=[b.segment_id for b in builds],
                  error=str(err)[:300])


def _audit_built(client: Client, row: store.SegmentRow, b: _Build, by: str, role: str) -> None:
    """Log and audit a ready build: who, what, when, how many, and a hash of the answer
    (never the ids)."""
    assert b.members is not None
    digest = _digest(b.members.ids)
    log.info("segment_built", segment_id=b.segment_id, kind=row.kind, owner=row.owner, by=by,
             version=b.version, size=row.size, members_sha256=digest,
             data_through=str(row.data_through))
    _audit(client, row, by, role, version=b.version, size=row.size, digest=digest)


def build_segment(client: Client, r: redis.Redis, segment_id: str, *, token: str | None = None,
                  chunk_profiles: int = 200_000, progress: Progress | None = None,
                  by: str = "", precomputed: Precomputed | None = None,
                  cleanup: list[tuple[str, int]] | None = None,
                  source: str = "rollup", role: str = "",
                  since: dt.datetime | None = None,
                  before_commit: Hook | None = None) -> store.SegmentRow:
    """Build one segment now; answers its final row (ready, or failed with ``error``).

    ``token``: the build lock, when the caller took it already (the API does, to answer 409).
    ``precomputed``: (members, as-of day, data_through) from ``shared_rule_members``.
    ``cleanup``: if given, (segment, previous version) is appended to it and the caller deletes
    the versions older than the previous one (``forget_old_versions``: one DELETE for many builds).
    ``by`` / ``role``: who asked (key id and role, or "cli"), for the audit log: every build,
    ready or failed, is written there with its row count and the hash of its members.
    ``since``: when ``precomputed`` members were computed (exclusions recorded after it are
    re-checked before the commit; default: now, before computing them).
    ``before_commit``: called once the members are staged, before that re-check (tests record
    an exclusion there: the race the re-check closes).
    """
    b = _begin(client, r, segment_id, token)
    if since is not None:
        b.since = since
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="adtier-seg-redis") as pool:
            _stage(client, r, b, chunk_profiles, progress, precomputed, source, pool)
    except BaseException:
        release(r, segment_id, b.token)
        raise
    return _finish(client, r, b, by, role, cleanup, before_commit)


def _audit(client: Client, row: store.SegmentRow, by: str, role: str, *, version: int,
           size: int, digest: str) -> None:
    """One audit row per build (docs/privacy.md): who (key id and role; "cli" from the shell), what
    (segment, kind, owner, the version built, or the error), when, the row count (members)
    and the SHA-256 of the member ids (newline-joined, in the order written). Never the ids. An
    audit write that fails is logged and does not undo the build (it is already served)."""
    parameters = {"segment_id": row.segment_id, "kind": row.kind, "version": version,
                  "data_through": row.data_through, "error": row.error or None,
                  "definition_sha256": audit.sha256_hex(row.definition.encode())}
    try:
        audit.record(client, key_id=by or "unknown", role=role, advertiser_id=row.owner,
                     endpoint=AUDIT_ENDPOINT, method="BUILD", parameters=parameters,
                     status=200 if row.status == "ready" else 500, row_count=size,
                     answer_sha256=digest)
    except Exception as err:  # noqa: BLE001 - the build stands; the gap is logged loudly
        log.error("segment_audit_failed", segment_id=row.segment_id, error=str(err)[:300])


def _digest(ids: pa.Array) -> str:
    """sha256 of the member ids, newline-separated (for the audit log; never the ids)."""
    if not len(ids):
        return hashlib.sha256(b"").hexdigest()
    joined = pc.binary_join_element_wise(ids, pa.scalar("\n"), "")
    offsets = np.frombuffer(joined.buffers()[1], np.int32, len(joined) + 1, joined.offset * 4)
    data = joined.buffers()[2]
    body = memoryview(data)[int(offsets[0]):int(offsets[-1]) - 1]  # no trailing newline
    return hashlib.sha256(body).hexdigest()


def forget_old_versions(client: Client, built: list[tuple[str, int]]) -> None:
    """Delete, for each (segment, previous version) of a committed build, the versions older
    than that previously served one (not ``new - 1``: versions can skip numbers): one
    lightweight DELETE for all of them, and none when there is nothing to delete."""
    if not built:
        return
    ids = [s for s, _ in built]
    keep_from = [max(v, 0) for _, v in built]
    params = {"ids": ids, "keep": keep_from}
    where = ("version > 0 AND version < arrayElement({keep:Array(UInt64)}, "
             "indexOf({ids:Array(String)}, segment_id)) AND segment_id IN {ids:Array(String)}")
    try:
        # any row at all (a first build has none: no DELETE); the DELETE is not waited for
        # (readers never see those versions; it took ~10 s of a 1M-profile rebuild)
        stale = client.query(f"SELECT 1 FROM segment_members WHERE {where} LIMIT 1",
                             parameters=params).result_rows
        if stale:
            client.command(f"DELETE FROM segment_members WHERE {where}", parameters=params,
                           settings={"lightweight_deletes_sync": 0})
    except Exception as err:  # noqa: BLE001 - old rows are invisible to readers anyway
        log.warning("segment_cleanup_failed", segments=len(built), error=str(err)[:300])


def _discard(client: Client, r: redis.Redis, segment_id: str, version: int) -> None:
    try:
        store.drop_redis(r, segment_id, version)
        store.delete_versions(client, segment_id, "version = {v:UInt64}", v=version)
    except Exception as err:  # noqa: BLE001 - best effort; next_version skips it anyway
        log.warning("segment_discard_failed", segment_id=segment_id, error=str(err)[:300])


def _forget_old(client: Client, segment_id: str, previous: int) -> None:
    """Keep the new and the previous version (a reader may hold the previous number)."""
    forget_old_versions(client, [(segment_id, previous)])


def build_many(client: Client, r: redis.Redis, segment_ids: list[str],
               on_done: Callable[[store.SegmentRow], Any] | None = None,
               progress: Progress | None = None, chunk_profiles: int = 200_000,
               by: str = "", source: str = "rollup", role: str = "",
               before_commit: Hook | None = None) -> list[store.SegmentRow]:
    """Build segments in dependency order (a lookalike after its seed).

    ``before_commit``: called before each commit's exclusion re-check (``build_segment``)."""
    rows = {s: store.get_segment(client, s) for s in segment_ids}
    order: list[str] = []

    def visit(sid: str, depth: int = 0) -> None:
        if sid in order or depth > 20:
            return
        row = rows.get(sid)
        if row is not None and row.kind == "lookalike":
            seed = row.definition_json().get("seed_segment_id")
            if seed in rows:
                visit(seed, depth + 1)
        order.append(sid)

    for sid in segment_ids:
        visit(sid)
    # Rule segments share one pass over the data (a rule that does not parse is left to its own
    # build, which records the error).
    since = dt.datetime.now(dt.timezone.utc)  # before the shared pass reads the exclusions
    day, through = A.as_of(client)
    rules: dict[str, Node] = {}
    for sid in order:
        row = rows.get(sid)
        if row is not None and row.kind == "rule":
            try:
                tree = parse_rule(row.definition_json()["rule"])
                check_tenancy(client, row.owner, tree)
                rules[sid] = tree
            except Exception:  # noqa: BLE001
                pass
    done: dict[str, store.SegmentRow] = {}
    cleanup: list[tuple[str, int]] = []
    fill: Prefill | None = None
    try:
        # Valkey is filled on one thread: the shared rule segments' new sets while the pass
        # runs (chunk by chunk), then renamed to their versions while ClickHouse takes the rows
        with ThreadPoolExecutor(1, thread_name_prefix="adtier-seg-redis") as pool:
            shared: dict[str, Members] = {}
            if len(rules) > 1:
                fill = Prefill(r, pool, list(rules))
                shared = rule_members_hashed(client, rules, day, chunk_profiles, progress, source,
                                       fill.add)
            _build_precomputed(client, r, [sid for sid in order if sid in shared], shared,
                               (day, through, since), done, on_done, by, role, cleanup,
                               before_commit, pool, fill)
        for sid in order:
            if sid in done:
                continue
            done[sid] = build_segment(client, r, sid, chunk_profiles=chunk_profiles,
                                      progress=progress, by=by, cleanup=cleanup, source=source,
                                      role=role, before_commit=before_commit)
            if on_done:
                on_done(done[sid])
    finally:
        if fill is not None:
            fill.discard()
        forget_old_versions(client, cleanup)
    return [done[sid] for sid in order]


def _build_precomputed(client: Client, r: redis.Redis, ids: list[str],
                       shared: dict[str, Members], when: tuple[dt.date, Any, dt.datetime],
                       done: dict[str, store.SegmentRow],
                       on_done: Callable[[store.SegmentRow], Any] | None, by: str, role: str,
                       cleanup: list[tuple[str, int]], before_commit: Hook | None,
                       pool: ThreadPoolExecutor, fill: Prefill | None) -> None:
    """Build every segment whose members are known, each step batched over all of them:
    take their locks, record ``building`` (one insert), stage their versions (the Valkey sets
    fill one after another on one thread while ClickHouse takes the rows of the next ones),
    then commit the staged ones together (one insert, one HSET) and audit each. ``when``:
    (as-of day, data through, the moment before the members were computed). A segment
    another build holds raises ``BuildBusy`` once the ones before it are done, as one build
    after another would."""
    locked: list[tuple[str, str]] = []
    busy: BuildBusy | None = None
    for sid in ids:
        token = acquire(r, sid)
        if token is None:
            busy = BuildBusy(f"segment {sid} is already being built")
            break
        locked.append((sid, token))
    builds: list[_Build] = []
    released: set[str] = set()  # the locks _commit_many has released
    try:
        rows = store.get_segments(client, [sid for sid, _ in locked])
        present = [(sid, token) for sid, token in locked if sid in rows]
        states = store.write_states(
            client, [(rows[sid], {"status": "building", "error": ""}) for sid, _ in present])
        versions = store.next_versions(client, states)
        day, through, since = when
        builds = [_Build(sid, token, row, since=since, version=versions[sid])
                  for (sid, token), row in zip(present, states, strict=True)]
        for b in builds:
            _stage(client, r, b, 0, None, (shared.pop(b.segment_id), day, through), "", pool,
                   fill)
        _commit_many(client, r, builds, by, role, cleanup, done, on_done, released,
                     before_commit)
    finally:
        for sid, token in locked:  # whatever failed: every lock not released yet, once
            if sid not in released:
                release(r, sid, token)
    missing = [sid for sid, _ in locked if sid not in rows]
    if missing:
        raise KeyError(missing[0])
    if busy is not None:
        raise busy


def _commit_many(client: Client, r: redis.Redis, builds: list[_Build], by: str, role: str,
                 cleanup: list[tuple[str, int]], done: dict[str, store.SegmentRow],
                 on_done: Callable[[store.SegmentRow], Any] | None,
                 released: set[str], before_commit: Hook | None = None) -> None:
    """Commit the staged builds: drop the exclusions recorded since their members were
    computed (``drop_excluded``), the ``segments`` rows naming the new versions (one insert:
    the commit point), then the Valkey live pointers (one HSET; a failure there is logged and
    left to ``restore_redis``, the builds stand; then ``drop_excluded`` again for an erasure
    recorded in between); audit each and release its lock, adding it
    to ``released`` (the caller releases the others if this raises). A build that failed goes
    through ``_finish`` alone (recorded as failed with its previous version, staging
    dropped)."""
    ok: list[_Build] = []
    for b in builds:
        try:
            if b.redis is not None:
                b.redis.result()
        except Exception as err:  # noqa: BLE001 - _finish records it
            b.error = b.error or err
        if b.error is None and b.members is not None:
            ok.append(b)
    try:
        if before_commit is not None:
            before_commit()
        drop_excluded(client, r, ok)  # a failure fails the builds: never serve them
        now = dt.datetime.now(dt.timezone.utc)
        ready = store.write_states(client, [
            (b.row, {"status": "ready", "version": b.version, "size": len(b.members.ids),
                     "built_at": now, "data_through": b.through, "error": ""}) for b in ok])
    except Exception as err:  # noqa: BLE001 - each is then recorded as failed by _finish
        for b in ok:
            b.error = err
        ok, ready = [], []
    committed = {b.segment_id: row for b, row in zip(ok, ready, strict=True)}
    _swap(r, [(b.segment_id, b.version, row.owner, b.row.version)
              for b, row in zip(ok, ready, strict=True)])
    _drop_late_exclusions(client, r, [b for b in ok if b.segment_id in committed])
    for b in builds:
        try:
            if b.segment_id in committed:
                row = committed[b.segment_id]
                cleanup.append((b.segment_id, b.row.version))
                _audit_built(client, row, b, by, role)
            else:
                released.add(b.segment_id)  # _finish releases the lock, whatever fails
                row = _finish(client, r, b, by, role, cleanup)
        finally:
            if b.segment_id not in released:
                released.add(b.segment_id)
                release(r, b.segment_id, b.token)
        done[b.segment_id] = row
        if on_done:
            on_done(row)
