"""Reach forecasts: how many distinct profiles a flight of N impressions reaches, and how often.

The forecast reads the eligible universe's recent ad history (every campaign's impressions per
profile, in 24 h blocks back from the newest event, zeros included), fits two candidate models
on it, backtests both on the campaigns that really ran, and answers with the one that predicted
them better: ``model`` names it, ``backtest`` holds every candidate's error.

A plan may say what targets it, as the catalog says of a campaign: ``ad_category`` (its
delivery is learnt from the history's impressions of that tier-1 IAB category) and
``holdout_percent`` (a share of profiles never served it).

**Candidate ``negative-binomial``** (the issue's model; ``model`` = ``negative-binomial``, or
``beta-binomial`` with a cap). A profile's exposures are Poisson given its own rate, rates are
gamma across profiles: a negative binomial (NBD) whose shape ``r = m^2 / (v - m)`` is fitted on
the mean ``m`` and variance ``v`` of the per-profile counts over the plan's days, zeros included
(``v <= m``: Poisson). A campaign is a random thinning of the ad slots, which keeps ``r``, so
the plan sets the mean ``mu = impressions / universe``: reach = ``N (1 - (1 + mu / r) ** -r)``.
With a frequency cap a profile has at most ``n = cap x days`` opportunities: beta-binomial over
``n`` with mean ``mu / n`` and concentration ``s = r (1 - q) / q - 1`` (the share's CV^2 matched
to the gamma's ``1 / r`` at the history's own share ``q`` = its mean over its largest
per-profile count). Plans beyond ``N x cap x days`` are not deliverable. It stays untargeted:
``N`` is the universe less the holdout share, the category is not used.

**Candidate ``empirical-thinning``** (``model`` = ``empirical-thinning``, or
``empirical-capped-thinning`` with a cap). Every profile keeps its own observed ad slots day by
day; the campaign wins each slot with one probability ``q``, solved so the expected impressions
equal the plan, until the profile has had ``cap`` that day: profile ``i`` gets
``sum_d min(cap, Binomial(o_id, q))`` impressions and is reached with probability
``1 - (1 - q) ** sum_d o_id``. There is no shape to fit, which matters because ad slots come in
clumps (pods, breaks, sessions) and a thinned clumped count is not an NBD of the same shape.
Plans beyond the slots (``q = 1``) are not deliverable.

Targeted (``ad_category``): an ad server picks a campaign for a slot by how the profile takes
to its category, so profile ``i`` wins a slot with ``min(1, q w_i)``, ``w_i`` its delivery
weight: its share of the category among its impressions over the universe's share ``s``,
smoothed with ``CATEGORY_PRIOR`` (10) pseudo-impressions at ``s`` (``w_i = (c_i + 10 s) / (t_i +
10) / s``), normalised to a mean of 1 over the universe (no impression of the category: all 1,
the untargeted forecast). ``q`` is solved as before (``win_rate`` is this base rate; plans
beyond every weighted slot are not deliverable). Holdout: a random ``holdout_percent`` share
of profiles has no slots.

Both replay the history's most recent ``days`` (cycled when the plan is longer than the history).

**Backtest** (fit on the first part of the history, predict the rest). The history's last
``2 h`` days, ``h = min(days, history // 2)``, are split in halves; each candidate is fitted on
the first half only and asked for the second (the beta-binomial's share over the answer's
own ``top``, the largest per-profile count of the plan's days and both halves, so the model
backtested is the one that answers):

- ``flights`` (whenever a campaign qualifies): every campaign with impressions to the universe
  in the second half that reached at least ``FLIGHT_MIN_REACH`` (sampled) profiles, at most the
  ``FLIGHTS_MAX`` largest by impressions. Each is asked as a plan: its second-half impressions,
  its catalog frequency cap, ``h`` days, and what targets it in the catalog: thinning weights
  profiles by its category's share in the first half only and gives its own holdout (the
  catalog's ``HOLDOUT_SQL`` with its id) no slots, the NBD takes the universe less the holdout
  share; the answer is compared with the distinct profiles it really reached there. ``error``
  is the impressions-weighted mean of ``|predicted - actual| / actual``, with
  ``median_error``, ``signed_error`` (weighted, positive = forecast too high) and ``count``.
  Every advertiser's campaigns are used; only these aggregates are returned.
- ``ad-stream`` (no campaign qualifies): all second-half impressions as one plan (uncapped for
  thinning; for the NBD the model this plan would use, a beta-binomial over the larger of the
  halves' largest per-profile counts when capped) against the profiles with any impression.

The candidate with the lower ``error`` answers (a tie, or no impressions to backtest at all:
the negative binomial, which needs no observed slots).

**Answer.** ``universe`` (eligible profiles: the segments' union, or everyone; never opted-out,
erased or kids' profiles), ``reach``, ``reach_share``, ``avg_frequency`` (deliverable
impressions / reach), ``distribution`` (profiles reached 1..9 and 10+ times),
``deliverable_impressions`` (the plan, or what the chosen model can deliver), ``model``,
``ad_category`` and ``holdout_percent`` (as asked), ``backtest_error`` (the chosen model's
``error``), ``backtest`` (``method``, ``days``, ``campaigns``, ``candidates`` with each
candidate's errors) and ``parameters`` (``history_days``, ``replayed_days``,
``sampled_profiles``, and under ``candidates`` each model's fit and its reach and
deliverable impressions for this plan).

**What an advertiser sees** (``release``; admin keys get all of the above). Its universe
may be any list it uploaded, and a saturated plan answers with that list's own ad history,
so: every profile count and the deliverable impressions ``coarse`` (a step of ``k`` or the
second significant figure, the coarser; a reach under ``k`` is None), frequency buckets under
``k`` folded into ``suppressed`` as the frequency endpoint folds them, the models' fitted
parameters dropped, the ad-stream backtest without its impressions or reaches, and the flight
backtest (other advertisers' campaigns among its list) only when it rests on at least
``BACKTEST_MIN_CAMPAIGNS`` campaigns, as each candidate's ``error`` to 0.1 %; else
``method`` = ``withheld``. The model is still chosen on the full backtest.

A frequency cap above every day count caps nothing and is computed as that count
(``frequency_cap`` may be 1000; the pmf recursion holds cap x profile-days floats).

Scale: per-profile day vectors are aggregated in ClickHouse (identical vectors counted once),
with each profile's impressions of the plan's category and of each flight's category and its
flights' holdout flags in the same pass (one join of the impressions with the catalog);
above ``SAMPLE_MAX`` eligible profiles a stable hash sample of the universe is read and scaled
up, for the plan and the backtest alike.

NumPy and ``math.lgamma`` only: SciPy is not a dependency.
"""

