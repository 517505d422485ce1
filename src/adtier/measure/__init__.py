"""Advertiser measurement: reports, frequency, reach forecasts, content effects, log-level data.

Names are imported lazily (one style for every package): importing ``adtier.measure.reach`` (the
CLI, the simulator, batch jobs) must not pull in the routes and the web stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adtier.measure.routes import MEASURE_ROUTES

__all__ = ["MEASURE_ROUTES"]

_WHERE = {"MEASURE_ROUTES": "routes"}


def __getattr__(name: str) -> Any:
    # Submodules are not listed: on this AttributeError the import system loads them itself.
    if name in _WHERE:
        return getattr(importlib.import_module(f"adtier.measure.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'adtier.measure' has no attribute {name!r}")
