"""Admin key management: ``POST /v1/keys``, ``GET /v1/keys``, ``DELETE /v1/keys/{key_id}``."""

from __future__ import annotations

import anyio.to_thread
import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.params import FromPath, JSONBody

from adtier.auth import NewKey, Role
from adtier.errors import ApiError
from adtier.state import app_state, authorize

__all__ = ["KeysController", "KeyRequest"]


class KeyRequest(msgspec.Struct, forbid_unknown_fields=True):
    role: Role
    advertiser_id: str | None = None
    name: str = ""


class KeysController(Controller):
    path = "/v1/keys"
    tags = ["admin"]

    @post("/", status_code=201, summary="Create a key (the secret is shown only in this answer)")
    async def create(self, request: Request, data: JSONBody[KeyRequest]) -> NewKey:
        await authorize(request, "admin")
        registry = app_state(request).registry
        try:
            return await anyio.to_thread.run_sync(
                lambda: registry.create(data.role, data.advertiser_id or "", data.name)
            )
        except ValueError as err:
            raise ApiError(400, "bad_key_request", str(err)) from err

    @get("/", summary="List keys (never their secrets)")
    async def list_keys(self, request: Request) -> list[dict[str, object]]:
        await authorize(request, "admin")
        return await anyio.to_thread.run_sync(app_state(request).registry.list)

    @delete("/{key_id:str}", status_code=204, summary="Revoke a key")
    async def revoke(self, request: Request, key_id: FromPath[str]) -> None:
        await authorize(request, "admin")
        registry = app_state(request).registry
        if not await anyio.to_thread.run_sync(lambda: registry.revoke(key_id)):
            raise ApiError(404, "not_found", f"no active key {key_id!r}")
