"""Segment endpoints (docs/segments.md).

- ``POST /v1/segments`` — create (kind rule | lookalike | static); status ``pending``.
- ``GET /v1/segments``, ``GET /v1/segments/{id}`` — definitions and build state.
- ``POST /v1/segments/{id}/build`` — 202; the build runs in a background thread
  (409 if that segment is being built already).
- ``GET /v1/segments/overlap?ids=a,b,c`` — pairwise intersections of current versions (exact
  for admin, differentially private for advertiser keys).
- ``GET /v1/profiles/{profile_id}/segments[?format=openrtb]`` — look-up for ad decisioning,
  from Redis only: the profile's segments and the campaign holdouts it is in.

Scoping: an advertiser key creates segments it owns, and sees its own segments plus platform
segments (owner ''); any other segment answers 404, as if it did not exist. Admin sees and
builds everything and may create a segment for an advertiser (``advertiser_id``) or for the
platform (the default). The look-up answers an admin key (the ad
decisioning service runs with one) every segment the profile is in; an advertiser key gets its
own campaigns' holdouts and an empty segment list: memberships of one person would, through a
one-profile list, tell a kid's or an opted-out profile apart (``adtier.privacy``). Advertiser keys see segment sizes and overlaps
noised, a count under k (``ADTIER_PRIVACY_K``) after noise suppressed (``null``,
``suppressed: true``), and none for a customer list below the minimum list size; admin gets
exact numbers (docs/privacy.md).
A static segment's uploaded profile ids are never echoed back (the definition shows a count).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import secrets
import threading
from typing import Annotated, Any, Literal

import msgspec
import redis.asyncio
import redis.exceptions
from litestar import Controller, Request, get, post
from litestar.params import FromPath, FromQuery
from msgspec import Meta

from adtier.auth import ApiKey
from adtier.catalog import holdout_mirror
from adtier.errors import ApiError, decode_json
from adtier.logs import get_logger
from adtier.segments import build as B
from adtier.segments import build_lock
from adtier.segments import store
from adtier.segments.lookalike import MIN_SEED
from adtier import audit
from adtier.privacy import budget as privacy_budget
from adtier.privacy import http as privacy_http
from adtier.privacy import release as privacy_release
from adtier.privacy import tenancy
from adtier.privacy.noise import scale_for
from adtier.segments.rules import RuleError, catalog_keys, parse_rule, to_json
from adtier.segments.vocabulary import check_keys, load_vocabulary
from adtier.state import AppState, app_state, authorize, off_loop
from adtier.store.valkey import SLOT_MOVING, is_cluster_client, retry_while_slot_moves_async

__all__ = ["SEGMENT_ROUTES"]

log = get_logger("adtier.segments")

MAX_OVERLAP_IDS = 20
MAX_STATIC_IDS = 1_000_000
Id = Annotated[str, Meta(min_length=1, max_length=64)]


class SegmentRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=256)]
    kind: Literal["rule", "lookalike", "static"]
    rule: Any = None
    seed_segment_id: Id | None = None
    size_percent: Annotated[float, Meta(ge=1, le=10)] | None = None
    profile_ids: Annotated[list[Id], Meta(max_length=MAX_STATIC_IDS)] | None = None
    advertiser_id: Id | None = None  # admin only: the owner; default: platform


class Segment(msgspec.Struct):
    segment_id: str
    name: str
    kind: str
    advertiser_id: str | None  # None = platform segment
    definition: dict[str, Any]
    status: str  # pending | building | ready | failed
    size: int | None  # advertiser keys: noisy, None when withheld (docs/privacy.md)
    version: int
    built_at: dt.datetime | None
    data_through: dt.datetime | None
    error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime | None


class BuildStarted(msgspec.Struct):
    segment_id: str
    status: str
    version: int  # the version served until the build finishes


class OverlapSegment(msgspec.Struct):
    segment_id: str
    version: int
    size: int | None


class OverlapPair(msgspec.Struct):
    a: str
    b: str
    intersection: int | None
    suppressed: bool = False


class Overlap(msgspec.Struct):
    segments: list[OverlapSegment]
    pairs: list[OverlapPair]
    k: int = 0
    noise: dict[str, Any] | None = None  # advertiser keys: how the counts were noised


class ProfileSegments(msgspec.Struct):
    profile_id: str
    segments: list[str]
    holdout_campaigns: list[str]  # holdouts holding the profile: not to be served these


_DECODER = msgspec.json.Decoder(SegmentRequest)
_LOOKUP_SHA = hashlib.sha1(store.LOOKUP_LUA.encode()).hexdigest()
_BUILD_MUTEX = threading.Lock()  # one build at a time per process (they are CPU and memory heavy)
_CLIENT_MUTEX = threading.Lock()




def _visible(key: ApiKey, row: store.SegmentRow | None) -> bool:
    if row is None:
        return False
    return key.role == "admin" or row.owner in ("", key.advertiser_id)


def _out(row: store.SegmentRow, interrupted: bool = False, size: int | None = -1) -> Segment:
    status, error = row.status, row.error or None
    if interrupted:
        status, error = "failed", "the build was interrupted (its process stopped); build again"
    return Segment(row.segment_id, row.name, row.kind, row.owner or None, row.definition_json(),
                   status, row.size if size == -1 else size, row.version, row.built_at,
                   row.data_through, error, row.created_at, row.updated_at)


async def _sizes(request: Request, key: ApiKey, rows: list[store.SegmentRow]
                 ) -> dict[str, int | None]:
    """Sizes as this key may see them: exact for admin; noisy for an advertiser key, withheld
    for a customer list below the minimum size (``adtier.privacy.release.segment_size``)."""
    if key.role == "admin":
        return {row.segment_id: row.size for row in rows}
    state = app_state(request)
    policy = privacy_release.Policy.of(state.settings)
    secret = await privacy_release.load_secret(state.settings.privacy_noise_secret, state.redis)
    out: dict[str, int | None] = {}
    for row in rows:
        size, rel = await off_loop(privacy_release.segment_size, policy, state.stores.redis, secret,
                               row.owner, row.segment_id, row.kind, row.definition_json(),
                               row.version, row.size)
        out[row.segment_id] = size
        if rel is not None and rel.spent is not None and rel.spent.charged:
            await _audit_spend(state, key, rel)
    return out


async def _audit_spend(state: AppState, key: ApiKey, rel, refused=None) -> None:
    params = privacy_http.spend_parameters(rel, refused)
    await off_loop(lambda: audit.record(
        state.api_clickhouse, key_id=key.key_id, role=key.role,
        advertiser_id=key.advertiser_id, endpoint=privacy_http.SPEND_ENDPOINT, method="GET",
        parameters=params, status=429 if refused else 200, row_count=0, answer_sha256=""))


async def _noisy_overlap(request: Request, key: ApiKey, rows: list[store.SegmentRow],
                         pairs: list[tuple[str, str, int]], k: int) -> Overlap:
    """An advertiser's overlap: a profile is in at most every pair (n(n+1)/2 counts of
    sensitivity 1 each), so each count gets scale n(n+1)/2 / ε."""
    state = app_state(request)
    versions = ",".join(f"{r.segment_id}:{r.version}" for r in sorted(rows,
                                                                     key=lambda r: r.segment_id))
    rel = await privacy_http.release_for(request, key, "segments_overlap",
                                         {"ids": sorted(r.segment_id for r in rows)})
    assert rel is not None
    try:
        stream = await off_loop(rel.open, versions)
    except privacy_budget.BudgetSpent as spent:
        await _audit_spend(state, key, rel, spent)
        raise privacy_http.budget_error(spent) from None
    await _audit_spend(state, key, rel)
    small = {r.segment_id for r in rows
             if privacy_release.list_below_minimum(r.kind, r.definition_json(), rel.policy,
                                                  r.owner)}
    scale = scale_for(len(pairs), rel.epsilon)
    out, sizes = [], {}
    for a, b, n in pairs:
        if a in small or b in small:
            out.append(OverlapPair(a, b, None, True))
            continue
        noisy = max(0, stream.add(f"{min(a, b)}|{max(a, b)}", n, scale))
        shown = noisy if privacy_release.over_k(noisy, k) else None
        out.append(OverlapPair(a, b, shown, shown is None))
        if a == b:
            sizes[a] = shown
    segments = [OverlapSegment(r.segment_id, r.version, sizes.get(r.segment_id)) for r in rows]
    return Overlap(segments, out, k, {**privacy_release.noise_note(rel.epsilon,
                                                                   {"pairs": scale}),
                                      "rows_sum_to_totals": False})


async def _locks_held(r: redis.asyncio.Redis, rows: list[store.SegmentRow]) -> list[bool]:
    """Whether each row's build lock is held (one MGET: the lock keys share a slot)."""
    if not rows:
        return []
    return [v is not None for v in await r.mget([store.lock_key(row.segment_id)
                                                 for row in rows])]


