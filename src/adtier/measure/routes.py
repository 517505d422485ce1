"""Measurement endpoints (docs/measurement.md, docs/privacy.md).

- ``GET /v1/campaigns/{id}/report?from&to&by=day|device|country|creative|break_position``
- ``GET /v1/campaigns/{id}/frequency?from&to``
- ``GET /v1/campaigns/{id}/content-effects?days``
- ``GET /v1/campaigns/{id}/log-level?date`` (Parquet; verifier or admin keys only; see
  ``adtier.measure.loglevel``)
- ``POST /v1/forecast/reach``
- ``GET /v1/audit`` (admin)

Advertiser and verifier keys see only their own advertiser's campaigns (anything else answers
404); admin sees all. A verifier key reaches nothing here but the log-level feed. Every
call (answered or refused) writes an audit record with the SHA-256 of the exact body sent, and
each answer carries that record's id as ``report_id``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Stream

from adtier.auth import ApiKey, forbidden
from adtier.catalog.models import AdCategory
from adtier.errors import ApiError, decode_json
from adtier import audit
from adtier.measure import campaign_info, forecast, lift, loglevel, noisy, reach
from adtier.measure.forecast.release import kept_answer
from adtier.measure.privacy import CampaignInfo, not_found
from adtier.privacy import budget as privacy_budget
from adtier.privacy import http as privacy_http
from adtier.privacy.noise import accuracy
from adtier.privacy.release import noise_note
from adtier.segments import store as segment_store
from adtier.state import app_state, authorize, off_loop
from adtier.streams import file_chunks

__all__ = ["MeasureController", "AuditController", "MEASURE_ROUTES", "privacy_k",
           "campaign_for", "audited", "run_query"]


_ENCODE = msgspec.json.Encoder().encode
By = Annotated[str, QueryParameter(pattern="^(day|device|country|creative|break_position)$",
                                   description="breakdown")]


def privacy_k(request: Request) -> int:
    return max(1, int(getattr(app_state(request).settings, "privacy_k", 50)))


async def run_query(request: Request, fn: Callable[..., Any], *args: Any) -> Any:
    """A measurement read off the event loop; a store failure answers 503 (safe to retry)."""
    return await off_loop(fn, app_state(request).api_clickhouse, *args)


async def campaign_for(request: Request, key: ApiKey, campaign_id: str) -> CampaignInfo:
    """The campaign if this key may see it; 404 otherwise (unknown and foreign look the same)."""
    info = None
    if 1 <= len(campaign_id) <= 64:
        info = await run_query(request, campaign_info.load, campaign_id)
    if info is None or (key.role != "admin" and info.advertiser_id != key.advertiser_id):
        raise not_found(campaign_id)
    return info


def _rows_of(answer: dict[str, Any]) -> int:
    for name in ("rows", "distribution", "arms", "comparisons"):
        if isinstance(answer.get(name), list):
            return len(answer[name])
    return 1


async def audited(request: Request, endpoint: str, parameters: dict[str, Any],
                  produce: Callable[[ApiKey], Awaitable[dict[str, Any]]],
                  roles: tuple[str, ...] = ("advertiser",)) -> Response:
    """Authenticate, answer, and write the audit record (refusals included)."""
    key = await authorize(request, *roles)
    report_id = audit.new_audit_id()

    async def record(status: int, rows: int, digest: str) -> None:
        await run_query(request, lambda client: audit.record(
            client, audit_id=report_id, key_id=key.key_id, role=key.role,
            advertiser_id=key.advertiser_id, endpoint=endpoint, method=request.method,
            parameters=parameters, status=status, row_count=rows, answer_sha256=digest))

    try:
        try:
            answer = await produce(key)
        except privacy_budget.BudgetSpent as spent:
            await record_spends(request, key, report_id, spent)
            raise privacy_http.budget_error(spent) from None
    except ApiError as err:
        await record(err.status, 0, "")
        raise
    await record_spends(request, key, report_id)
    body = _ENCODE({"report_id": report_id, **answer})
    await record(200, _rows_of(answer), audit.sha256_hex(body))
    return Response(content=body, media_type="application/json", status_code=200)


async def record_spends(request: Request, key: ApiKey, report_id: str,
                        refused: privacy_budget.BudgetSpent | None = None) -> None:
    """Every privacy-budget spend (or refusal) of the request, one audit record each, next to
    the answer's record (``answer_of`` names it)."""
    for rel in privacy_http.releases_of(request):
        if rel.spent is None and refused is None:
            continue
        params = {**privacy_http.spend_parameters(rel, refused if rel.spent is None else None),
                  "answer_of": report_id}
        await run_query(request, lambda client, p=params: audit.record(
            client, key_id=key.key_id, role=key.role,
            advertiser_id=key.advertiser_id, endpoint=privacy_http.SPEND_ENDPOINT,
            method=request.method, parameters=p, status=429 if p.get("refused") else 200,
            row_count=0, answer_sha256=""))


