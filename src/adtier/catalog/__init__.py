"""Catalog (advertisers, campaigns, creatives, titles), profiles and privacy (opt-out, erasure).

Admin-only routes in ``routes``; the SQL in ``store`` (who must never enter targeting is
``adtier.privacy.exclusions``: the catalog records exclusions and publishes them); the holdout rule in ``holdouts`` (pure Python) and
its Valkey mirror for the segment look-up in ``holdout_mirror``.

Names are imported lazily (as ``adtier.simulate`` does): importing ``adtier.catalog.holdouts``
(the simulator, measurement) must not pull in the web stack, Redis and ClickHouse clients.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adtier.lazy import lazy_names

if TYPE_CHECKING:
    from adtier.catalog.routes import CATALOG_ROUTES

__all__ = ["CATALOG_ROUTES"]

_WHERE = {
    "CATALOG_ROUTES": "routes",
}

__getattr__ = lazy_names(__name__, _WHERE)