async def _present(request: Request, key: ApiKey, rows: list[store.SegmentRow]
                   ) -> list[Segment]:
    """A row whose build lock is held is ``building``, whatever it says: a build writes its
    ``ready`` (or ``failed``) row, then switches Valkey's live pointer and releases the lock,
    and a client that saw ``ready`` before that would find the look-up without the new
    version and a new build refused. A ``building`` row whose lock is gone was interrupted:
    say so. Sizes as ``key`` may see them (``_sizes``)."""
    state = app_state(request)
    seen: list[tuple[store.SegmentRow, bool]] = []
    for row, locked in zip(rows, await _locks_held(state.redis, rows)):
        if locked and row.status != "building":
            row = msgspec.structs.replace(row, status="building", error="")
        stale = row.status == "building" and not locked
        if stale:
            # The build may have finished between our read and the lock check: read again.
            row = await off_loop(store.get_segment, state.api_clickhouse, row.segment_id) or row
            stale = row.status == "building"
        seen.append((row, stale))
    sizes = await _sizes(request, key, [row for row, _ in seen])
    return [_out(row, stale, sizes[row.segment_id]) for row, stale in seen]


async def _get_visible(request: Request, key: ApiKey, segment_id: str) -> store.SegmentRow:
    row = None
    if len(segment_id) <= 64:
        row = await off_loop(store.get_segment, app_state(request).api_clickhouse, segment_id)
    if not _visible(key, row):
        raise ApiError(404, "not_found", f"no segment {segment_id!r}")
    assert row is not None
    return row


