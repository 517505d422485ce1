"""Catalog (advertisers, campaigns, creatives, titles), profiles and privacy (opt-out, erasure).

Admin-only routes in ``routes``; the SQL, and ``excluded_profiles_sql()`` (the profiles that
must never enter targeting), in ``store``.
"""

from adtier.catalog.routes import CATALOG_ROUTES
from adtier.catalog.store import excluded_profile_hashes_sql, excluded_profiles_sql

__all__ = ["CATALOG_ROUTES", "excluded_profiles_sql", "excluded_profile_hashes_sql"]
