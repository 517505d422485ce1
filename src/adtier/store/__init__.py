"""ClickHouse access: one client factory and the migration runner.

``connect`` is imported lazily, as every package"s names are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adtier.lazy import lazy_names

if TYPE_CHECKING:
    from adtier.store.client import connect

__all__ = ["connect"]

_WHERE = {"connect": "client"}

__getattr__ = lazy_names(__name__, _WHERE)