async def _own_campaigns_only(state: AppState, owner: str, tree) -> None:
    """A rule of an advertiser's segment names only its own campaigns: another advertiser's
    campaign answers exactly as a campaign that never existed (404), see
    ``adtier.privacy.tenancy``."""
    wanted = tenancy.campaign_keys(catalog_keys(tree))
    foreign = await off_loop(tenancy.foreign_campaigns, state.api_clickhouse, owner, wanted)
    if foreign:
        raise ApiError(404, "not_found", f"no campaign {foreign[0]!r}")


def _builder_client(request: Request, state: AppState):
    with _CLIENT_MUTEX:
        client = request.app.state.get("segments_clickhouse")
        if client is None:
            client = state.stores.new_clickhouse()
            request.app.state["segments_clickhouse"] = client
        return client


def _spawn_build(client, r, segment_id: str, token: str, by: str, role: str) -> None:
    def run() -> None:
        with _BUILD_MUTEX:
            try:
                B.build_segment(client, r, segment_id, token=token, by=by, role=role)
            except Exception as err:  # noqa: BLE001 - the thread must not die silently
                log.error("segment_build_crashed", segment_id=segment_id, error=str(err)[:500])
                try:
                    build_lock.release(r, segment_id, token)
                except Exception:  # noqa: BLE001
                    pass

    threading.Thread(target=run, name=f"segment-build-{segment_id}", daemon=True).start()


