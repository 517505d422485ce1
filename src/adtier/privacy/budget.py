"""The privacy budget per advertiser: ε per calendar period, spent per distinct query.

A *distinct query* is (endpoint, canonical parameters, data version): asking it again costs
nothing more and, the noise being seeded from the same things, gets the same answer. A new data
version (new events, a rebuilt segment) is a new query: otherwise two versions' answers could be
differenced with the noise cancelled.

**Where the ledger lives: Valkey/Redis**, one hash per (advertiser, period) holding the total
spent and one field per query spent. Check-and-spend is one Lua script, atomic across every
worker and process of a fleet, so two concurrent queries can never both spend the last ε; the
store is durable (AOF, like the ingest buffer) and the key expires a period after its period
ended. ClickHouse was the other candidate and loses on that point: it has no transaction, and a
read-then-insert would let concurrent requests overspend. Every spend is also written to the
audit log (ClickHouse, by the caller), which is the permanent record.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import msgspec

__all__ = ["PERIODS", "Spend", "BudgetSpent", "period_bounds", "query_id", "spend",
           "ledger_key"]

PERIODS = ("day", "week", "month")
_CANONICAL = msgspec.json.Encoder(order="sorted")

# KEYS[1] ledger; ARGV: query id, cost, limit, expire-at (epoch s).
# Answers {state, spent}: 1 spent now, 0 already spent (free), -1 refused (over budget).
SPEND_LUA = """
local field = 'q:' .. ARGV[1]
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
if redis.call('HEXISTS', KEYS[1], field) == 1 then return {0, tostring(spent)} end
local cost = tonumber(ARGV[2])
if spent + cost > tonumber(ARGV[3]) + 1e-9 then return {-1, tostring(spent)} end
redis.call('HSET', KEYS[1], field, ARGV[2])
spent = redis.call('HINCRBYFLOAT', KEYS[1], 'spent', ARGV[2])
redis.call('EXPIREAT', KEYS[1], ARGV[4])
return {1, tostring(spent)}
"""


@dataclass(frozen=True)
class Spend:
    """One request's account: ``charged`` (0 when the query had been paid for already)."""

    query_id: str
    period: str
    charged: float
    spent: float
    limit: float
    resets_at: dt.datetime
    expires_at: int = 0  # epoch s when the ledger (and what is kept with it) is dropped


class BudgetSpent(Exception):
    def __init__(self, period: str, spent: float, limit: float, resets_at: dt.datetime):
        super().__init__(f"privacy budget of period {period} spent ({spent:g} of {limit:g})")
        self.period, self.spent, self.limit, self.resets_at = period, spent, limit, resets_at


def period_bounds(kind: str, now: dt.datetime) -> tuple[str, dt.datetime, dt.datetime]:
    """The calendar period (UTC) holding ``now``: its label, start and end (exclusive)."""
    day = now.astimezone(dt.timezone.utc).date()
    if kind == "day":
        start = day
        end = day + dt.timedelta(days=1)
        label = day.isoformat()
    elif kind == "week":  # ISO weeks start on Monday
        start = day - dt.timedelta(days=day.weekday())
        end = start + dt.timedelta(days=7)
        iso = day.isocalendar()
        label = f"{iso[0]}-W{iso[1]:02d}"
    elif kind == "month":
        start = day.replace(day=1)
        end = (start + dt.timedelta(days=32)).replace(day=1)
        label = start.strftime("%Y-%m")
    else:
        raise ValueError(f"privacy period is one of {', '.join(PERIODS)}, not {kind!r}")
    utc = dt.timezone.utc
    return (label, dt.datetime.combine(start, dt.time(), utc),
            dt.datetime.combine(end, dt.time(), utc))


def query_id(endpoint: str, query: object, data_version: str) -> str:
    return hashlib.sha256(_CANONICAL.encode([endpoint, query, data_version])).hexdigest()[:32]


def ledger_key(advertiser_id: str, period: str) -> str:
    # hash-tagged: one slot per advertiser in a Redis Cluster
    return f"adtier:privacy:budget:{{{advertiser_id}}}:{period}"


def spend(r, advertiser_id: str, qid: str, cost: float, limit: float, kind: str,
          now: dt.datetime | None = None) -> Spend:
    """Charge ``cost`` for query ``qid`` unless already paid this period; raise BudgetSpent
    when the period's ``limit`` would be passed. ``r``: a synchronous redis client."""
    label, start, end = period_bounds(kind, now or dt.datetime.now(dt.timezone.utc))
    expire = int((end + (end - start)).timestamp())
    state, spent = r.eval(SPEND_LUA, 1, ledger_key(advertiser_id, label), qid, repr(cost),
                          repr(limit), expire)
    spent = float(spent)
    if int(state) < 0:
        raise BudgetSpent(label, spent, limit, end)
    return Spend(qid, label, cost if int(state) == 1 else 0.0, spent, limit, end, expire)