def _noise_error(answer: dict[str, Any], scales: dict[str, float]) -> float | None:
    """The forecast's reach error from the noise alone, relative, at 95 %: to be read beside
    ``backtest_error`` (the model's error) — the two add at worst."""
    reach = answer.get("reach")
    if not reach:
        return None
    return round(accuracy(scales["reach"], 0.05) / reach, 4)


def _dates(date_from: dt.date | None, date_to: dt.date | None) -> tuple[dt.date, dt.date]:
    lo, hi = date_from or reach.MIN_DATE, date_to or reach.MAX_DATE
    if lo > hi:
        raise ApiError(400, "invalid_request", "from must not be after to")
    return lo, hi


def _flight_window(info: CampaignInfo, date_from: dt.date | None, date_to: dt.date | None,
                   params: dict[str, Any]) -> tuple[dt.date, dt.date, str | None]:
    """``from``/``to`` as asked, a missing one from the campaign's flight (not 1970..2149);
    the note says so in the answer, and the audit record gets the dates actually used."""
    missing = [name for name, given in (("from", date_from), ("to", date_to)) if given is None]
    lo, hi = _dates(date_from or info.start_date, date_to or info.end_date)
    params.update({"from": lo.isoformat(), "to": hi.isoformat()})
    if not missing:
        return lo, hi, None
    return lo, hi, (f"{' and '.join(missing)} not given: the campaign's flight "
                    f"({info.start_date} to {info.end_date}) is used")


class MeasureController(Controller):
    path = "/v1/campaigns"
    tags = ["measurement"]

    @get("/{campaign_id:str}/report", summary="Campaign report",
         description=reach.__doc__)
    async def report(
        self, request: Request, campaign_id: FromPath[str], by: By = "day",
        date_from: Annotated[dt.date | None, QueryParameter(name="from")] = None,
        date_to: Annotated[dt.date | None, QueryParameter(name="to")] = None,
    ) -> Response:
        """Impressions, exact reach, frequency, the VAST quartile funnel, VCR, skips, clicks,
        viewability and errors by ``by``, with totals; rows covering fewer than k profiles are
        folded into ``suppressed``. Without ``from``/``to``: the campaign's flight (the answer's
        ``note`` says so). Definitions: ``adtier.measure.reach`` and docs/measurement.md."""
        _dates(date_from, date_to)  # from after to: 400 before anything is read
        params = {"campaign_id": campaign_id, "by": by, "from": None, "to": None}

        async def produce(key: ApiKey) -> dict[str, Any]:
            info = await campaign_for(request, key, campaign_id)
            lo, hi, note = _flight_window(info, date_from, date_to, params)
            rel = await privacy_http.release_for(request, key, "campaign_report", params)
            if rel is not None:
                answer = await run_query(request, noisy.report_answer, rel, campaign_id, by, lo, hi,
                                         privacy_k(request))
            else:
                answer = await run_query(request, reach.report, campaign_id, by, lo, hi,
                                         privacy_k(request))
            return {**answer, "note": note} if note else answer

        return await audited(request, "campaign_report", params, produce)

    @get("/{campaign_id:str}/frequency", summary="Campaign frequency distribution")
    async def frequency(
        self, request: Request, campaign_id: FromPath[str],
        date_from: Annotated[dt.date | None, QueryParameter(name="from")] = None,
        date_to: Annotated[dt.date | None, QueryParameter(name="to")] = None,
    ) -> Response:
        """Profiles by impression count (1..9, 10+; with the suppressed remainder it sums to
        reach) and cumulative reach by day."""
        _dates(date_from, date_to)
        params = {"campaign_id": campaign_id, "from": None, "to": None}

        async def produce(key: ApiKey) -> dict[str, Any]:
            info = await campaign_for(request, key, campaign_id)
            lo, hi, note = _flight_window(info, date_from, date_to, params)
            rel = await privacy_http.release_for(request, key, "campaign_frequency", params)
            if rel is not None:
                answer = await run_query(request, noisy.frequency_answer, rel, campaign_id, lo, hi,
                                         privacy_k(request))
            else:
                answer = await run_query(request, reach.frequency, campaign_id, lo, hi,
                                         privacy_k(request))
            return {**answer, "note": note} if note else answer

        return await audited(request, "campaign_frequency", params, produce)

    @get("/{campaign_id:str}/content-effects", summary="Content effects of a promotion",
         description=lift.__doc__)
    async def content_effects(
        self, request: Request, campaign_id: FromPath[str],
        days: Annotated[int, QueryParameter(ge=1, le=60)] = 7,
    ) -> Response:
        """With a holdout: intent-to-treat lift on starts of the promoted title (genre) in the
        ``days`` after assignment, with 95% CIs and the exposed share. Without: an explicitly
        observational comparison (``kind: observational``), never called lift. Definitions:
        ``adtier.measure.lift`` and docs/measurement.md."""
        params = {"campaign_id": campaign_id, "days": days}

        async def produce(key: ApiKey) -> dict[str, Any]:
            info = await campaign_for(request, key, campaign_id)
            if not (info.promoted_title_id or info.promoted_genre):
                raise ApiError(422, "not_a_promotion",
                               f"campaign {campaign_id!r} promotes no title or genre")
            rel = await privacy_http.release_for(request, key, "campaign_content_effects", params)
            if rel is None:
                return await run_query(request, lift.content_effects, info, days,
                                       privacy_k(request))
            return await run_query(request, noisy.effects_answer, rel, info, days,
                                   privacy_k(request))

        return await audited(request, "campaign_content_effects", params, produce)

    @get("/{campaign_id:str}/log-level", summary="Log-level verification feed (Parquet)",
         description=loglevel.__doc__)
    async def log_level(self, request: Request, campaign_id: FromPath[str],
                        date: FromQuery[str | None] = None) -> Stream:
        """Every ad event of the campaign on one UTC day (``date=YYYY-MM-DD``), one row per
        event, as Parquet; the profile is ``hashed_profile_id``, a keyed hash per advertiser.
        A verifier key bound to the campaign's advertiser, or admin; advertiser keys get 403.
        Headers: ``X-Adtier-Report-Id`` (the audit record), ``X-Adtier-Rows``,
        ``X-Adtier-Answer-Sha256``."""
        return await log_level_feed(request, campaign_id, date)