# The package splits the forecast by job: ``models`` (the maths), ``history`` (the SQL),
# ``backtest`` (choosing the model), ``answer`` (one forecast), ``release`` (what an advertiser
# sees). ``adtier.measure.forecast`` stays the import path of its public names.
# The functions ``history``, ``backtest`` and ``release`` shadow their modules' names on the
# package: import a module's other names from the module (``from ...forecast.history import``).

from __future__ import annotations

from adtier.measure.forecast.answer import forecast
from adtier.measure.forecast.backtest import Flight, backtest
from adtier.measure.forecast.history import (
    FLIGHT_MIN_REACH,
    FLIGHTS_MAX,
    HISTORY_DAYS_MAX,
    SAMPLE_MAX,
    history,
    scope,
    tier1,
)
from adtier.measure.forecast.models import (
    CANDIDATES,
    CATEGORY_PRIOR,
    Counts,
    GammaPoisson,
    bb_concentration,
    beta_binomial,
    counts_on,
    delivery_weights,
    expected_delivered,
    exposure_pmf,
    fit_gamma_poisson,
    fit_shape,
    fit_shape_zeros,
    gamma_poisson,
    nbd,
    plan_reach,
    rates,
    solve_win_rate,
    targeted_reach,
    thinning_reach,
    win_rate_max,
)
from adtier.measure.forecast.release import BACKTEST_MIN_CAMPAIGNS, coarse, release

__all__ = ["fit_shape", "fit_shape_zeros", "bb_concentration", "nbd", "beta_binomial",
           "expected_delivered", "solve_win_rate", "exposure_pmf", "plan_reach", "Counts",
           "counts_on", "thinning_reach", "GammaPoisson", "fit_gamma_poisson",
           "gamma_poisson", "delivery_weights", "targeted_reach", "win_rate_max", "rates",
           "tier1", "Flight", "backtest", "scope", "history", "forecast", "release",
           "coarse", "CANDIDATES", "BACKTEST_MIN_CAMPAIGNS",
           "CATEGORY_PRIOR",
           "HISTORY_DAYS_MAX", "SAMPLE_MAX", "FLIGHTS_MAX", "FLIGHT_MIN_REACH"]