class SegmentsController(Controller):
    path = "/v1/segments"
    tags = ["segments"]

    @post("/", status_code=201, summary="Create a segment (rule, lookalike or static)")
    async def create(self, request: Request) -> Segment:
        """``{"name", "kind": "rule", "rule": {...}}`` |
        ``{"name", "kind": "lookalike", "seed_segment_id", "size_percent": 1..10}`` |
        ``{"name", "kind": "static", "profile_ids": [...]}``; admin may add ``advertiser_id``.
        The segment starts ``pending``: build it with ``POST /v1/segments/{id}/build``."""
        key = await authorize(request, "advertiser")
        state = app_state(request)
        data = await decode_json(request, _DECODER)
        owner = key.advertiser_id
        if key.role == "admin":
            owner = data.advertiser_id or ""
        elif data.advertiser_id not in (None, key.advertiser_id):
            raise ApiError(400, "invalid_request", "advertiser_id: an advertiser key creates "
                           "segments for its own advertiser only")
        given = {f for f in ("rule", "seed_segment_id", "size_percent", "profile_ids")
                 if getattr(data, f) is not None}
        allowed = {"rule": {"rule"}, "lookalike": {"seed_segment_id", "size_percent"},
                   "static": {"profile_ids"}}[data.kind]
        if given - allowed:
            raise ApiError(400, "invalid_request", f"a {data.kind} segment does not take "
                           + ", ".join(sorted(given - allowed)))
        if allowed - given:
            raise ApiError(400, "invalid_request", f"a {data.kind} segment needs "
                           + ", ".join(sorted(allowed - given)))
        segment_id = "seg_" + secrets.token_hex(8)
        if data.kind == "rule":
            try:
                tree = parse_rule(data.rule)
            except RuleError as err:
                raise ApiError(400, "invalid_rule", str(err)) from err
            # tenancy first: another advertiser's campaign answers as a never-existing one
            await _own_campaigns_only(state, owner, tree)
            try:
                check_keys(tree, await off_loop(load_vocabulary, state.api_clickhouse))
            except RuleError as err:
                raise ApiError(400, "invalid_rule", str(err)) from err
            definition: dict[str, Any] = {"rule": to_json(tree)}
        elif data.kind == "lookalike":
            seed = await off_loop(store.get_segment, state.api_clickhouse, data.seed_segment_id)
            if not _visible(key, seed):
                raise ApiError(400, "unknown_seed",
                               f"seed_segment_id: no segment {data.seed_segment_id!r}")
            assert seed is not None
            if seed.version and seed.size < MIN_SEED:
                # the exact size is not said: it would be a count released without noise
                raise ApiError(400, "seed_too_small", "seed_segment_id: a lookalike needs a "
                               f"seed of at least {MIN_SEED} members")
            definition = {"seed_segment_id": seed.segment_id, "size_percent": data.size_percent}
        else:
            ids = list(dict.fromkeys(data.profile_ids or []))
            if not ids:
                raise ApiError(400, "invalid_request", "profile_ids: at least one profile id")
            definition = {"profile_count": len(ids)}
            await off_loop(store.insert_members, state.api_clickhouse, segment_id, 0, ids)
        now = dt.datetime.now(dt.timezone.utc)
        row = store.SegmentRow(segment_id=segment_id, name=data.name, kind=data.kind,
                               owner=owner, definition=msgspec.json.encode(definition).decode(),
                               created_at=now, created_by=key.key_id)
        row = await off_loop(lambda: store.write_state(state.api_clickhouse, row))
        log.info("segment_created", segment_id=segment_id, kind=data.kind, owner=owner,
                 by=key.key_id)
        return _out(row)

    @get("/", summary="List the segments this key can see")
    async def list_segments(self, request: Request) -> list[Segment]:
        key = await authorize(request, "advertiser")
        state = app_state(request)
        owners = None if key.role == "admin" else ["", key.advertiser_id]
        rows = await off_loop(store.list_segments, state.api_clickhouse, owners)
        return await _present(request, key, rows)

    @get("/overlap", summary="Pairwise intersections of segments")
    async def overlap(self, request: Request, ids: FromQuery[str]) -> Overlap:
        """``ids=a,b,c`` (1 to 20): for every pair (including each segment with itself) the
        number of profiles in both current versions. Admin: exact. Advertiser keys: each count
        noised (one query on the budget; the seeded noise answers a repeat the same), a count
        under k after noise suppressed, and no count at all that involves a customer list below
        the minimum list size (docs/privacy.md)."""
        key = await authorize(request, "advertiser")
        state = app_state(request)
        wanted = list(dict.fromkeys(s.strip() for s in ids.split(",") if s.strip()))
        if not 1 <= len(wanted) <= MAX_OVERLAP_IDS:
            raise ApiError(400, "invalid_request", f"ids: 1 to {MAX_OVERLAP_IDS} segment ids")
        rows = [await _get_visible(request, key, s) for s in wanted]
        unbuilt = [r.segment_id for r in rows if r.version == 0]
        if unbuilt:
            raise ApiError(409, "not_built", f"not built yet: {', '.join(unbuilt)}")
        counts = await off_loop(store.overlap, state.api_clickhouse,
                            {r.segment_id: r.version for r in rows})
        k = max(1, int(state.settings.privacy_k))
        pairs = [(a, b, counts.get((min(a, b), max(a, b)), 0))
                 for i, a in enumerate(wanted) for b in wanted[i:]]
        if key.role == "admin":
            return Overlap([OverlapSegment(r.segment_id, r.version, r.size) for r in rows],
                           [OverlapPair(a, b, n) for a, b, n in pairs], k)
        return await _noisy_overlap(request, key, rows, pairs, k)

    @get("/{segment_id:str}", summary="One segment: definition and build state")
    async def get_segment(self, request: Request, segment_id: FromPath[str]) -> Segment:
        key = await authorize(request, "advertiser")
        row = await _get_visible(request, key, segment_id)
        return (await _present(request, key, [row]))[0]

    @post("/{segment_id:str}/build", status_code=202, summary="Build a segment (async)")
    async def build(self, request: Request, segment_id: FromPath[str]) -> BuildStarted:
        """Starts a build in the background and answers at once; poll the segment for
        ``status`` (ready or failed). The previous version is served until the new one is
        ready, and stays if the build fails."""
        key = await authorize(request, "advertiser")
        state = app_state(request)
        row = await _get_visible(request, key, segment_id)
        if key.role != "admin" and row.owner != key.advertiser_id:
            raise ApiError(403, "forbidden", "platform segments are built by the platform")
        r = state.stores.redis
        token = await off_loop(build_lock.acquire, r, segment_id)
        if token is None:
            raise ApiError(409, "already_building", f"segment {segment_id} is being built")
        client = _builder_client(request, state)
        try:
            row = await off_loop(lambda: store.write_state(state.api_clickhouse, row,
                                                       status="building", error=""))
        except BaseException:
            await off_loop(build_lock.release, r, segment_id, token)
            raise
        _spawn_build(client, r, segment_id, token, key.key_id, key.role)
        return BuildStarted(segment_id, "building", row.version)