def _feed_day(value: str | None) -> dt.date:
    """The feed's day, parsed here (not by the framework) so a bad one is audited too."""
    try:
        return dt.date.fromisoformat(value or "")
    except ValueError:
        raise ApiError(400, "invalid_request", "date must be a day, YYYY-MM-DD") from None


async def log_level_feed(request: Request, campaign_id: str, date: str | None) -> Stream:
    """Authenticate, write the feed to a temporary file, audit it (rows and the SHA-256 of the
    exact bytes), then stream the file. Refusals are audited as in ``audited``."""
    key = await authorize(request)  # 401 without a valid key
    if key.role not in ("verifier", "admin", "advertiser"):
        raise forbidden(key, "verifier")
    # an advertiser key goes on only to be answered 404 or 403 below, audited like a verifier's
    report_id = audit.new_audit_id()
    parameters = {"campaign_id": campaign_id, "date": date}

    async def record(status: int, rows: int, digest: str) -> None:
        await run_query(request, lambda client: audit.record(
            client, audit_id=report_id, key_id=key.key_id, role=key.role,
            advertiser_id=key.advertiser_id, endpoint="campaign_log_level",
            method=request.method, parameters=parameters, status=status, row_count=rows,
            answer_sha256=digest))

    try:
        day = _feed_day(date)
        info = await campaign_for(request, key, campaign_id)  # 404 for another's campaign
        if key.role == "advertiser":
            # One row per event is below the k-profile rule, and ad_serving_id links a row to
            # the advertiser's own ad-server logs: the feed goes to the campaign's verifier
            # (its own key, bound to the advertiser, audited), never to an advertiser key.
            raise ApiError(403, "forbidden", "the log-level feed needs a verifier or admin "
                           "key: it is released to the campaign's verifier, not to advertiser "
                           "keys")
        state = app_state(request)
        secret = await loglevel.load_secret(state.settings.log_level_secret, state.redis)
        # pseudonyms are the campaign owner's, whoever asks (an admin sees what the owner's
        # verifier sees; a verifier is bound to the owner, or campaign_for answered 404)
        hmac_key = loglevel.advertiser_key(secret, info.advertiser_id)
        feed = await run_query(request, loglevel.write_feed, campaign_id, day, hmac_key)
    except ApiError as err:
        await record(err.status, 0, "")
        raise
    try:
        await record(200, feed.rows, feed.sha256)
    except BaseException:
        feed.path.unlink(missing_ok=True)
        raise
    headers = {"X-Adtier-Report-Id": report_id, "X-Adtier-Rows": str(feed.rows),
               "X-Adtier-Answer-Sha256": feed.sha256, "Cache-Control": "no-store",
               "Content-Disposition":
                   f'attachment; filename="{campaign_id}-{day.isoformat()}.parquet"'}
    return Stream(file_chunks(feed.path), media_type="application/vnd.apache.parquet",
                  headers=headers)


