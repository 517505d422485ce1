"""What an advertiser key is released: noisy counts, the noisy k-threshold, the budget.

One ``Release`` per advertiser request: the endpoint and its canonical parameters are fixed
when it is made; ``open(data_version)`` charges the query to the advertiser's budget (free when
the same query over the same data was paid for this period) and answers the seeded
``NoiseStream`` every count of the answer draws from. Admin and verifier keys get no Release:
their numbers are exact.

Noisy k-threshold: a row (cell, bucket, pair) is released when its *noisy* profile count is at
least its threshold; otherwise it is folded into the suppressed remainder, itself released only
when its noisy count reaches the threshold. Nothing is ever decided on an exact count. A row
whose key exists only because someone is in it (a report row: a country, a creative) gets the
sound threshold ``release_threshold``: k raised until a row of one profile passes with
probability at most ``THRESHOLD_DELTA`` (partition selection, as in Google's DP libraries).
Rows need not sum to totals after noise (each is noised on its own); the API says so.

Data versions of live data are snapped to the policy's ``version_period_s``
(``ADTIER_PRIVACY_VERSION_PERIOD_S``, a day by default): every ask of one query within the
period is one paid query, and ``Release.answered`` keeps its first answer (Valkey, as long as
the ledger that paid for it) so that the same noise is never released over two different data
states (their difference would cancel it).
"""

from __future__ import annotations

import datetime as dt
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from adtier.privacy import budget
from adtier.privacy.noise import NoiseStream, accuracy, scale_for, seed_key

__all__ = ["Policy", "Release", "SECRET_KEY", "load_secret", "platform_stream", "over_k",
           "noise_note", "list_below_minimum", "segment_size", "SIZE_SHARE",
           "THRESHOLD_DELTA", "release_threshold", "snapped_version"]

SECRET_KEY = "adtier:privacy:noise-secret"


@dataclass(frozen=True)
class Policy:
    """The privacy settings (``ADTIER_PRIVACY_*``), built by ``of``: their defaults live in
    ``adtier.settings`` only."""

    k: int
    epsilon_query: float
    epsilon_limit: float
    period: str
    min_list_size: int
    event_bound: int
    impressions_bound: int
    version_period_s: int

    @classmethod
    def of(cls, settings: Any) -> "Policy":
        return cls(k=max(1, int(settings.privacy_k)),
                   epsilon_query=float(settings.privacy_epsilon_query),
                   epsilon_limit=float(settings.privacy_epsilon_budget),
                   period=str(settings.privacy_epsilon_period),
                   min_list_size=int(settings.privacy_min_list_size),
                   event_bound=int(settings.privacy_event_bound),
                   impressions_bound=int(settings.privacy_impressions_bound),
                   version_period_s=int(settings.privacy_version_period_s))


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


THRESHOLD_DELTA = 1e-6  # P(a row of one profile is released), at most


def release_threshold(k: int, scale: float, delta: float = THRESHOLD_DELTA) -> int:
    """The smallest threshold >= k that a row of true count 1 passes with probability <= delta.

    The discrete Laplace with scale s (q = exp(-1/s)) has P(noise >= t) = q^t / (1 + q) for
    t >= 1, so t = ceil(ln(delta (1 + q)) / ln q) and the threshold is max(k, 1 + t). A row of
    true count c <= 1 then passes with probability <= delta (fewer profiles: less)."""
    if scale <= 0:
        return k
    q = math.exp(-1.0 / scale)
    t = math.ceil(math.log(delta * (1 + q)) / math.log(q))
    return max(k, 1 + t)


def snapped_version(*parts: Any, period_s: int) -> str:
    """A data version of newest-event times, each floored to ``period_s`` seconds (UTC; a
    divisor of a day, so periods start at midnight): new events within the period leave the
    version (and the paid query) as it was. Other parts are taken as they are."""
    out = []
    for part in parts:
        when = part
        if isinstance(part, str):
            try:
                when = dt.datetime.fromisoformat(part)
            except ValueError:
                when = part
        if isinstance(when, dt.datetime):
            when = when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
            epoch = when.astimezone(dt.timezone.utc).timestamp()
            step = float(period_s)
            when = dt.datetime.fromtimestamp(epoch // step * step, dt.timezone.utc).isoformat()
        out.append(str(when))
    return "|".join(out)


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

    def version(self, *parts: Any) -> str:
        """The data version of live data whose newest events are ``parts``, snapped to the
        policy's period (``snapped_version``)."""
        return snapped_version(*parts, period_s=self.policy.version_period_s)

    def open(self, data_version: str, now: dt.datetime | None = None) -> NoiseStream:
        """Charge the query (raises ``budget.BudgetSpent``) and answer its noise stream."""
        self.data_version = data_version
        qid = budget.query_id(self.endpoint, self.query, data_version)
        self.spent = budget.spend(self.redis, self.advertiser_id, qid, self.epsilon,
                                  self.policy.epsilon_limit, self.policy.period, now)
        return NoiseStream(seed_key(self.secret, self.advertiser_id,
                                    [self.endpoint, self.query], data_version))

    def answered(self, data_version: str, compute: Callable[[NoiseStream], dict[str, Any]],
                 now: dt.datetime | None = None) -> dict[str, Any]:
        """The answer of this query over ``data_version``: charged once (``open``), computed
        once and kept for as long as its ledger entry, then answered as kept. Concurrent first
        asks may both compute; one answer is kept (SET NX) and both return it."""
        stream = self.open(data_version, now)
        assert self.spent is not None
        key = _answer_key(self.advertiser_id, stream.fingerprint())
        kept = self.redis.get(key)
        if kept is None:
            self.redis.set(key, msgspec.json.encode(compute(stream)), nx=True,
                           exat=self.spent.expires_at)
            kept = self.redis.get(key)
        return msgspec.json.decode(kept)


def _answer_key(advertiser_id: str, fingerprint: str) -> str:
    # the noise's fingerprint, not the query id: an answer belongs to the secret that drew it
    return f"adtier:privacy:answer:{{{advertiser_id}}}:{fingerprint}"


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
