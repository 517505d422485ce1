"""Advertiser measurement: reports, frequency, reach forecasts, content effects; privacy + audit."""

from adtier.measure.routes import MEASURE_ROUTES

__all__ = ["MEASURE_ROUTES"]
