"""adtier.privacy.budget on a real Valkey: spend once per distinct query, refuse past the limit,
never overspend under concurrency, reset with the calendar period."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

import pytest

from adtier.privacy import budget

NOW = dt.datetime(2026, 12, 7, 10, 0, tzinfo=dt.timezone.utc)


def test_a_repeated_query_is_free_and_the_limit_refuses(rds):
    first = budget.spend(rds, "adv-a", "q1", 0.5, 1.0, "month", NOW)
    assert (first.charged, first.spent, first.period) == (0.5, 0.5, "2026-12")
    assert budget.spend(rds, "adv-a", "q1", 0.5, 1.0, "month", NOW).charged == 0.0
    assert budget.spend(rds, "adv-a", "q2", 0.5, 1.0, "month", NOW).spent == 1.0
    with pytest.raises(budget.BudgetSpent) as refused:
        budget.spend(rds, "adv-a", "q3", 0.5, 1.0, "month", NOW)
    assert refused.value.resets_at == dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc)
    # paid queries still answer after the limit; another advertiser has its own budget
    assert budget.spend(rds, "adv-a", "q2", 0.5, 1.0, "month", NOW).charged == 0.0
    assert budget.spend(rds, "adv-b", "q3", 0.5, 1.0, "month", NOW).charged == 0.5
    # the next month starts at zero
    assert budget.spend(rds, "adv-a", "q3", 0.5, 1.0, "month",
                        dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc)).spent == 0.5


def test_concurrent_queries_never_overspend(rds):
    def one(i: int) -> bool:
        try:
            budget.spend(rds, "adv-c", f"q{i}", 0.5, 5.0, "day", NOW)
            return True
        except budget.BudgetSpent:
            return False

    with ThreadPoolExecutor(8) as pool:
        granted = sum(pool.map(one, range(40)))
    assert granted == 10
    assert float(rds.hget(budget.ledger_key("adv-c", "2026-12-07"), "spent")) == 5.0


@pytest.mark.parametrize("kind,label,start,end", [
    ("day", "2026-12-07", "2026-12-07", "2026-12-08"),
    ("week", "2026-W50", "2026-12-07", "2026-12-14"),
    ("month", "2026-12", "2026-12-01", "2027-01-01"),
])
def test_calendar_periods(kind, label, start, end):
    got = budget.period_bounds(kind, NOW)
    assert (got[0], got[1].date().isoformat(), got[2].date().isoformat()) == (label, start, end)
