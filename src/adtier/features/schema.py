"""The versioned schema of the feature feed: names, types, definitions, windows.

``FEATURE_SCHEMA_VERSION`` changes whenever a column is added, removed, retyped or redefined;
every row of ``profile_features`` and every export carries it (``schema_version``, and the
Arrow schema metadata ``adtier.schema_version``). ``EXPORT_SCHEMA`` is the Arrow schema of the
bulk export; tests pin it so a change is deliberate.
"""

from __future__ import annotations

import pyarrow as pa

__all__ = [
    "FEATURE_SCHEMA_VERSION",
    "WINDOW_DAYS",
    "GENRE_HALF_LIFE_DAYS",
    "RATING_PRIOR_WEIGHT",
    "FATIGUE_SHRINK",
    "ABANDON_WINDOW_S",
    "MIN_SESSION_HOURS",
    "COLUMNS",
    "KEY_COLUMNS",
    "FEATURE_COLUMNS",
    "EXPORT_SCHEMA",
]

FEATURE_SCHEMA_VERSION = 2  # v2: ad_sessions, post_ad_abandons, ad_load, ad_tolerance
WINDOW_DAYS = 30            # every batch feature covers the 30 days up to ``as_of``
GENRE_HALF_LIFE_DAYS = 14.0  # genre minutes decay with a 14-day half-life inside the window
RATING_PRIOR_WEIGHT = 2.0   # rating sentiment: 2 pseudo-ratings of value 0 (neutral)
FATIGUE_SHRINK = 10.0       # fatigue slope shrunk by n / (n + 10) ad plays
ABANDON_WINDOW_S = 60       # a session "abandoned after an ad" ends <= 60 s after an ad event
MIN_SESSION_HOURS = 1 / 60  # ad load: a session counts at least 1 minute of watch time

_SHARES = pa.map_(pa.string(), pa.float32())

# name, Arrow type, definition
COLUMNS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("profile_id", pa.string(), "profile id; '' on the tombstone of an erased profile"),
    ("profile_sha256", pa.string(), "lower-hex SHA-256 of profile_id (matches erasures)"),
    ("deleted", pa.uint8(), "1: tombstone, drop this profile (kids, opted out or erased)"),
    ("schema_version", pa.uint16(), "FEATURE_SCHEMA_VERSION of the writer"),
    ("as_of", pa.date32(), "last day of the window (day of the latest stored event)"),
    ("window_days", pa.uint16(), "window length in days (WINDOW_DAYS)"),
    ("impressions", pa.uint32(), "ad impressions in the window"),
    ("completes", pa.uint32(), "ad completes in the window"),
    ("skips", pa.uint32(), "ad skips in the window"),
    ("clicks", pa.uint32(), "ad clicks in the window"),
    ("completion_rate", pa.float32(),
     "(completes + 1) / (impressions + 2): Beta(1, 1)-smoothed completion rate"),
    ("skip_propensity", pa.float32(),
     "(skips + 1) / (impressions + 2): Beta(1, 1)-smoothed skip rate"),
    ("ctr", pa.float32(), "(clicks + 0.5) / (impressions + 50): Beta(0.5, 49.5)-smoothed CTR"),
    ("ad_category_affinity", _SHARES,
     "share of the window's impressions per campaign ad category (IAB id); non-zero only"),
    ("watch_minutes", pa.float32(), "minutes watched in the window"),
    ("genre_affinity", _SHARES,
     "share of watch minutes per genre, 14-day half-life decay; non-zero only"),
    ("ratings", pa.uint32(), "ratings given in the window"),
    ("rating_sentiment", pa.float32(),
     "sum(values in -1|1|2) / (ratings + 2): mean rating shrunk towards 0 (neutral)"),
    ("ad_fatigue", pa.float32(),
     "OLS slope of completed (0/1) on the play's ordinal within (campaign, day), shrunk by "
     "n / (n + 10); negative = completes less as the same ad repeats"),
    ("ad_sessions", pa.uint32(), "sessions (session_id) with at least one ad impression"),
    ("post_ad_abandons", pa.uint32(),
     "ad sessions whose last event (ad or viewing, any type) is at most 60 s after the "
     "session's last ad event: the viewer left during an ad break or within a minute of it"),
    ("ad_load", pa.float32(),
     "ad impressions per watch hour over the ad sessions: sum(impressions) / sum(hours), a "
     "session's hours = its plays' largest watched_ms summed, at least 1 minute"),
    ("ad_tolerance", pa.float32(),
     "ads per watch hour before abandoning: ad_load over the abandoned ad sessions only; for a "
     "profile that never abandoned after an ad, its ad_load (it sat through at least that); "
     "0 without ad sessions"),
    ("computed_at", pa.timestamp("ms", tz="UTC"), "when the row was computed"),
    ("watermark", pa.uint64(), "monotonic write stamp (ns); export since= compares with it"),
)
KEY_COLUMNS = ("profile_id", "profile_sha256", "deleted", "watermark")
FEATURE_COLUMNS = tuple(name for name, _, _ in COLUMNS if name not in KEY_COLUMNS)
EXPORT_SCHEMA = pa.schema([pa.field(name, typ) for name, typ, _ in COLUMNS],
                          metadata={"adtier.schema_version": str(FEATURE_SCHEMA_VERSION)})
