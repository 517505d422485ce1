"""A synthetic ad-tier world with known ground truth (``adtier simulate``, ``serve --demo``).

- ``world``: households, profiles and their latent traits; the catalog (titles, advertisers,
  campaigns, creatives);
- ``sessions``: vectorised viewing sessions, ad breaks, pods, the VAST funnel and the planted
  effects, one (chunk of profiles, day) block at a time;
- ``emit``: blocks as Arrow tables (direct inserts), JSON events and VAST pixel queries;
- ``direct`` / ``http_mode``: into ClickHouse directly, or through the real API;
- ``truth``: the ground truth as Parquet;
- ``ids``: vectorised ids, seeded UUIDs and the holdout assignment rule (``in_holdout``,
  ``HOLDOUT_SQL``), shared with measurement and ad decisioning.

Submodules are imported lazily: ``adtier.simulate.build_world`` etc. work as attributes.
"""

from __future__ import annotations

from adtier.lazy import lazy_names

__all__ = ["build_world", "World", "iterate_days", "simulate_day", "TruthRecorder", "Truth",
           "run_direct", "run_http", "HttpOptions", "in_holdout", "HOLDOUT_SQL"]

_WHERE = {
    "build_world": "world", "World": "world", "iterate_days": "sessions",
    "simulate_day": "sessions", "TruthRecorder": "truth", "Truth": "truth",
    "run_direct": "direct", "run_http": "http_mode", "HttpOptions": "http_mode",
    "in_holdout": "ids", "HOLDOUT_SQL": "ids",
}

__getattr__ = lazy_names(__name__, _WHERE)
