"""Advertiser measurement: reports, frequency, reach forecasts, content effects, log-level data.

Names are imported lazily (one style for every package): importing ``adtier.measure.reach`` (the
CLI, the simulator, batch jobs) must not pull in the routes and the web stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adtier.lazy import lazy_names

if TYPE_CHECKING:
    from adtier.measure.routes import MEASURE_ROUTES

__all__ = ["MEASURE_ROUTES"]

_WHERE = {"MEASURE_ROUTES": "routes"}

__getattr__ = lazy_names(__name__, _WHERE)
