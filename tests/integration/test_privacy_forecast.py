"""The reach forecast's data version for an advertiser key: the newest ad event floored to the
version period, with the segments' built versions, and the first answer kept. Differencing
two forecasts of one plan across a data change within the period is impossible (the same kept
answer), and a refresh does not re-spend whenever the exact answer moves."""

from __future__ import annotations

import pytest

from adtier.measure import noisy
from adtier.measure.forecast.answer import forecast
from adtier.measure.forecast.release import kept_answer, release
from adtier.privacy import budget
from adtier.privacy.release import Policy, Release
from tests.helpers import ad_event, batch, now_ms
from tests.integration.test_segments_http import build, create

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
PLAN = {"impressions": 10**9, "frequency_cap": 0, "days": 1}


@pytest.fixture
def viewers(api, flush) -> tuple[str, int]:
    """400 profiles in a static segment, each with 1 to 3 impressions on day 1 (01:00 UTC)."""
    base = (now_ms() // DAY_MS - 3) * DAY_MS + HOUR_MS
    arrive(api, base, 400, "d1")
    flush()
    seg = create(api, {"name": "viewers", "kind": "static",
                       "profile_ids": [f"p{i:03d}" for i in range(400)]})
    assert build(api, seg["segment_id"])["status"] == "ready"
    return f"{seg['segment_id']}:1", base


def arrive(api, ts: int, profiles: int, tag: str) -> None:
    events = [ad_event("impression", profile_id=f"p{i:03d}", campaign_id="cmp-x",
                       ad_serving_id=f"{tag}-{i}-{j}", ts=ts + j)
              for i in range(profiles) for j in range(1 + i % 3)]
    assert api.post_events(batch(events)).status_code == 200


def ask(api, ch, rds, segment_key: str) -> tuple[dict, dict, Release]:
    """An advertiser's forecast as the release computes it: exact, then noisy and coarse,
    answered through the kept answer of its data version."""
    rel = Release(Policy.of(api.settings), rds, b"forecast-secret", "adv-a", "forecast_reach",
                  {"segment_ids": [segment_key.split(":")[0]], **PLAN})
    exact = forecast(ch, [segment_key], PLAN["impressions"], PLAN["frequency_cap"],
                              PLAN["days"])

    def compute(stream):
        released, _scales = noisy.forecast(exact, stream, rel.epsilon,
                                           rel.policy.impressions_bound)
        return release(released, rel.policy.k)

    return exact, kept_answer(ch, rel, [segment_key], compute), rel


def paid(rds) -> int:
    label = budget.period_bounds("month", budget.dt.datetime.now(budget.dt.timezone.utc))[0]
    return sum(1 for f in rds.hkeys(budget.ledger_key("adv-a", label)) if f.startswith(b"q:"))


def test_a_forecast_is_one_paid_answer_per_version_period(api, ch, rds, flush, viewers):
    segment_key, base = viewers
    exact, first, rel = ask(api, ch, rds, segment_key)
    assert rel.spent is not None and rel.spent.charged == rel.epsilon
    # new impressions the same day (5 h later): the exact forecast moves, the answer does not
    arrive(api, base + 5 * HOUR_MS, 400, "same")
    flush()
    exact_later, again, rel = ask(api, ch, rds, segment_key)
    assert exact_later != exact
    assert again == first
    assert rel.spent is not None and rel.spent.charged == 0 and paid(rds) == 1
    # the next day's first impression: a new version, one new spend, kept in turn
    arrive(api, base + DAY_MS, 10, "next")
    flush()
    _, fresh, rel = ask(api, ch, rds, segment_key)
    assert rel.spent is not None and rel.spent.charged == rel.epsilon and paid(rds) == 2
    _, repeat, rel = ask(api, ch, rds, segment_key)
    assert repeat == fresh and rel.spent is not None and rel.spent.charged == 0


def test_a_rebuilt_segment_is_a_new_version(api, ch, rds, flush, viewers):
    segment_key, _ = viewers
    ask(api, ch, rds, segment_key)
    rebuilt = segment_key.rsplit(":", 1)[0] + ":2"
    _, _, rel = ask(api, ch, rds, rebuilt)
    assert rel.spent is not None and rel.spent.charged == rel.epsilon and paid(rds) == 2