class ProfileSegmentsController(Controller):
    path = "/v1/profiles"
    tags = ["segments"]

    @get("/{profile_id:str}/segments", summary="Segments of one profile (ad decisioning)",
         response_model=None)
    async def profile_segments(
        self, request: Request, profile_id: FromPath[str],
        format: FromQuery[Literal["json", "openrtb"]] = "json",  # noqa: A002 - the query parameter's name
    ) -> Any:
        """Served from Redis only (one round trip: the membership script and the holdout
        mirror, pipelined). JSON: ``{"profile_id", "segments": [...], "holdout_campaigns":
        [...]}`` — ``holdout_campaigns`` are the campaigns whose flight has not ended (end date
        >= today, UTC) and whose holdout holds this profile: **do not serve it their ads** (the
        control group of content-effects lift; same hash as measurement, see
        ``adtier.catalog.holdouts``). ``format=openrtb`` answers the OpenRTB 2.6 ``user.data``
        array: ``{"id": "adtier", "name": "adtier", "segment": [{"id": <segment_id>}]}`` when
        the profile is in a segment, and ``{"id": "adtier-holdout", "name": "adtier holdout",
        "segment": [{"id": "holdout:<campaign_id>"}]}`` when it is in a holdout (exclude line
        items by that segment); ``[]`` when neither. An admin key (ad decisioning) sees every
        segment and holdout; an advertiser key its own campaigns' holdouts and no segment.
        """
        key = await authorize(request, "advertiser")
        if not 1 <= len(profile_id) <= 64:
            raise ApiError(400, "invalid_profile_id", "a profile id has 1 to 64 characters")
        own = None if key.role == "admin" else key.advertiser_id
        found, mirror = await _lookup(app_state(request).redis, profile_id, own)
        # Segment memberships of one profile go to the admin key (ad decisioning) only: to an
        # advertiser key they would answer about one person (through a one-profile list: is
        # this id a kid's or opted out?), so its list is always empty (adtier.privacy).
        segments = sorted(found[i].decode() for i in range(0, len(found), 2)) if own is None \
            else []
        today = dt.datetime.now(dt.timezone.utc).date()
        holdouts = holdout_mirror.assigned(mirror, profile_id, today, own)
        if format == "openrtb":
            data = []
            if segments:
                data.append({"id": "adtier", "name": "adtier",
                             "segment": [{"id": s} for s in segments]})
            if holdouts:
                data.append({"id": "adtier-holdout", "name": "adtier holdout",
                             "segment": [{"id": f"holdout:{c}"} for c in holdouts]})
            return data
        return ProfileSegments(profile_id, segments, holdouts)


