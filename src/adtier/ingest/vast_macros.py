"""VAST 4.x macro values as the IAB defines them (``vast4macros/data/macros-data.json`` in the
IAB Tech Lab's ``InteractiveAdvertisingBureau/vast`` repository): one reader per macro the pixel
uses. A reader returns the value in our units or raises :class:`MacroError` naming the macro
and the format it expected; the pixel turns that into a rejection with its reason.

The query string is decoded once by the server; a player that percent-encodes a value (the
IAB examples show both forms, e.g. ``00%3A05%3A21.123``) arrives here as the raw text, and a
value encoded twice is decoded once more where its format cannot contain ``%``.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from urllib.parse import unquote

__all__ = [
    "MacroError",
    "unfilled",
    "timecode_ms",
    "timestamp_ms",
    "break_position",
    "server_side",
    "error_code",
    "reason_code",
    "int_value",
    "progress_offset",
]


class MacroError(ValueError):
    """A macro value outside the IAB format; ``str()`` is the detail kept with the rejection."""


# An unfilled macro is the placeholder itself. VAST macros are `[NAME]` (VAST 4.x section 6,
# "Macros"), sent raw or percent-encoded (`%5BNAME%5D`, once or twice). `${NAME}` is the IAB
# OpenRTB substitution-macro syntax, which SSPs also put in tracking URLs. `__NAME__` and
# `{NAME}` are no IAB syntax: an id such as `__0__` is a value and is kept.
_UNFILLED = re.compile(r"^(?:\[|%5B|%255B|\$\{|%24%7B)[A-Z0-9_.:-]*(?:\]|%5D|%255D|\}|%7D)$",
                       re.IGNORECASE)


def unfilled(value: str) -> bool:
    """True for a macro placeholder the player did not substitute (it counts as absent)."""
    return bool(_UNFILLED.match(value))


def _decoded(value: str) -> str:
    """The value with one more round of percent-decoding if it still holds an escape."""
    return unquote(value) if "%" in value else value


# [ADPLAYHEAD] / [MEDIAPLAYHEAD] / [CONTENTPLAYHEAD]: `{HH:MM:SS.mmm}` (the schema's time
# pattern: minutes and seconds 00-59, milliseconds optional, three digits), or plain
# milliseconds, which some players send.
_TIMECODE = re.compile(r"^(\d{1,3}):([0-5]\d):([0-5]\d)(?:\.(\d{1,3}))?$")
_MILLIS = re.compile(r"^\d{1,10}$")
_MAX_MS = 2**31 - 1


def timecode_ms(value: str, macro: str = "ADPLAYHEAD") -> int:
    text = _decoded(value)
    if _MILLIS.match(text):
        ms = int(text)
    elif match := _TIMECODE.match(text):
        h, m, s, frac = match.groups()
        ms = ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int((frac or "0").ljust(3, "0"))
    else:
        raise MacroError(f"[{macro}] {value!r} is not HH:MM:SS.mmm or milliseconds")
    if ms > _MAX_MS:
        raise MacroError(f"[{macro}] {value!r} is beyond {_MAX_MS} ms")
    return ms


# [TIMESTAMP]: ISO 8601 `{YYYY-MM-DD}T{HH:MM:SS}.{mmm}{+/-}{ZONEOFFSET}`. The IAB's own example
# `2016-01-17T8:15:07.127-05` has a one-digit hour and an hours-only offset, so both are read;
# milliseconds are optional, and so is the zone (none = UTC). Epoch milliseconds are accepted
# as before (our SDK sends them).
_TIMESTAMP = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{1,2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?"
    r"(Z|[+-]\d{2}(?::?\d{2})?)?$", re.IGNORECASE)


def timestamp_ms(value: str) -> int:
    text = _decoded(value).strip()
    if text.isdigit() and len(text) <= 15:
        return int(text)
    # an unencoded '+' of a zone offset arrives as a space: '...07.127 05:30'
    text = re.sub(r" (\d{2}(?::?\d{2})?)$", r"+\1", text)
    match = _TIMESTAMP.match(text)
    if not match:
        raise MacroError(f"[TIMESTAMP] {value!r} is not ISO 8601 (YYYY-MM-DDTHH:MM:SS.mmm+HH:MM)")
    y, mo, d, h, mi, s, frac, zone = match.groups()
    try:
        at = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=timezone.utc)
        ms = int(at.timestamp()) * 1000 + int((frac or "0")[:3].ljust(3, "0"))
        if zone and zone.upper() != "Z":
            sign = -1 if zone[0] == "-" else 1
            digits = zone[1:].replace(":", "")
            offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
            if offset >= timedelta(hours=24):
                raise ValueError("zone offset of 24 hours or more")
            ms -= sign * int(offset.total_seconds()) * 1000
    except (ValueError, OverflowError) as err:
        raise MacroError(f"[TIMESTAMP] {value!r}: {err}") from None
    return ms


# [BREAKPOSITION]: 1 pre-roll, 2 mid-roll, 3 post-roll, 4 standalone, 0 other (the macro list's
# BREAKPOSITION_values). Our model keeps pre|mid|post; standalone and other have no break
# position (absent), which is what they mean for an ad tier: not in a content break.
_BREAK = {"1": "pre", "2": "mid", "3": "post", "4": None, "0": None,
          "pre": "pre", "mid": "mid", "post": "post",
          "preroll": "pre", "midroll": "mid", "postroll": "post",
          "pre-roll": "pre", "mid-roll": "mid", "post-roll": "post"}


def break_position(value: str) -> str | None:
    key = value.strip().lower()
    if key not in _BREAK:
        raise MacroError(f"[BREAKPOSITION] {value!r} is not 0-4 (IAB) or pre|mid|post")
    return _BREAK[key]


def server_side(value: str) -> int:
    """[SERVERSIDE]: 0 client, 1 server on the client's behalf, 2 server on its own decision."""
    if value.strip() not in ("0", "1", "2"):
        raise MacroError(f"[SERVERSIDE] {value!r} is not 0, 1 or 2")
    return int(value)


def int_value(value: str, macro: str, low: int, high: int) -> int:
    text = value.strip()
    if not text.isdigit() or not low <= int(text) <= high:
        raise MacroError(f"[{macro}] {value!r} is not an integer in {low}-{high}")
    return int(text)


def error_code(value: str) -> int:
    """[ERRORCODE]: a VAST error code (section 2.3.6.3), 100-902."""
    return int_value(value, "ERRORCODE", 100, 902)


def reason_code(value: str) -> int:
    """[REASON] of verificationNotExecuted: an integer code (1 ... ; 3 digits at most)."""
    return int_value(value, "REASON", 0, 999)


# The schema's pattern for a Tracking offset: HH:MM:SS(.mmm) or a percentage.
_OFFSET = re.compile(r"^(\d{2}:[0-5]\d:[0-5]\d(\.\d\d\d)?|1?\d?\d(\.?\d)*%)$")


def progress_offset(value: str) -> str:
    """The ``offset`` attribute of a progress Tracking element (required for progress)."""
    text = _decoded(value).strip()
    if not _OFFSET.match(text):
        raise MacroError(f"progress offset {value!r} is not HH:MM:SS.mmm or n%")
    return text
