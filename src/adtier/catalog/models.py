"""Request and answer models of the catalog, profile and privacy endpoints (msgspec Structs).

Each bulk request is ``{"items": [...]}`` decoded by one reused typed decoder, so a bad item is
reported with its place: ``... - at `$.items[3].end_date```. Checks that span fields live in
``__post_init__``; msgspec reports what they raise with the item's path.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Generic, Literal, TypeVar

import msgspec
from msgspec import Meta

__all__ = [
    "Id",
    "Advertiser",
    "Campaign",
    "Creative",
    "Title",
    "Profile",
    "Items",
    "OptOutRequest",
    "Upserted",
    "OptedOut",
    "Erased",
    "Page",
    "PrivacyStatus",
]

MAX_ITEMS = 10_000

Id = Annotated[str, Meta(min_length=1, max_length=64)]
Name = Annotated[str, Meta(max_length=512)]
UInt32 = Annotated[int, Meta(ge=0, le=2**32 - 1)]
# IAB content taxonomy 1.0 ids: a tier-1 category IAB1..IAB26, optionally a tier-2 "-n".
AdCategory = Annotated[str, Meta(pattern=r"^IAB([1-9]|1[0-9]|2[0-6])(-[1-9][0-9]?)?$")]
Genre = Annotated[str, Meta(min_length=1, max_length=64)]
# US film (MPA) and TV Parental Guidelines ratings; NR = not rated.
MATURITY_RATINGS: tuple[str, ...] = (
    "G", "PG", "PG-13", "R", "NC-17", "NR",
    "TV-Y", "TV-Y7", "TV-Y7-FV", "TV-G", "TV-PG", "TV-14", "TV-MA",
)
Maturity = Literal[
    "G", "PG", "PG-13", "R", "NC-17", "NR",
    "TV-Y", "TV-Y7", "TV-Y7-FV", "TV-G", "TV-PG", "TV-14", "TV-MA",
]

T = TypeVar("T")


class Advertiser(msgspec.Struct, forbid_unknown_fields=True):
    advertiser_id: Id
    name: Name


class Campaign(msgspec.Struct, forbid_unknown_fields=True):
    campaign_id: Id
    advertiser_id: Id
    name: Name
    ad_category: AdCategory
    start_date: dt.date
    end_date: dt.date
    frequency_cap: UInt32  # impressions per profile per day; 0 = no cap
    holdout_percent: Annotated[float, Meta(ge=0, le=50)]
    promoted_title_id: Id | None = None
    promoted_genre: Genre | None = None

    def __post_init__(self) -> None:
        if self.end_date < self.start_date:
            raise ValueError(f"`end_date` {self.end_date} is before `start_date` {self.start_date}")


class Creative(msgspec.Struct, forbid_unknown_fields=True):
    creative_id: Id
    campaign_id: Id
    name: Name
    duration_ms: Annotated[int, Meta(gt=0, le=2**32 - 1)]


class Title(msgspec.Struct, forbid_unknown_fields=True):
    content_id: Id
    name: Name
    kind: Literal["film", "series", "episode"]
    genres: Annotated[list[Genre], Meta(max_length=32)]
    maturity: Maturity
    duration_ms: UInt32
    series_id: Id | None = None

    def __post_init__(self) -> None:
        if self.kind == "episode" and self.series_id is None:
            raise ValueError("`series_id` is required for an episode")
        if self.kind != "episode" and self.series_id is not None:
            raise ValueError(f"`series_id` is only for episodes, not a {self.kind}")


class Profile(msgspec.Struct, forbid_unknown_fields=True):
    profile_id: Id
    account_id: Id
    kind: Literal["adult", "kids"]


class Items(msgspec.Struct, Generic[T], forbid_unknown_fields=True):
    items: Annotated[list[T], Meta(max_length=MAX_ITEMS)]


class OptOutRequest(msgspec.Struct, forbid_unknown_fields=True):
    profile_ids: Annotated[list[Id], Meta(max_length=MAX_ITEMS)]


class Upserted(msgspec.Struct):
    upserted: int  # distinct ids written (a repeated id in one request counts once: last wins)


class OptedOut(msgspec.Struct):
    opted_out: int  # distinct profiles in the request, all now opted out
    already_opted_out: int  # of which were opted out before (their first time is kept)


class Erased(msgspec.Struct):
    profile_id: str
    erased: bool


class Page(msgspec.Struct):
    items: list[dict[str, object]]
    total: int
    limit: int
    offset: int


class PrivacyStatus(msgspec.Struct):
    profile_id: str
    kind: str | None  # adult | kids | None when the profile is not (or no longer) known
    opted_out: bool
    opted_out_at: dt.datetime | None
    erased: bool
    last_erased_at: dt.datetime | None
    excluded: bool  # never enters segments, lookalikes or feature exports