# The live hash as last seen by this process (any client): the look-up declares the member
# sets it names; a stale copy costs one more round trip (the script answers the hash now).
_live_seen: list[tuple[str, str]] = []
_LOOKUP_BUDGET_S = 5.0  # a look-up waits this long for a migrating {seg} slot, then 503


async def _lookup(client: redis.asyncio.Redis, profile_id: str, advertiser_id: str | None
                  ) -> tuple[list[bytes], dict[bytes, bytes]]:
    """The live segments holding the profile (``store.LOOKUP_LUA``: [id, owner, ...]) and the
    holdout mirror's live entries — every advertiser's for admin (None), else only that
    advertiser's hash — in one pipelined round trip (another one to load the script, or when
    the live segments changed since this process last looked)."""
    global _live_seen
    holdouts = (holdout_mirror.HOLDOUTS_KEY if advertiser_id is None
                else holdout_mirror.advertiser_key(advertiser_id))
    for _ in range(4):
        keys, args = store.lookup_call(_live_seen, profile_id)
        if is_cluster_client(client):  # other slots: no scripts in a cluster pipeline
            found, mirror = await asyncio.gather(
                retry_while_slot_moves_async(
                    lambda: client.evalsha(_LOOKUP_SHA, len(keys), *keys, *args),
                    _LOOKUP_BUDGET_S),
                client.hgetall(holdouts), return_exceptions=True)
        else:
            async with client.pipeline(transaction=False) as pipe:
                pipe.evalsha(_LOOKUP_SHA, len(keys), *keys, *args)
                pipe.hgetall(holdouts)
                found, mirror = await pipe.execute(raise_on_error=False)
        if isinstance(found, redis.exceptions.NoScriptError):
            found = await client.eval(store.LOOKUP_LUA, len(keys), *keys, *args)
        for answer in (found, mirror):
            if isinstance(answer, SLOT_MOVING):
                raise ApiError(503, "unavailable", "the segment look-up's slot is moving; retry",
                               {"Retry-After": "1"}) from answer
            if isinstance(answer, Exception):
                raise answer
        if found[0] == b"ok":
            return found[1:], mirror
        _live_seen = [(found[i].decode(), found[i + 1].decode()) for i in range(1, len(found), 2)]
    raise ApiError(503, "unavailable", "the live segments keep changing; retry",
                   {"Retry-After": "1"})


SEGMENT_ROUTES = [SegmentsController, ProfileSegmentsController]
