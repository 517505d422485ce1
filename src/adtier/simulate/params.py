"""The simulator's model constants: behaviour rates and the planted effects (the ground truth).

Everything the generator draws from is here, in one place, so the truth files can quote it and
tests can compare what the data shows against what was planted.
"""

from __future__ import annotations

import numpy as np

from adtier.events import AD_EVENT_TYPES, CONTENT_EVENT_TYPES

__all__ = [
    "EVENT_TYPES", "TYPE_CODE", "DEVICES", "DEVICE_WEIGHTS", "COUNTRIES", "COUNTRY_WEIGHTS",
    "DAYPARTS", "DAYPART_START_H", "DAYPART_HOURS", "DAYPART_PRIOR", "GENRES", "KIDS_GENRES",
    "AD_CATEGORIES", "HEARTBEAT_MS", "MIDROLL_INTERVAL_MS", "PREROLL_PROB", "POD_WEIGHTS_PRE",
    "POD_WEIGHTS_MID", "EXIT_BASE", "EXIT_PER_EXTRA_AD", "LONG_POD_FROM", "exit_probability",
    "PROMO_TITLE_LIFT", "PROMO_GENRE_LIFT", "VIEWABLE_BY_DEVICE", "EARLY_ERROR_BY_DEVICE",
    "EARLY_ERROR_CODES", "MID_ERROR_CODES", "START_PROB", "MID_ERROR_PROB", "SKIPPABLE_FROM_MS",
    "SKIP_AFTER_MS", "TARGETING_EXPONENT", "KIDS_SHARE", "OPT_OUT_SHARE", "CHUNK_PROFILES",
    "ACCOUNT_SIZE_WEIGHTS", "CONTINUE_SERIES_PROB", "RATING_PROB_COMPLETE", "RATING_PROB_STOP",
]

# Event type codes: the position in this tuple (ad types first, then viewing types).
EVENT_TYPES: tuple[str, ...] = AD_EVENT_TYPES + CONTENT_EVENT_TYPES
TYPE_CODE: dict[str, int] = {t: i for i, t in enumerate(EVENT_TYPES)}

DEVICES: tuple[str, ...] = ("tv", "mobile", "tablet", "web", "console", "other")
DEVICE_WEIGHTS = np.array([0.45, 0.25, 0.10, 0.12, 0.05, 0.03])
COUNTRIES: tuple[str, ...] = ("US", "GB", "CA", "DE", "FR", "ES", "IT", "BR", "MX", "AU")
COUNTRY_WEIGHTS = np.array([0.45, 0.12, 0.08, 0.08, 0.07, 0.05, 0.05, 0.04, 0.03, 0.03])

# Dayparts in UTC hours: [start, start + hours).
DAYPARTS: tuple[str, ...] = ("morning", "afternoon", "evening", "late_night")
DAYPART_START_H = np.array([6, 12, 18, 0])
DAYPART_HOURS = np.array([6, 6, 6, 6])
DAYPART_PRIOR = np.array([0.15, 0.22, 0.48, 0.15])

GENRES: tuple[str, ...] = ("drama", "comedy", "action", "thriller", "crime", "documentary",
                           "romance", "sci_fi", "horror", "reality", "family", "kids")
KIDS_GENRES: tuple[str, ...] = ("family", "kids")

# IAB content taxonomy tier-1 categories the advertisers buy in (IAB1 is the house's own).
AD_CATEGORIES: tuple[str, ...] = ("IAB1", "IAB2", "IAB13", "IAB8", "IAB19", "IAB20", "IAB17",
                                  "IAB18", "IAB10", "IAB7", "IAB22")

# Households and profiles.
ACCOUNT_SIZE_WEIGHTS = np.array([0.28, 0.30, 0.22, 0.13, 0.07])  # 1..5 profiles
KIDS_SHARE = 0.10  # of all profiles; an account's first profile is always an adult
OPT_OUT_SHARE = 0.05  # of adult profiles

# Viewing.
HEARTBEAT_MS = 300_000  # a heartbeat every 5 minutes of content
CONTINUE_SERIES_PROB = 0.65  # next title in a session is the next episode, when there is one
RATING_PROB_COMPLETE = 0.15
RATING_PROB_STOP = 0.04

# Ad breaks: a pre-roll before a title (usually), a mid-roll every 15 minutes of content.
MIDROLL_INTERVAL_MS = 900_000
PREROLL_PROB = 0.9
POD_WEIGHTS_PRE = np.array([0.45, 0.35, 0.15, 0.05])  # pods of 1..4 ads
POD_WEIGHTS_MID = np.array([0.25, 0.35, 0.22, 0.18])

# Planted effect 1 - long pods drive viewers away: the chance that a session ends right after
# a break (the viewer leaves once the pod is over) is EXIT_BASE for pods of up to
# LONG_POD_FROM - 1 ads, plus EXIT_PER_EXTRA_AD for every ad from the LONG_POD_FROM-th on.
EXIT_BASE = 0.02
EXIT_PER_EXTRA_AD = 0.06
LONG_POD_FROM = 3


def exit_probability(pod_size: np.ndarray | int) -> np.ndarray:
    extra = np.maximum(0, np.asarray(pod_size) - (LONG_POD_FROM - 1))
    return EXIT_BASE + EXIT_PER_EXTRA_AD * extra


# Planted effect 2 - promotion works: from the day after a profile's first impression of a house
# promo campaign (never for the campaign's holdout, who are not served it), each of its
# sessions opens with the promoted title (or a title of the promoted genre) with this extra
# probability. Its absolute effect on "the session starts the promoted title" is
# lift * (1 - baseline), the baseline being small (about 1% per title).
PROMO_TITLE_LIFT = 0.10
PROMO_GENRE_LIFT = 0.08

# The VAST funnel.
VIEWABLE_BY_DEVICE = np.array([0.98, 0.88, 0.92, 0.72, 0.97, 0.85])  # in DEVICES order
EARLY_ERROR_BY_DEVICE = np.array([0.006, 0.010, 0.008, 0.015, 0.006, 0.012])
EARLY_ERROR_CODES = np.array([301, 303, 400, 401, 403])  # before the impression: no impression
MID_ERROR_CODES = np.array([402, 405, 900])  # during play
START_PROB = 0.985
MID_ERROR_PROB = 0.004
SKIPPABLE_FROM_MS = 15_000  # creatives of 15 s and more can be skipped ...
SKIP_AFTER_MS = 5_000  # ... after 5 seconds
TARGETING_EXPONENT = 1.5  # ad serving weights a campaign by affinity ** this (targetable profiles)

# Profiles per generation chunk. Part of the model: the random streams are per (chunk, day), so
# the same seed gives the same events whatever the mode, only with the same chunk size.
CHUNK_PROFILES = 32_768
