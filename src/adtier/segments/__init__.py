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

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adtier.segments.routes import SEGMENT_ROUTES

__all__ = ["SEGMENT_ROUTES"]

_WHERE = {"SEGMENT_ROUTES": "routes"}


def __getattr__(name: str) -> Any:
    # Submodules are not listed: on this AttributeError the import system loads them itself.
    if name in _WHERE:
        return getattr(importlib.import_module(f"adtier.segments.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'adtier.segments' has no attribute {name!r}")
