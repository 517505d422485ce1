"""Small read endpoints the console needs and the API lacked.

- ``GET /v1/whoami``: the signed-in key's id, role and advertiser (advertiser or admin keys).
- ``GET /v1/campaigns``: the campaigns a key may see (an advertiser key: its advertiser's;
  admin: all). Catalog facts only, no measurement, so nothing to suppress or audit.
- ``GET /v1/ops/ingest|rejects|pipeline|catalog`` (admin): ingest rate by event type, rejects
  by reason with recent examples, buffer lag and flusher health (asked of the buffer, the
  only code that reads its stream), catalog counts.

A store's failure is answered by the app's handlers (``adtier.errors``: 503, Retry-After).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.params import QueryParameter
from prometheus_client import REGISTRY

from adtier.state import AppState, app_state, authorize

__all__ = ["CONSOLE_API_ROUTES", "CampaignsController", "OpsReadController", "WhoAmIController"]


class CampaignItem(msgspec.Struct):
    campaign_id: str
    advertiser_id: str
    name: str
    ad_category: str
    start_date: dt.date
    end_date: dt.date
    frequency_cap: int
    holdout_percent: float
    promoted_title_id: str | None
    promoted_genre: str | None


class CampaignList(msgspec.Struct):
    items: list[CampaignItem]


class IngestPoint(msgspec.Struct):
    at: dt.datetime  # start of the bucket (UTC)
    type: str
    family: str  # impressions | quartiles | interactions | errors | viewing | ratings
    events: int


class IngestRate(msgspec.Struct):
    hours: int
    bucket_seconds: int
    since: dt.datetime
    points: list[IngestPoint]
    by_type: dict[str, int]
    by_family: dict[str, int]


class RejectExample(msgspec.Struct):
    received_at: dt.datetime
    source: str
    batch_id: str
    detail: str
    raw: str  # the first 500 bytes the client sent


class RejectReason(msgspec.Struct):
    reason: str
    count: int
    examples: list[RejectExample]


class Rejects(msgspec.Struct):
    hours: int
    total: int
    reasons: list[RejectReason]


class Consumer(msgspec.Struct):
    name: str
    pending: int  # entries read and not yet acknowledged (in a flush, or stuck)
    idle_ms: int  # since this consumer last read or claimed


class LocalFlusher(msgspec.Struct):
    name: str
    alive: bool


class Pipeline(msgspec.Struct):
    lag_events: int
    lag_seconds: float
    stream_entries: int
    consumers: list[Consumer]
    local_flushers: list[LocalFlusher]
    counters: dict[str, Any]  # this process's Prometheus counters


class WhoAmI(msgspec.Struct):
    key_id: str
    role: str
    advertiser_id: str
    name: str


class CatalogCounts(msgspec.Struct):
    counts: dict[str, int]


_CAMPAIGN_COLUMNS = ", ".join(CampaignItem.__struct_fields__)


class CampaignsController(Controller):
    path = "/v1/campaigns"
    tags = ["measurement"]

    @get("/", summary="The campaigns this key may measure")
    async def list_campaigns(self, request: Request) -> CampaignList:
        """An advertiser key lists its advertiser's campaigns; admin lists all."""
        key = await authorize(request, "advertiser")
        where, params = "1", {}
        if key.role != "admin":
            where, params = "advertiser_id = {a:String}", {"a": key.advertiser_id}
        rows = await app_state(request).query(
            f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns FINAL "
            f"WHERE {where} ORDER BY start_date DESC, campaign_id", params)
        return CampaignList([CampaignItem(*row) for row in rows])


class WhoAmIController(Controller):
    path = "/v1/whoami"
    tags = ["admin"]

    @get("/", summary="The key this request is signed with (never its secret)")
    async def whoami(self, request: Request) -> WhoAmI:
        """An advertiser or admin key (the roles the console serves): its id, role and
        advertiser, so the console shows the pages that role may use. 401 for an unknown or
        revoked key, 403 (naming the roles) for any other role."""
        key = await authorize(request, "advertiser")
        return WhoAmI(key.key_id, key.role, key.advertiser_id, key.name)


Hours = Annotated[int, QueryParameter(ge=1, le=24 * 30, description="window, hours back")]

# One pass over each events table; the minute or hour bucket keeps the answer small.
_INGEST_SQL = """
SELECT toStartOfInterval(received_at, INTERVAL {step:UInt32} SECOND) AS at, type, count()
FROM {table:Identifier} WHERE received_at >= {since:DateTime64(3)}
GROUP BY at, type ORDER BY at, type
"""
# Counts by reason, then the newest few of each (LIMIT BY, along the table's sort key):
# never every reject of a flood in memory.
_REJECT_COUNTS_SQL = """
SELECT reason, count() FROM rejected_events WHERE received_at >= {since:DateTime64(3)}
GROUP BY reason ORDER BY count() DESC, reason
"""
_REJECT_EXAMPLES_SQL = """
SELECT reason, received_at, source, batch_id, detail, substring(raw, 1, 500)
FROM rejected_events WHERE received_at >= {since:DateTime64(3)}
ORDER BY reason, received_at DESC LIMIT {examples:UInt32} BY reason
"""
# Event types in a few families: a chart of six series stays readable (and colour-blind safe:
# the palette has eight colours); the table keeps every type.
_FAMILIES = {"impression": "impressions", "viewable_impression": "impressions",
             "start": "quartiles", "first_quartile": "quartiles", "midpoint": "quartiles",
             "third_quartile": "quartiles", "complete": "quartiles", "error": "errors",
             "rating": "ratings", "content_start": "viewing", "content_heartbeat": "viewing",
             "content_complete": "viewing", "content_stop": "viewing"}
