"""ClickHouse access: one client factory and the migration runner.

``connect`` is imported lazily, as every package"s names are.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adtier.store.client import connect

__all__ = ["connect"]

_WHERE = {"connect": "client"}


def __getattr__(name: str) -> Any:
    # Submodules are not listed: on this AttributeError the import system loads them itself.
    if name in _WHERE:
        return getattr(importlib.import_module(f"adtier.store.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'adtier.store' has no attribute {name!r}")
