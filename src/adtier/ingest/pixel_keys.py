"""Which key a tracking pixel may carry: an ingest key, and nothing else.

A pixel's ``k=`` is written into VAST tags, which any player, proxy or ad inspector can read.
An admin or advertiser key there is as good as published, so it is refused even though an admin
key passes every other role check: the pixel still answers its GIF (a player is never broken),
nothing is stored, and the attempt is kept in ``rejected_events`` (reason ``wrong_key_role``,
under that key's id, without its secret) so the key can be found and revoked.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from adtier.auth import ApiKey, AuthError
from adtier.ingest.normalise import Rejection

if TYPE_CHECKING:
    from adtier.state import AppState

__all__ = ["pixel_key"]


async def pixel_key(state: "AppState", params: dict[str, str],
                    others: Sequence[str] = ()) -> ApiKey:
    """The pixel's ingest key; AuthError 401 (no such key) or 403 (any other role, kept).
    ``others``: the other values of a repeated ``k`` (``params`` holds the last): a key of
    another role among them is refused and kept the same, or a second ``k`` would hide it."""
    key = await state.keys.require(f"Bearer {params.get('k', '')}")
    for other in others:
        if other != params.get("k"):
            try:
                found = await state.keys.require(f"Bearer {other}")
            except AuthError:
                continue  # an unknown value names no key to revoke
            if found.role != "ingest":
                key = found
                break
    if key.role == "ingest":
        return key
    query = urlencode({name: value for name, value in params.items() if name != "k"})
    detail = f"a pixel takes an ingest key, not {key.role} key {key.key_id}: revoke it"
    await state.ingest.ingest(
        [], None, received_ms=time.time_ns() // 1_000_000, sent_ms=None, key_id=key.key_id,
        source="pixel", body_sha256=hashlib.sha256(query.encode()).hexdigest(),
        extra_rejections=[Rejection(-1, "", "wrong_key_role", detail, query.encode())],
    )
    raise AuthError(403, detail)
