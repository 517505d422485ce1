"""Who is never targeted, and every form of that rule, once: kids' profiles (their latest
profile version), opted-out profiles (for good) and erased profiles. Erasures keep no profile
id, only ``cityHash64`` (``profile_hash``, as the event tables materialize it) and SHA-256 (hex)
of it, so each form below says which of the three identities it works on.

- SQL: ``excluded_profiles_sql`` / ``excluded_profile_hashes_sql`` (subqueries for
  ``NOT IN``), ``EXCLUDED_SINCE_SQL`` (recorded since a moment), ``EXCLUDED_SHA256_SQL`` /
  ``EXCLUDED_IDS_SQL`` + ``ERASED_SHA256_SQL`` (what Valkey-side readers load),
  ``RECENT_ERASURES_SQL``, ``ERASED_SINCE_SQL``, ``PROFILE_EXCLUDED_SQL`` (one profile).
- Python: ``is_excluded`` (a profile's recorded state), ``excluded`` (an id against loaded sets).
- Valkey: ``EXCLUDED_SHA256_KEY``, the set of SHA-256 of every excluded profile.
- The event: the catalog records an exclusion, then ``ExclusionFeed.publish`` tells whoever
  subscribed at app start (segments: out of every built segment; features: out of the
  look-up's mirror), so the catalog knows no consumer.

``k`` (the release threshold) is not here: it is ``Settings.privacy_k``, read by
``privacy.release.Policy``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis

if TYPE_CHECKING:  # the live counters' child imports this module and has no ClickHouse
    from clickhouse_connect.driver.client import Client

__all__ = ["EXCLUDED_SHA256_KEY", "EXCLUDED_SINCE_SQL", "EXCLUDED_SHA256_SQL",
           "EXCLUDED_IDS_SQL", "ERASED_SHA256_SQL", "RECENT_ERASURES_SQL", "ERASED_SINCE_SQL",
           "PROFILE_EXCLUDED_SQL", "excluded_profiles_sql", "excluded_profile_hashes_sql",
           "is_excluded", "excluded", "profile_sha256", "Excluded", "ExclusionFeed"]

# Valkey: the SHA-256 (hex) of every excluded profile id (the feature look-up's mirror reads it).
EXCLUDED_SHA256_KEY = "adtier:fx"

_EXCLUDED_PROFILES = """SELECT DISTINCT profile_id FROM
(
    SELECT profile_id FROM profiles FINAL WHERE kind = 'kids'
    UNION ALL
    SELECT profile_id FROM privacy_optouts
    UNION ALL
    SELECT profile_id FROM ad_events WHERE profile_hash IN (SELECT profile_hash FROM erasures)
    UNION ALL
    SELECT profile_id FROM content_events WHERE profile_hash IN (SELECT profile_hash FROM erasures)
)"""

_EXCLUDED_HASHES = """SELECT DISTINCT profile_hash FROM
(
    SELECT cityHash64(profile_id) AS profile_hash FROM profiles FINAL WHERE kind = 'kids'
    UNION ALL
    SELECT cityHash64(profile_id) AS profile_hash FROM privacy_optouts
    UNION ALL
    SELECT profile_hash FROM erasures
)"""

# profile_hash of exclusions recorded since {since}: erasures, opt-outs, and profiles written as
# kids' (any version: one made adult again right after is only left out of this build).
EXCLUDED_SINCE_SQL = """SELECT DISTINCT h FROM (
    SELECT profile_hash AS h FROM erasures WHERE erased_at >= {since:DateTime64(3, 'UTC')}
    UNION ALL SELECT cityHash64(profile_id) AS h FROM privacy_optouts
    WHERE opted_out_at >= {since:DateTime64(3, 'UTC')}
    UNION ALL SELECT cityHash64(profile_id) AS h FROM profiles
    WHERE kind = 'kids' AND updated_at >= {since:DateTime64(3, 'UTC')})"""

# The SHA-256 of every excluded profile (EXCLUDED_SHA256_KEY's contents).
EXCLUDED_SHA256_SQL = """
SELECT lower(hex(SHA256(profile_id))) FROM profiles FINAL WHERE kind = 'kids'
UNION DISTINCT SELECT lower(hex(SHA256(profile_id))) FROM privacy_optouts
UNION DISTINCT SELECT profile_sha256 FROM erasures"""

# The same set in two parts, for a reader that holds profile ids: the ids known (kids, opted
# out) and the SHA-256 of the erased.
EXCLUDED_IDS_SQL = ("SELECT profile_id FROM profiles FINAL WHERE kind = 'kids' "
                    "UNION DISTINCT SELECT profile_id FROM privacy_optouts")
ERASED_SHA256_SQL = "SELECT DISTINCT profile_sha256 FROM erasures"

# Erasures of the last hour (a reload racing one), and since {t} (a flush racing one).
RECENT_ERASURES_SQL = ("SELECT profile_sha256 FROM erasures "
                       "WHERE erased_at >= now64(3) - INTERVAL 1 HOUR")
ERASED_SINCE_SQL = ("SELECT profile_sha256 FROM erasures "
                    "WHERE erased_at >= {t:DateTime64(3, 'UTC')}")

# One profile {p}: non-zero when it is excluded.
PROFILE_EXCLUDED_SQL = """SELECT
    (SELECT count() FROM profiles FINAL WHERE profile_id = {p:String} AND kind = 'kids')
  + (SELECT count() FROM privacy_optouts WHERE profile_id = {p:String})
  + (SELECT count() FROM erasures WHERE profile_hash = cityHash64({p:String}))"""


def excluded_profiles_sql() -> str:
    """A subquery selecting every ``profile_id`` that must never enter targeting.

    Erasures keep no profile id, so an erased profile is found through events stored after its
    erasure (late arrivals from a player or the buffer) by ``profile_hash``. Use as
    ``f"... WHERE profile_id NOT IN ({excluded_profiles_sql()})"``; it has no parameters.
    On a large scan of the event tables prefer ``excluded_profile_hashes_sql()``: the erased
    branch here reads the event tables' ``profile_hash`` column.
    """
    return _EXCLUDED_PROFILES


def excluded_profile_hashes_sql() -> str:
    """The same set as ``excluded_profiles_sql()`` as ``profile_hash`` values (cityHash64 of
    the profile id, as materialized in ad_events and content_events), without reading events:
    ``f"... WHERE profile_hash NOT IN ({excluded_profile_hashes_sql()})"``."""
    return _EXCLUDED_HASHES


def is_excluded(kind: str | None, opted_out: bool, erased: bool) -> bool:
    """A profile's recorded state: its kind (None: unknown), opt-out, erasure."""
    return kind == "kids" or opted_out or erased


