"""What an advertiser key is released: noisy counts, the noisy k-threshold, the budget.

One ``Release`` per advertiser request: the endpoint and its canonical parameters are fixed
when it is made; ``open(data_version)`` charges the query to the advertiser's budget (free when
the same query over the same data was paid for this period) and answers the seeded
``NoiseStream`` every count of the answer draws from. Admin and verifier keys get no Release:
their numbers are exact.

Noisy k-threshold: a row (cell, bucket, pair) is released when its *noisy* profile count is at
least k; otherwise it is folded into the suppressed remainder, itself released only when its
noisy count reaches k. Nothing is ever decided on an exact count, so the decision leaks nothing
beyond the noise's ε. Rows need not sum to totals after noise (each is noised on its own);
the API says so (``noisy: true``).
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass, field
from typing import Any

from adtier.privacy import budget
from adtier.privacy.noise import NoiseStream, accuracy, scale_for, seed_key

__all__ = ["Policy", "Release", "SECRET_KEY", "load_secret", "platform_stream", "over_k",
           "noise_note", "list_below_minimum", "segment_size", "SIZE_SHARE"]

SECRET_KEY = "adtier:privacy:noise-secret"


@dataclass(frozen=True)
class Policy:
    """The privacy settings (``ADTIER_PRIVACY_*``, see ``adtier.settings``)."""

    k: int = 50
    epsilon_query: float = 0.5
    epsilon_limit: float = 20.0
    period: str = "month"
    min_list_size: int = 1000
    event_bound: int = 5
    impressions_bound: int = 100

    @classmethod
    def of(cls, settings: Any) -> "Policy":
        return cls(k=max(1, int(settings.privacy_k)),
                   epsilon_query=float(settings.privacy_epsilon_query),
                   epsilon_limit=float(settings.privacy_epsilon_budget),
                   period=str(settings.privacy_epsilon_period),
                   min_list_size=int(settings.privacy_min_list_size),
                   event_bound=int(settings.privacy_event_bound),
                   impressions_bound=int(settings.privacy_impressions_bound))


async def load_secret(configured: str, redis, key: str = SECRET_KEY) -> bytes:
    """The configured secret, else the one kept in Redis under ``key`` (created once with
    ``SET NX``, so concurrent first requests on a fleet agree on one value)."""
    if configured:
        return configured.encode()
    await redis.set(key, secrets.token_hex(32), nx=True)
    value = await redis.get(key)
    return value if isinstance(value, bytes) else str(value).encode()


def over_k(noisy_count: int, k: int) -> bool:
    return noisy_count >= k


def noise_note(epsilon: float, scales: dict[str, float]) -> dict[str, Any]:
    """What an answer says about its own noise: ε spent, each family's scale and its 95 %
    half-width (so a reader can put error bars on any number)."""
    return {"mechanism": "discrete_laplace", "epsilon": epsilon,
            "scales": {name: round(s, 6) for name, s in scales.items()},
            "ci95_halfwidth": {name: round(accuracy(s, 0.05), 3) for name, s in scales.items()}}


def platform_stream(secret: bytes, what: str, version: str) -> NoiseStream:
    """Noise of a number the platform releases once per version to every advertiser (a
    platform segment's size): advertiser '' so every advertiser sees the same draw."""
    return NoiseStream(seed_key(secret, "", what, version))


@dataclass
class Release:
    policy: Policy
    redis: Any  # synchronous client: spends happen in the worker thread of the query
    secret: bytes
    advertiser_id: str
    endpoint: str
    query: dict[str, Any]
    epsilon: float = 0.0
    spent: budget.Spend | None = field(default=None, init=False)
    data_version: str = field(default="", init=False)

    def __post_init__(self) -> None:
        if not self.epsilon:
            self.epsilon = self.policy.epsilon_query

    def open(self, data_version: str, now: dt.datetime | None = None) -> NoiseStream:
        """Charge the query (raises ``budget.BudgetSpent``) and answer its noise stream."""
        self.data_version = data_version
        qid = budget.query_id(self.endpoint, self.query, data_version)
        self.spent = budget.spend(self.redis, self.advertiser_id, qid, self.epsilon,
                                  self.policy.epsilon_limit, self.policy.period, now)
        return NoiseStream(seed_key(self.secret, self.advertiser_id,
                                    [self.endpoint, self.query], data_version))


SIZE_SHARE = 5  # a segment size costs ε_query / 5: one count of sensitivity 1


def list_below_minimum(kind: str, definition: dict[str, Any], policy: Policy,
                       owner: str) -> bool:
    """An advertiser's customer list (static segment) with fewer uploaded ids than the minimum
    list size releases no count at all: not its size, not an overlap. Platform lists (owner
    '') are the platform's curation, not an advertiser's probe."""
    return (bool(owner) and kind == "static"
            and int(definition.get("profile_count", 0)) < policy.min_list_size)


def segment_size(policy: Policy, r: Any, secret: bytes, owner: str, segment_id: str,
                 kind: str, definition: dict[str, Any], version: int,
                 size: int) -> tuple[int | None, Release | None]:
    """The size an advertiser key is shown, and the Release that paid for it (None: nothing
    charged). Platform segments: one draw per version shared by every advertiser (the
    platform fixed it; asking cannot re-draw). Own segments: a query on the owner's budget, paid
    once per version; a spent budget withholds the size (None) rather than refusing the list."""
    if version == 0:
        return 0, None  # never built: no data in it
    if list_below_minimum(kind, definition, policy, owner):
        return None, None
    epsilon = policy.epsilon_query / SIZE_SHARE
    rel = None
    if not owner:
        stream = platform_stream(secret, f"segment_size:{segment_id}", str(version))
    else:
        rel = Release(policy, r, secret, owner, "segment_size", {"segment_id": segment_id},
                      epsilon=epsilon)
        try:
            stream = rel.open(str(version))
        except budget.BudgetSpent:
            return None, None
    noisy = max(0, stream.add("size", size, scale_for(1, epsilon)))
    return (noisy if over_k(noisy, policy.k) else None), rel
