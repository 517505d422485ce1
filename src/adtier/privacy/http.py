"""The privacy rules at the HTTP edge: which key gets a ``Release``, the 429 of a spent budget,
the audit parameters of a spend, and ``GET /v1/privacy/budget``."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from litestar import Controller, Request, get
from litestar.params import FromQuery

from adtier.auth import ApiKey
from adtier.errors import ApiError
from adtier.privacy import budget
from adtier.privacy.release import Policy, Release, load_secret
from adtier.state import app_state, authorize

__all__ = ["release_for", "releases_of", "budget_error", "spend_parameters",
           "BudgetController", "PRIVACY_ROUTES", "SPEND_ENDPOINT"]

SPEND_ENDPOINT = "privacy.spend"  # the audit log's endpoint of a budget spend (or refusal)
_SCOPE = "adtier_privacy_releases"


async def release_for(request: Request, key: ApiKey, endpoint: str,
                      query: dict[str, Any]) -> Release | None:
    """A Release for an advertiser key (noisy answers, budget); None for admin and verifier
    keys, whose numbers are exact. The Release is remembered on the request for the audit."""
    if key.role != "advertiser":
        return None
    state = app_state(request)
    secret = await load_secret(state.settings.privacy_noise_secret, state.redis)
    rel = Release(Policy.of(state.settings), state.stores.redis, secret, key.advertiser_id,
                  endpoint, query)
    request.scope.setdefault(_SCOPE, []).append(rel)  # type: ignore[typeddict-unknown-key]
    return rel


def releases_of(request: Request) -> list[Release]:
    return list(request.scope.get(_SCOPE, []))  # type: ignore[call-overload]


def budget_error(err: budget.BudgetSpent) -> ApiError:
    wait = max(1, math.ceil((err.resets_at - dt.datetime.now(dt.timezone.utc)).total_seconds()))
    return ApiError(429, "privacy_budget_spent",
                    f"this advertiser's privacy budget for {err.period} is spent "
                    f"({err.spent:g} of ε {err.limit:g}); repeated queries over unchanged data "
                    f"still answer; new ones from {err.resets_at.isoformat()}",
                    {"Retry-After": str(wait)})


def spend_parameters(rel: Release, refused: budget.BudgetSpent | None = None) -> dict[str, Any]:
    """The audit record of one spend: what was asked, over which data, what it cost."""
    out: dict[str, Any] = {"endpoint": rel.endpoint, "query": rel.query,
                           "data_version": rel.data_version, "epsilon": rel.epsilon}
    if rel.spent is not None:
        out.update(query_id=rel.spent.query_id, period=rel.spent.period,
                   charged=rel.spent.charged, spent=rel.spent.spent, limit=rel.spent.limit)
    if refused is not None:
        out.update(period=refused.period, charged=0.0, spent=refused.spent, limit=refused.limit,
                   refused=True)
    return out


class BudgetController(Controller):
    path = "/v1/privacy/budget"
    tags = ["privacy"]

    @get("/", summary="This advertiser's privacy budget")
    async def show(self, request: Request,
                   advertiser_id: FromQuery[str | None] = None) -> dict[str, Any]:
        """ε spent and left in the current calendar period (UTC), when it resets, and how many
        distinct queries paid for it. An advertiser key sees its own; admin names one with
        ``?advertiser_id=``. See docs/privacy.md."""
        key = await authorize(request, "advertiser")
        who = key.advertiser_id if key.role != "admin" else (advertiser_id or "")
        if not who:
            raise ApiError(400, "invalid_request", "advertiser_id: which advertiser's budget")
        policy = Policy.of(app_state(request).settings)
        r = app_state(request).redis
        label, start, end = budget.period_bounds(policy.period, dt.datetime.now(dt.timezone.utc))
        ledger = budget.ledger_key(who, label)
        spent = float(await r.hget(ledger, "spent") or 0)
        queries = max(0, int(await r.hlen(ledger)) - (1 if spent else 0))
        return {"advertiser_id": who, "period": policy.period, "period_label": label,
                "period_start": start.isoformat(), "resets_at": end.isoformat(),
                "epsilon_limit": policy.epsilon_limit, "epsilon_per_query": policy.epsilon_query,
                "epsilon_spent": round(spent, 9),
                "epsilon_remaining": round(max(0.0, policy.epsilon_limit - spent), 9),
                "queries": queries}


PRIVACY_ROUTES = [BudgetController]