class ForecastRequest(msgspec.Struct, forbid_unknown_fields=True):
    impressions: Annotated[int, msgspec.Meta(ge=1, le=10**12)]
    days: Annotated[int, msgspec.Meta(ge=1, le=366)]
    segment_ids: Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=64)]],
                           msgspec.Meta(max_length=20)] = []
    frequency_cap: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 0
    # what targets the campaign, as the catalog says it: its category's delivery is learnt
    # from the history; a holdout share is never served
    ad_category: AdCategory | None = None
    holdout_percent: Annotated[float, msgspec.Meta(ge=0, le=50)] = 0.0


_FORECAST = msgspec.json.Decoder(ForecastRequest)


class ForecastController(Controller):
    path = "/v1/forecast"
    tags = ["measurement"]

    @post("/reach", status_code=200, summary="Reach forecast", description=forecast.__doc__)
    async def reach_forecast(self, request: Request) -> Response:
        """``{"segment_ids": [...], "impressions", "frequency_cap" (per profile per day, 0 =
        none), "days", "ad_category" (IAB id, optional), "holdout_percent" (0..50, optional)}``
        -> predicted reach, average frequency and distribution 1..10+ over the union of the
        segments (no segments: every eligible profile), the model used and its backtest
        error. Two candidates are fitted on the recent history — the negative binomial
        (beta-binomial when a cap bounds the opportunities; untargeted, over the universe less
        the holdout share) and empirical capped thinning of the profiles' observed ad slots,
        each profile's win rate weighted by its history's share of the category and a random
        holdout share never served — and backtested on the campaigns that ran in its last
        half, each with its own catalog category and holdout; the one with the lower error
        answers (``backtest`` lists both). Advertiser keys get counts coarse and small
        buckets folded, no fitted parameters, and the backtest only as rounded errors over
        at least 5 campaigns (``forecast.release``). See ``adtier.measure.forecast``."""
        # the role before the body: a key that may not ask is told so (403), whatever it sent
        await authorize(request, "advertiser")
        data = await decode_json(request, _FORECAST)
        params = msgspec.to_builtins(data)

        async def produce(key: ApiKey) -> dict[str, Any]:
            keys = []
            for segment_id in dict.fromkeys(data.segment_ids):
                row = await run_query(request, segment_store.get_segment, segment_id)
                if row is None or (key.role != "admin" and row.owner not in ("", key.advertiser_id)):
                    raise ApiError(404, "not_found", f"no segment {segment_id!r}")
                if not row.version:
                    raise ApiError(409, "not_built", f"segment {segment_id} is not built yet")
                keys.append(f"{segment_id}:{row.version}")
            answer = await run_query(request, forecast.forecast, keys, data.impressions,
                                     data.frequency_cap, data.days, data.ad_category,
                                     data.holdout_percent)
            k = privacy_k(request)
            if answer["universe"] < k:
                raise ApiError(422, "audience_too_small",
                               f"the eligible audience has fewer than {k} profiles")
            # an advertiser may ask of any list it uploads: counts coarse, small buckets
            # folded, other advertisers' campaigns in the backtest only as an aggregate
            rel = await privacy_http.release_for(request, key, "forecast_reach", params)
            if rel is not None:
                # seeded noise on every count, then the coarse release, once per data version
                # (newest ad event's period, segment versions) and kept; the error bound adds
                # the noise's 95 % half-width
                exact = answer

                def compute(stream: Any) -> dict[str, Any]:
                    noisy_answer, scales = noisy.forecast(exact, stream, rel.epsilon,
                                                          rel.policy.impressions_bound)
                    out = forecast.release(noisy_answer, k)
                    out["noise"] = {**noise_note(rel.epsilon, scales),
                                    "rows_sum_to_totals": False}
                    out["noise_error"] = _noise_error(out, scales)
                    return out

                answer = await run_query(request, kept_answer, rel, keys, compute)
            elif key.role != "admin":
                answer = forecast.release(answer, k)
            return {"segment_ids": data.segment_ids, **answer}

        return await audited(request, "forecast_reach", params, produce)


class AuditController(Controller):
    path = "/v1/audit"
    tags = ["measurement"]

    @get("/", summary="Audit log (admin)")
    async def list_audit(
        self, request: Request,
        limit: Annotated[int, QueryParameter(ge=1, le=10_000)] = 100,
        offset: Annotated[int, QueryParameter(ge=0)] = 0,
        key_id: FromQuery[str | None] = None, advertiser_id: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        """Measurement calls, newest first: key, endpoint, parameters, status, rows released
        and the SHA-256 of the answer body."""
        await authorize(request, "admin")
        records = await run_query(request, lambda c: audit.list_records(
            c, limit=limit, offset=offset, key_id=key_id, advertiser_id=advertiser_id))
        return {"records": records, "limit": limit, "offset": offset}


MEASURE_ROUTES = [MeasureController, ForecastController, AuditController]
