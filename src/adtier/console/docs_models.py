"""Documentation-only shapes: the request bodies of handlers that decode their own body (with
the same msgspec Structs they decode with), the answers of handlers that return a prepared
``Response``, and the pixel's parameters. Used by ``openapi.complete``; nothing decodes with
the answer Structs here, they describe what ``adtier.measure`` sends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from adtier.catalog.models import Advertiser, Campaign, Creative, Items, OptOutRequest, Profile, Title
from adtier.events import Event
from adtier.ingest.pixel import PIXEL_EVENTS
from adtier.measure.routes import ForecastRequest
from adtier.segments.routes import SegmentRequest

__all__ = ["BODIES", "RESPONSES", "FILES", "PIXEL_PATH", "Body"]


class EventsBody(msgspec.Struct):
    """A batch (JSON or msgpack, optionally gzip): each event is checked on its own, so one
    bad event is rejected with a reason while the rest are accepted. NDJSON: one event a
    line, no envelope."""
    events: list[Event]  # type: ignore[valid-type]
    sent_at: str | int | None = None


@dataclass(frozen=True)
class Body:
    type: Any
    description: str
    media_types: tuple[str, ...] = ("application/json",)


def _items(model: type, what: str) -> Body:
    return Body(Items[model], f"{what}: at most 10,000 items; the last item of a repeated id "
                              "wins; a bad item answers 400 naming its index and field")


BODIES: dict[tuple[str, str], Body] = {
    ("POST", "/v1/events"): Body(EventsBody, EventsBody.__doc__ or "",
                                 ("application/json", "application/msgpack",
                                  "application/x-ndjson")),
    ("PUT", "/v1/catalog/advertisers"): _items(Advertiser, "advertisers"),
    ("PUT", "/v1/catalog/campaigns"): _items(Campaign, "campaigns (the advertiser must exist)"),
    ("PUT", "/v1/catalog/creatives"): _items(Creative, "creatives (the campaign must exist)"),
    ("PUT", "/v1/catalog/titles"): _items(Title, "titles"),
    ("PUT", "/v1/profiles"): _items(Profile, "profiles (kind adult or kids)"),
    ("POST", "/v1/privacy/opt-out"): Body(OptOutRequest, "profiles to opt out, for good"),
    ("POST", "/v1/segments"): Body(SegmentRequest, "a rule, lookalike or static segment; "
                                   "`rule` is the tree of the rule language (docs/segments.md)"),
    ("POST", "/v1/forecast/reach"): Body(ForecastRequest, "what to plan"),
}


class Metrics(msgspec.Struct):
    """One report row's measures (further measures may be present; the console shows all)."""
    impressions: int
    reach: int
    avg_frequency: float
    starts: int
    first_quartile: int
    midpoint: int
    third_quartile: int
    completes: int
    vcr: float
    skips: int
    skip_rate: float
    clicks: int
    ctr: float
    viewable_impressions: int
    viewable_rate: float
    errors: int


class ReportRow(Metrics):
    """The breakdown's key is the field named by ``by`` (day, device, country, creative or
    break_position)."""
    day: str | None = None
    device: str | None = None
    country: str | None = None
    creative: str | None = None
    break_position: str | None = None


class Report(msgspec.Struct):
    report_id: str
    campaign_id: str
    by: str
    k: int
    rows: list[ReportRow]
    totals: Metrics | None  # None when the whole campaign covers fewer than k profiles
    suppressed_rows: int  # rows under k, folded into ``suppressed``
    suppressed: Metrics | None  # the folded remainder, when it reaches k
    data_through: str | None
    from_: str = msgspec.field(name="from")
    to: str = ""


class FrequencyBucket(msgspec.Struct):
    frequency: str  # "1".."9", "10+"
    profiles: int
    impressions: int


class SuppressedBuckets(msgspec.Struct):
    frequencies: list[str]
    profiles: int
    impressions: int | None = None


class ReachPoint(msgspec.Struct):
    day: str
    reach: int


class Frequency(msgspec.Struct):
    report_id: str
    campaign_id: str
    k: int
    reach: int | None
    impressions: int | None
    avg_frequency: float | None
    distribution: list[FrequencyBucket]
    suppressed: SuppressedBuckets | None
    suppressed_rows: int
    cumulative_reach: list[ReachPoint]
    data_through: str | None


