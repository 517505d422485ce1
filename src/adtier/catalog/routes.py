"""Admin catalog, profile and privacy endpoints.

``PUT /v1/catalog/{advertisers|campaigns|creatives|titles}`` and ``PUT /v1/profiles`` are bulk
upserts of ``{"items": [...]}`` (at most 10,000; the last item of a repeated id wins);
``GET /v1/catalog/{kind}`` lists current rows, ``GET /v1/catalog/{kind}/{id}`` reads one.
``POST /v1/privacy/opt-out`` opts profiles out for good (out of every built segment at once, as
is a profile written as kids); ``DELETE /v1/privacy/profiles/{id}``
erases a profile's events and profile row and records the erasure;
``GET /v1/privacy/profiles/{id}`` tells whether a profile is excluded from targeting, and why.

Every route is admin-only. Bodies are decoded here (not by Litestar) with one typed msgspec
decoder per model, so a bad item answers 400 naming its index and field, strictly typed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated

import msgspec
from litestar import Controller, Request, delete, get, post, put
from litestar.params import FromPath, QueryParameter

from adtier.catalog import holdout_mirror, store
from adtier.catalog.models import (
    Advertiser,
    Campaign,
    Creative,
    Erased,
    Items,
    OptedOut,
    OptOutRequest,
    Page,
    PrivacyStatus,
    Profile,
    Title,
    Upserted,
)
from adtier.errors import ApiError, decode_json
from adtier.logs import get_logger
from adtier.privacy.exclusions import Excluded
from adtier.state import app_state, authorize, off_loop

__all__ = ["CATALOG_ROUTES"]

log = get_logger("adtier.catalog")

_DECODERS: dict[type, msgspec.json.Decoder] = {
    model: msgspec.json.Decoder(Items[model])
    for model in (Advertiser, Campaign, Creative, Title, Profile)
}
_OPT_OUT = msgspec.json.Decoder(OptOutRequest)
_MAX_ID = 64

Limit = Annotated[int, QueryParameter(ge=1, le=10_000, description="rows per page")]
Offset = Annotated[int, QueryParameter(ge=0, description="rows to skip")]
Row = dict[str, object]


async def _publish_exclusions(request: Request, profile_ids: list[str], *,
                              erased: bool = False) -> None:
    """Make an exclusion (kids, opted out or erased) take effect at once, after its ClickHouse
    record and before answering: the exclusion event goes to its subscribers (segments: out of
    every built segment; features: out of the look-up's mirror; see privacy.exclusions). A
    store failure answers 503 with Retry-After (adtier.errors): the exclusion is recorded in
    ClickHouse already, a retry is idempotent."""
    if not profile_ids:
        return
    state = app_state(request)
    event = Excluded(profile_ids, erased=erased)
    await off_loop(state.exclusions.publish, state.api_clickhouse, state.stores.redis, event)


async def _check_references(
    request: Request, items: Sequence[msgspec.Struct], field: str, parent: store.Kind
) -> None:
    """Every ``item.<field>`` must name a ``parent`` already in the catalog.

    Parents arrive through their own endpoint, so a request never carries its own parents: what
    counts is the stored catalog when the request is checked (every earlier upsert included).
    """
    wanted = {getattr(i, field) for i in items}
    client = app_state(request).api_clickhouse
    known = await off_loop(store.existing_ids, client, parent.table, parent.id_column, wanted)
    missing = [(n, getattr(i, field)) for n, i in enumerate(items)
               if getattr(i, field) in wanted - known]
    if missing:
        index, value = missing[0]
        more = f" (and {len(missing) - 1} more items)" if len(missing) > 1 else ""
        singular = parent.name.removesuffix("s")
        raise ApiError(400, "unknown_reference",
                       f"unknown {singular} {value!r}{more} - at `$.items[{index}].{field}`")


async def _upsert_campaigns(request: Request, items: Sequence[Campaign]) -> int:
    """Write the campaigns, then their holdouts to the look-up's Valkey mirror before
    answering (ad decisioning must stop serving a new holdout at once). A mirror failure
    answers 503: the retry writes a newer version to both; without one, the server's periodic
    ``holdout_mirror.keep_restored`` repairs the mirror from ClickHouse within a minute."""
    state = app_state(request)
    version = time.time_ns()
    count = await off_loop(store.upsert, state.api_clickhouse, _CMP, items, version)
    latest = list({c.campaign_id: c for c in items}.values())  # the last of a repeated id wins
    r = state.stores.redis
    await off_loop(holdout_mirror.publish, r, latest, version)
    return count


async def _upsert(request: Request, kind: store.Kind) -> Upserted:
    await authorize(request, "admin")
    batch = await decode_json(request, _DECODERS[kind.model])
    items = batch.items
    if kind.name == "campaigns":
        await _check_references(request, items, "advertiser_id", store.CATALOG["advertisers"])
    elif kind.name == "creatives":
        await _check_references(request, items, "campaign_id", store.CATALOG["campaigns"])
    if kind.name == "campaigns":
        return Upserted(await _upsert_campaigns(request, items))
    client = app_state(request).api_clickhouse
    upserted = Upserted(await off_loop(store.upsert, client, kind, items))
    if kind is store.PROFILES:  # the last item of a repeated id wins, as in store.upsert
        latest = {i.profile_id: i for i in items}
        await _publish_exclusions(request, [p for p, i in latest.items() if i.kind == "kids"])
    return upserted


async def _list(request: Request, kind: store.Kind, limit: int, offset: int) -> Page:
    await authorize(request, "admin")
    client = app_state(request).api_clickhouse
    rows, total = await off_loop(store.list_rows, client, kind, limit, offset)
    return Page(rows, total, limit, offset)


async def _one(request: Request, kind: store.Kind, item_id: str) -> dict[str, object]:
    await authorize(request, "admin")
    row = None
    if len(item_id) <= _MAX_ID:
        row = await off_loop(store.get_row, app_state(request).api_clickhouse, kind, item_id)
    if row is None:
        raise ApiError(404, "not_found", f"no {kind.name.removesuffix('s')} {item_id!r}")
    return row


def _profile_id(profile_id: str) -> str:
    if not 1 <= len(profile_id) <= _MAX_ID:
        raise ApiError(400, "invalid_profile_id", f"a profile id has 1 to {_MAX_ID} characters")
    return profile_id


_ADV, _CMP, _CRE, _TTL = (store.CATALOG[k]
                          for k in ("advertisers", "campaigns", "creatives", "titles"))


class CatalogController(Controller):
    """Bulk upserts answer ``{"upserted": n}`` (distinct ids written)."""

    path = "/v1/catalog"
    tags = ["catalog (admin)"]

    @put("/advertisers", status_code=200, summary="Upsert advertisers")
    async def put_advertisers(self, request: Request) -> Upserted:
        """``{"items": [{"advertiser_id", "name"}]}``."""
        return await _upsert(request, _ADV)

    @put("/campaigns", status_code=200, summary="Upsert campaigns")
    async def put_campaigns(self, request: Request) -> Upserted:
        """``{"items": [{"campaign_id", "advertiser_id", "name", "ad_category" (IAB content
        taxonomy id, e.g. "IAB18"), "start_date", "end_date" (ISO dates, end >= start),
        "frequency_cap" (impressions per profile per day, 0 = none), "holdout_percent" (0..50),
        "promoted_title_id"?, "promoted_genre"?}]}``. The advertiser must be in the catalog."""
        return await _upsert(request, _CMP)

    @put("/creatives", status_code=200, summary="Upsert creatives")
    async def put_creatives(self, request: Request) -> Upserted:
        """``{"items": [{"creative_id", "campaign_id", "name", "duration_ms"}]}``; the campaign
        must be in the catalog."""
        return await _upsert(request, _CRE)

    @put("/titles", status_code=200, summary="Upsert titles")
    async def put_titles(self, request: Request) -> Upserted:
        """``{"items": [{"content_id", "name", "kind" (film|series|episode), "series_id"
        (episodes only, required there), "genres": [...], "maturity" (G, PG, PG-13, R, NC-17,
        NR, TV-Y, TV-Y7, TV-Y7-FV, TV-G, TV-PG, TV-14, TV-MA), "duration_ms"}]}``."""
        return await _upsert(request, _TTL)

    # Litestar routes a static path before a parameter, for every method: each kind that has a
    # PUT above needs its own GET, or GET /v1/catalog/advertisers would answer 405.
    @get("/advertisers", summary="List advertisers")
    async def list_advertisers(
        self, request: Request, limit: Limit = 100, offset: Offset = 0
    ) -> Page:
        return await _list(request, _ADV, limit, offset)

    @get("/campaigns", summary="List campaigns")
    async def list_campaigns(
        self, request: Request, limit: Limit = 100, offset: Offset = 0
    ) -> Page:
        return await _list(request, _CMP, limit, offset)

    @get("/creatives", summary="List creatives")
    async def list_creatives(
        self, request: Request, limit: Limit = 100, offset: Offset = 0
    ) -> Page:
        return await _list(request, _CRE, limit, offset)

    @get("/titles", summary="List titles")
    async def list_titles(
        self, request: Request, limit: Limit = 100, offset: Offset = 0
    ) -> Page:
        return await _list(request, _TTL, limit, offset)

    @get("/advertisers/{advertiser_id:str}", summary="One advertiser")
    async def get_advertiser(self, request: Request, advertiser_id: FromPath[str]) -> Row:
        return await _one(request, _ADV, advertiser_id)

    @get("/campaigns/{campaign_id:str}", summary="One campaign")
    async def get_campaign(self, request: Request, campaign_id: FromPath[str]) -> Row:
        return await _one(request, _CMP, campaign_id)

    @get("/creatives/{creative_id:str}", summary="One creative")
    async def get_creative(self, request: Request, creative_id: FromPath[str]) -> Row:
        return await _one(request, _CRE, creative_id)

    @get("/titles/{content_id:str}", summary="One title")
    async def get_title(self, request: Request, content_id: FromPath[str]) -> Row:
        return await _one(request, _TTL, content_id)


class ProfilesController(Controller):
    path = "/v1/profiles"
    tags = ["catalog (admin)"]

    @put("/", status_code=200, summary="Upsert profiles (kind adult|kids)")
    async def put_profiles(self, request: Request) -> Upserted:
        """``{"items": [{"profile_id", "account_id", "kind": "adult"|"kids"}]}``. Kids'
        profiles never enter segments, lookalikes or feature exports: a profile written as
        kids leaves every built segment (look-up, overlap, size) before this answers. One made
        adult again comes back at its segments' next build."""
        return await _upsert(request, store.PROFILES)

    @get("/", summary="List profiles")
    async def list_profiles(
        self, request: Request, limit: Limit = 100, offset: Offset = 0
    ) -> Page:
        return await _list(request, store.PROFILES, limit, offset)


class PrivacyController(Controller):
    path = "/v1/privacy"
    tags = ["privacy (admin)"]

    @post("/opt-out", status_code=200, summary="Opt profiles out of targeting (sticky)")
    async def opt_out(self, request: Request) -> OptedOut:
        """``{"profile_ids": [...]}`` (at most 10,000). There is no opt-in: an opt-out stays,
        even across an erasure, and its first time is kept. The profiles leave every built
        segment (look-up, overlap, size) and the feature feed before this answers."""
        await authorize(request, "admin")
        body = await decode_json(request, _OPT_OUT)
        client = app_state(request).api_clickhouse
        total, already = await off_loop(store.record_optouts, client, body.profile_ids)
        await _publish_exclusions(request, list(dict.fromkeys(body.profile_ids)))
        return OptedOut(total, already)

    @delete("/profiles/{profile_id:str}", status_code=202, summary="Erase a profile")
    async def erase(self, request: Request, profile_id: FromPath[str]) -> Erased:
        """Deletes the profile's stored rows from ad_events, content_events, profiles and the
        rollups before answering, and records the erasure (a hash of the id, not the id) for
        exports and for events that arrive later (kept, and left out by hash on every read).
        Idempotent; an unknown profile is erased too (no existence oracle)."""
        await authorize(request, "admin")
        state = app_state(request)
        methods = await off_loop(store.erase_profile, state.api_clickhouse, _profile_id(profile_id))
        # out of every built segment (uploaded lists too) and the feature feed at once
        await _publish_exclusions(request, [profile_id], erased=True)
        log.info("profile_erased", methods=methods)  # never the profile id itself
        return Erased(profile_id, True)

    @get("/profiles/{profile_id:str}", summary="Is a profile excluded from targeting, and why")
    async def status(self, request: Request, profile_id: FromPath[str]) -> PrivacyStatus:
        await authorize(request, "admin")
        client = app_state(request).api_clickhouse
        return await off_loop(store.privacy_status, client, _profile_id(profile_id))


CATALOG_ROUTES = [CatalogController, ProfilesController, PrivacyController]
