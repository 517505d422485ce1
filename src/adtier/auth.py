"""API keys: creation (shown once), hashed storage, revocation, and request authentication.

ClickHouse's ``api_keys`` table is the record; Redis holds the live index (hash -> key) that
every request reads, with a short in-process cache in front so the hot path rarely leaves the
process. Revocation removes the key from Redis at once; caches expire within ``CACHE_SECONDS``.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from datetime import datetime, timezone
from typing import Literal

import msgspec
import redis
import redis.asyncio as aredis
from clickhouse_connect.driver.client import Client

__all__ = [
    "ROLES",
    "BOUND_ROLES",
    "Role",
    "ApiKey",
    "NewKey",
    "hash_key",
    "KeyRegistry",
    "KeyCache",
    "AuthError",
    "forbidden",
]

Role = Literal["ingest", "advertiser", "verifier", "recs", "admin"]
ROLES: tuple[str, ...] = ("ingest", "advertiser", "verifier", "recs", "admin")
# Roles bound to one advertiser: an advertiser's own key, and the third party that verifies its
# campaigns (which may fetch only their log-level feed; see ``adtier.measure.loglevel``).
BOUND_ROLES: tuple[str, ...] = ("advertiser", "verifier")
INDEX = "adtier:keys"
CACHE_SECONDS = 5.0


class AuthError(Exception):
    """No usable key (401) or a key without the needed role (403)."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


class ApiKey(msgspec.Struct, frozen=True):
    key_id: str
    role: str
    advertiser_id: str = ""
    name: str = ""
    created_at: datetime | None = None


class NewKey(msgspec.Struct, frozen=True):
    key: str
    key_id: str
    role: str
    advertiser_id: str = ""
    name: str = ""


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(ApiKey).decode


class KeyRegistry:
    """Create, list, revoke keys (sync: used by the CLI, admin routes in a thread, start-up)."""

    def __init__(self, clickhouse: Client, redis_client: redis.Redis):
        self.ch = clickhouse
        self.redis = redis_client

    def create(self, role: str, advertiser_id: str = "", name: str = "",
               secret: str | None = None, key_id: str | None = None) -> NewKey:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if role in BOUND_ROLES and not advertiser_id:
            raise ValueError(f"{_a(role)} key needs advertiser_id")
        if role not in BOUND_ROLES and advertiser_id:
            raise ValueError("only advertiser and verifier keys carry advertiser_id")
        secret = secret or "adt_" + secrets.token_urlsafe(32)
        key_id = key_id or "key_" + secrets.token_hex(8)
        now = datetime.now(timezone.utc)
        digest = hash_key(secret)
        self.ch.insert(
            "api_keys",
            [[key_id, digest, role, advertiser_id, name, now, None, time.time_ns()]],
            column_names=["key_id", "key_hash", "role", "advertiser_id", "name",
                          "created_at", "revoked_at", "version"],
        )
        self.redis.hset(INDEX, digest, _encode(ApiKey(key_id, role, advertiser_id, name, now)))
        return NewKey(secret, key_id, role, advertiser_id, name)

    def list(self) -> list[dict[str, object]]:
        rows = self.ch.query(
            "SELECT key_id, role, advertiser_id, name, created_at, revoked_at "
            "FROM api_keys FINAL ORDER BY created_at"
        ).named_results()
        return list(rows)

    def revoke(self, key_id: str) -> bool:
        found = self.ch.query(
            "SELECT key_hash, role, advertiser_id, name, created_at FROM api_keys FINAL "
            "WHERE key_id = {key_id:String} AND revoked_at IS NULL",
            parameters={"key_id": key_id},
        ).result_rows
        if not found:
            return False
        digest, role, advertiser_id, name, created_at = found[0]
        self.ch.insert(
            "api_keys",
            [[key_id, digest, role, advertiser_id, name, created_at,
              datetime.now(timezone.utc), time.time_ns()]],
            column_names=["key_id", "key_hash", "role", "advertiser_id", "name",
                          "created_at", "revoked_at", "version"],
        )
        self.redis.hdel(INDEX, digest)
        return True

    def sync_index(self) -> int:
        """Rebuild the Redis index from ClickHouse (start-up; Redis may have been replaced)."""
        rows = self.ch.query(
            "SELECT key_hash, key_id, role, advertiser_id, name, created_at FROM api_keys FINAL "
            "WHERE revoked_at IS NULL"
        ).result_rows
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(INDEX)
        for digest, key_id, role, advertiser_id, name, created_at in rows:
            pipe.hset(INDEX, digest, _encode(ApiKey(key_id, role, advertiser_id, name, created_at)))
        pipe.execute()
        return len(rows)

    def has_admin(self) -> bool:
        return bool(self.ch.query(
            "SELECT count() FROM api_keys FINAL WHERE role = 'admin' AND revoked_at IS NULL"
        ).result_rows[0][0])


class KeyCache:
    """Request-time authentication (async): in-process cache over the Redis index."""

    def __init__(self, client: aredis.Redis):
        self._client = client
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}

    async def lookup(self, secret: str) -> ApiKey | None:
        digest = hash_key(secret)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        raw = await self._client.hget(INDEX, digest)
        key = _decode(raw) if raw else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + CACHE_SECONDS, key)
        return key

    async def require(self, authorization: str | None, *roles: str) -> ApiKey:
        if not authorization or not authorization.startswith("Bearer "):
            raise AuthError(401, "send Authorization: Bearer <key>")
        key = await self.lookup(authorization[7:].strip())
        if key is None:
            raise AuthError(401, "unknown or revoked key")
        if roles and key.role not in roles and key.role != "admin":
            raise forbidden(key, *roles)
        return key


def forbidden(key: ApiKey, *roles: str) -> AuthError:
    """The 403 for a key without one of ``roles``, naming them (admin last: an admin key passes
    every check) and the key's own role."""
    needed = " or ".join(dict.fromkeys([*roles, "admin"]))
    return AuthError(403, f"this endpoint needs {_a(needed)} key, not {_a(key.role)} key")


def _a(words: str) -> str:
    return f"{'an' if words[:1] in ('a', 'e', 'i', 'o', 'u') else 'a'} {words}"