class Estimate(msgspec.Struct):
    metric: str
    estimate: float
    ci95: list[float]
    std_error: float
    relative: float | None


class ContentEffects(msgspec.Struct):
    """``kind`` is ``holdout_lift`` (randomised: ``lift``) or ``observational`` (no holdout:
    ``difference`` and a ``caveat``; never called lift)."""
    report_id: str
    campaign_id: str
    kind: Literal["holdout_lift", "observational"]
    target: dict[str, str]
    holdout_percent: float
    window_days: int
    k: int
    suppressed: bool
    arms: list[dict[str, Any]] = []
    lift: list[Estimate] | None = None
    difference: list[Estimate] | None = None
    caveat: str | None = None
    exposed_share: float | None = None
    data_through: str | None = None


class ForecastBucket(msgspec.Struct):
    frequency: str
    profiles: int


class Forecast(msgspec.Struct):
    report_id: str
    segment_ids: list[str]
    universe: int
    impressions: int
    deliverable_impressions: int
    frequency_cap: int
    days: int
    reach: int
    reach_share: float
    avg_frequency: float
    distribution: list[ForecastBucket]
    model: str
    backtest_error: float | None
    backtest: dict[str, Any]
    k: int | None = None
    suppressed: SuppressedBuckets | None = None


RESPONSES: dict[tuple[str, str], Any] = {
    ("GET", "/v1/campaigns/{campaign_id}/report"): Report,
    ("GET", "/v1/campaigns/{campaign_id}/frequency"): Frequency,
    ("GET", "/v1/campaigns/{campaign_id}/content-effects"): ContentEffects,
    ("POST", "/v1/forecast/reach"): Forecast,
}

_BINARY = {"type": "string", "format": "binary"}
# Answers that are files, not JSON: the media types they are sent as.
FILES: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/v1/campaigns/{campaign_id}/log-level"): {
        "application/vnd.apache.parquet": {"schema": _BINARY}},
    ("GET", "/v1/features/export"): {
        "application/vnd.apache.arrow.stream": {"schema": _BINARY},
        "application/vnd.apache.parquet": {"schema": _BINARY}},
}

_PIXEL_PARAMS = (
    ("k", "an ingest key", True),
    ("e", "the VAST event: " + ", ".join(PIXEL_EVENTS), True),
    ("asid", "[ADSERVINGID]: one ad play", False),
    ("cmp", "campaign id", False), ("cr", "creative id", False),
    ("acc", "account id", False), ("pf", "profile id", False), ("ses", "session id", False),
    ("pod", "pod id", False), ("pos", "position in the pod", False),
    ("bp", "[BREAKPOSITION] (0-4, or pre|mid|post)", False),
    ("dur", "ad duration (ms or HH:MM:SS.mmm)", False),
    ("ph", "[ADPLAYHEAD] (HH:MM:SS.mmm or ms)", False), ("c", "[CONTENTID]", False),
    ("dev", "device: tv|mobile|tablet|web|console|other", False),
    ("cc", "country, ISO 3166 alpha-2", False), ("ts", "[TIMESTAMP] (ISO 8601 or epoch ms)",
                                                 False),
    ("cb", "[CACHEBUSTING] (ignored)", False), ("err", "[ERRORCODE] (VAST 100-902)", False),
)

PIXEL_PATH: tuple[str, dict[str, Any]] = ("/v1/px", {"get": {
    "tags": ["ingest"],
    "summary": "VAST tracking pixel",
    "description": "Put these URLs in VAST (`GET /v1/px/template` prints them). A macro left "
                   "unsubstituted counts as absent; a retry of the same ad play and event is "
                   "a duplicate. Always answers a 1x1 GIF (`no-store`) so a player is never "
                   "broken; what it rejects goes to `rejected_events` with a reason.",
    "operationId": "VastTrackingPixel",
    "security": [{"pixel_key": []}],
    "parameters": [{"name": n, "in": "query", "required": req, "description": d,
                    "schema": {"type": "string"}} for n, d, req in _PIXEL_PARAMS],
    "responses": {"200": {"description": "a 1x1 GIF, whatever happened",
                          "content": {"image/gif": {"schema": {"type": "string",
                                                               "format": "binary"}}}}},
}})
