"""Catalog (advertisers, campaigns, creatives, titles), profiles and privacy (opt-out, erasure).

Admin-only routes in ``routes``; the SQL, and ``excluded_profiles_sql()`` (the profiles that
must never enter targeting), in ``store``; the holdout rule in ``holdouts`` (pure Python) and
its Valkey mirror for the segment look-up in ``holdout_mirror``.

Names are imported lazily (as ``adtier.simulate`` does): importing ``adtier.catalog.holdouts``
(the simulator, measurement) must not pull in the web stack, Redis and ClickHouse clients.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adtier.lazy import lazy_names

if TYPE_CHECKING:
    from adtier.catalog.routes import CATALOG_ROUTES
    from adtier.catalog.store import excluded_profile_hashes_sql, excluded_profiles_sql

__all__ = ["CATALOG_ROUTES", "excluded_profiles_sql", "excluded_profile_hashes_sql"]

_WHERE = {
    "CATALOG_ROUTES": "routes",
    "excluded_profiles_sql": "store",
    "excluded_profile_hashes_sql": "store",
}

__getattr__ = lazy_names(__name__, _WHERE)