def profile_sha256(profile_id: str) -> str:
    return hashlib.sha256(profile_id.encode()).hexdigest()


def excluded(profile_id: str, ids: Collection[str], erased_sha256: Collection[str]) -> bool:
    """A profile id against loaded sets: ``ids`` from ``EXCLUDED_IDS_SQL``, ``erased_sha256``
    from ``ERASED_SHA256_SQL``."""
    if profile_id in ids:
        return True
    return bool(erased_sha256) and profile_sha256(profile_id) in erased_sha256


@dataclass(frozen=True)
class Excluded:
    """Profiles whose exclusion was just recorded in ClickHouse. ``erased``: an erasure, which
    also takes them out of uploaded lists (a build filters a list, so kids' and opted-out
    profiles never reach a static segment's members anyway)."""

    profile_ids: list[str]
    erased: bool = False


Subscriber = Callable[["Client", redis.Redis, Excluded], None]


@dataclass
class ExclusionFeed:
    """The app's exclusion event: subscribers are called in order, synchronously (off the event
    loop), before the recording request answers; an exception reaches the publisher, whose
    request answers 503 so the client retries (every subscriber is idempotent)."""

    subscribers: list[Subscriber] = field(default_factory=list)

    def subscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.append(subscriber)

    def publish(self, client: Client, r: redis.Redis, event: Excluded) -> None:
        for subscriber in self.subscribers:
            subscriber(client, r, event)
