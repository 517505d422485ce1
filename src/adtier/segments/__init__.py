"""First-party audiences (docs/segments.md): rule, lookalike and static segments.

- ``rules``: the rule language (JSON trees) and the feature catalog;
- ``features``: per-profile pre-aggregation in ClickHouse, as Arrow, in chunks of profiles;
- ``kernels``: the Numba kernels (windowed counts, smoothed rates, shares, recency, predicates);
- ``build``: a build, versioned and swapped atomically in ClickHouse and Redis;
- ``lookalike``: seed centroid and cosine similarity of affinity vectors;
- ``store``: the tables and Redis keys; ``routes``: the HTTP endpoints.

``SEGMENT_ROUTES`` is imported lazily (as every package"s names are) so the CLI and tests can
use the builder alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adtier.lazy import lazy_names

if TYPE_CHECKING:
    from adtier.segments.routes import SEGMENT_ROUTES

__all__ = ["SEGMENT_ROUTES"]

_WHERE = {"SEGMENT_ROUTES": "routes"}

__getattr__ = lazy_names(__name__, _WHERE)