_COUNTED = ("advertisers", "campaigns", "creatives", "titles", "profiles", "segments",
            "privacy_optouts")


def _since(hours: int) -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=hours)


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _counters() -> dict[str, Any]:
    """This process's ingest counters, read from the Prometheus registry (the same numbers
    ``/metrics`` serves)."""
    wanted = {"adtier_events_accepted": "accepted", "adtier_events_rejected": "rejected",
              "adtier_events_duplicate": "duplicates", "adtier_flush_failures": "flush_failures",
              "adtier_flush_seconds": "flushes"}
    out: dict[str, Any] = {}
    for family in REGISTRY.collect():
        name = wanted.get(family.name)
        if name is None:
            continue
        for sample in family.samples:
            label = next(iter(sample.labels.values()), None)
            if sample.name.endswith("_total") and label is not None:
                out.setdefault(name, {})[label] = int(sample.value)
            elif sample.name.endswith("_total"):
                out[name] = int(sample.value)
            elif sample.name == "adtier_flush_seconds_count":
                out["flushes"] = int(sample.value)
            elif sample.name == "adtier_flush_seconds_sum":
                out["flush_seconds_sum"] = round(sample.value, 3)
    return out


async def _pipeline(state: AppState) -> Pipeline:
    """Over every buffer partition (one on a single server, several on a cluster)."""
    buffer = state.ingest.buffer
    buffered = await buffer.buffered_events()
    age = await buffer.oldest_age_s()
    entries, consumers = await buffer.stream_status()
    local = [LocalFlusher(f.consumer, bool(f._thread and f._thread.is_alive()))
             for f in state.flushers]
    return Pipeline(int(buffered), round(age, 3), entries,
                    [Consumer(c.name, c.pending, c.idle_ms) for c in consumers], local,
                    _counters())


class OpsReadController(Controller):
    path = "/v1/ops"
    tags = ["operations"]

    @get("/ingest", summary="Ingest rate by event type (admin)")
    async def ingest_rate(self, request: Request, hours: Hours = 24) -> IngestRate:
        """Stored events per bucket (a minute for windows up to 3 hours, else an hour) by
        type, by the time the server received them; events still buffered come later."""
        await authorize(request, "admin")
        step = 60 if hours <= 3 else 3600
        since = _since(hours)
        points: list[IngestPoint] = []
        for table in ("ad_events", "content_events"):
            rows = await app_state(request).query(
                _INGEST_SQL, {"step": step, "table": table, "since": since.replace(tzinfo=None)})
            points += [IngestPoint(_utc(at), kind, _FAMILIES.get(kind, "interactions"), int(n))
                       for at, kind, n in rows]
        points.sort(key=lambda p: (p.at, p.type))
        by_type: dict[str, int] = {}
        by_family: dict[str, int] = {}
        for p in points:
            by_type[p.type] = by_type.get(p.type, 0) + p.events
            by_family[p.family] = by_family.get(p.family, 0) + p.events
        return IngestRate(hours, step, since, points, by_type, by_family)

    @get("/rejects", summary="Rejected events by reason, with recent examples (admin)")
    async def rejects(self, request: Request, hours: Hours = 24,
                      examples: Annotated[int, QueryParameter(ge=0, le=20)] = 3) -> Rejects:
        await authorize(request, "admin")
        params = {"since": _since(hours).replace(tzinfo=None), "examples": examples}
        query = app_state(request).query
        counts = await query(_REJECT_COUNTS_SQL, params)
        sample: dict[str, list[RejectExample]] = {}
        if examples:
            for reason, at, *rest in await query(_REJECT_EXAMPLES_SQL, params):
                sample.setdefault(reason, []).append(RejectExample(_utc(at), *rest))
        reasons = [RejectReason(reason, int(n), sample.get(reason, [])) for reason, n in counts]
        return Rejects(hours, sum(r.count for r in reasons), reasons)

    @get("/pipeline", summary="Buffer lag and flusher health (admin)")
    async def pipeline(self, request: Request) -> Pipeline:
        """Lag of the Redis buffer, every consumer of the flushers' group (fleet-wide: pending
        entries and idle time), this process's flusher threads and ingest counters."""
        await authorize(request, "admin")
        return await _pipeline(app_state(request))

    @get("/catalog", summary="Catalog counts (admin)")
    async def catalog(self, request: Request) -> CatalogCounts:
        await authorize(request, "admin")
        sql = " UNION ALL ".join(
            f"SELECT '{t}', count() FROM (SELECT * FROM {t} FINAL)" for t in _COUNTED)
        found = dict(await app_state(request).query(sql))  # UNION ALL answers in any order
        return CatalogCounts({name: int(found.get(name, 0)) for name in _COUNTED})


CONSOLE_API_ROUTES = [CampaignsController, OpsReadController, WhoAmIController]
