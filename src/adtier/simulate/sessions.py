"""Vectorised viewing: sessions, title plays, ad breaks, pods, the VAST funnel, ratings.

One call simulates one day for one chunk of profiles, entirely with array operations: every
level (session -> title play -> break -> ad slot -> event) is expanded from the level above with
``np.repeat``, sequencing inside a session is done with segmented cumulative sums, and the few
things that carry over between days (exposures, frequency, first exposure for the promo effect)
live in ``ChunkState``. Random draws come from a stream per (seed, chunk, day), so a day's events
do not depend on how the caller consumes them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from adtier.simulate import params as P
from adtier.simulate.ids import uuid4_bytes
from adtier.simulate.world import DAY_MS, World

__all__ = ["AdArrays", "ContentArrays", "DayTruth", "DayBlock", "ChunkState", "simulate_day",
           "iterate_days", "AD_KINDS"]

_T = P.TYPE_CODE

# Ad event kinds per ad play, in emission order: (event type, playhead source).
AD_KINDS: tuple[tuple[str, str], ...] = (
    ("error", "zero"),            # 0 early error: no impression follows
    ("impression", "zero"),       # 1
    ("start", "zero"),            # 2
    ("viewable_impression", "two_s"),  # 3 (2 s of play)
    ("first_quartile", "q1"),     # 4
    ("mute", "mute"),             # 5
    ("pause", "pause"),           # 6
    ("resume", "pause"),          # 7
    ("click", "click"),           # 8
    ("midpoint", "q2"),           # 9
    ("unmute", "unmute"),         # 10
    ("third_quartile", "q3"),     # 11
    ("skip", "end"),              # 12
    ("error", "end"),             # 13 error during play
    ("complete", "duration"),     # 14
)
_KIND_TYPE = np.array([_T[t] for t, _ in AD_KINDS], np.uint8)


@dataclass
class AdArrays:
    """One row per ad event (columnar)."""

    type: np.ndarray  # uint8 code into params.EVENT_TYPES
    ts: np.ndarray  # int64 epoch ms
    profile: np.ndarray  # int64 global profile index
    session: np.ndarray  # uint64 session key
    device: np.ndarray
    campaign: np.ndarray
    creative: np.ndarray
    ad_serving: np.ndarray  # uint64 [ADSERVINGID]
    pod: np.ndarray  # uint64 pod key
    pod_position: np.ndarray
    break_pre: np.ndarray  # bool: pre-roll (else mid-roll)
    duration: np.ndarray
    playhead: np.ndarray
    content: np.ndarray
    error_code: np.ndarray  # 0 = none
    slot: np.ndarray  # index of the ad play in the day block

    def __len__(self) -> int:
        return len(self.type)


@dataclass
class ContentArrays:
    type: np.ndarray
    ts: np.ndarray
    profile: np.ndarray
    session: np.ndarray
    device: np.ndarray
    content: np.ndarray
    position: np.ndarray  # -1 = absent (ratings)
    watched: np.ndarray
    value: np.ndarray  # rating value, 0 = absent

    def __len__(self) -> int:
        return len(self.type)


@dataclass
class DayTruth:
    # exposures: one row per impression served, plus a row per holdout "ghost" opportunity
    exp_profile: np.ndarray
    exp_campaign: np.ndarray
    exp_creative: np.ndarray  # -1 for ghosts
    exp_ts: np.ndarray
    exp_ad_serving: np.ndarray  # 0 for ghosts
    exp_served: np.ndarray  # False = holdout ghost (the campaign was chosen, not shown)
    exp_frequency: np.ndarray  # impressions of (profile, campaign) so far, this one included
    sessions: int
    session_profile: np.ndarray  # global profile index of each session
    title_plays: int
    breaks_by_pod: np.ndarray  # breaks served, by pod size 1..4
    exits_by_pod: np.ndarray  # sessions that ended right after such a break
    # promo effect tallies, per promo campaign: [arm (0 treated, 1 holdout), (sessions, starts)]
    promo_tally: np.ndarray


@dataclass
class DayBlock:
    chunk: int
    day: int
    ad: AdArrays
    content: ContentArrays
    event_ids: np.ndarray  # (n_ad + n_content, 16) uint8: ad events first
    truth: DayTruth

    @property
    def n_events(self) -> int:
        return len(self.ad) + len(self.content)


@dataclass
class ChunkState:
    """What carries over from one day to the next for one chunk of profiles."""

    chunk: int
    lo: int
    hi: int
    n_campaigns: int
    exposures: np.ndarray = field(init=False)  # (n, C) impressions so far
    first_served: np.ndarray = field(init=False)  # (n, C) day of the first impression, -1
    first_assigned: np.ndarray = field(init=False)  # (n, C) first day chosen (served or ghost)
    started_after: np.ndarray = field(init=False)  # (n, C) started the promoted title after

    def __post_init__(self) -> None:
        shape = (self.hi - self.lo, self.n_campaigns)
        self.exposures = np.zeros(shape, np.int32)
        self.first_served = np.full(shape, -1, np.int16)
        self.first_assigned = np.full(shape, -1, np.int16)
        self.started_after = np.zeros(shape, bool)


# ---- array helpers --------------------------------------------------------------------------

def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Owner index and position within the owner for ``counts`` children per owner."""
    counts = np.asarray(counts, np.int64)
    owner = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    return owner, np.arange(len(owner)) - starts[owner]


def _exclusive_cumsum(values: np.ndarray, owner: np.ndarray, n_owners: int) -> np.ndarray:
    """Per-owner running total before each element (elements grouped by owner, in order)."""
    if len(values) == 0:
        return np.zeros(0, np.int64)
    before = np.cumsum(values) - values
    first = np.full(n_owners, 0, np.int64)
    counts = np.bincount(owner, minlength=n_owners)
    first[:] = np.cumsum(counts) - counts
    return before - before[np.minimum(first[owner], len(values) - 1)]


def _categorical(weights: np.ndarray, u: np.ndarray) -> np.ndarray:
    """One draw per row of (unnormalised) ``weights``, from uniforms ``u``."""
    cum = np.cumsum(weights, axis=1)
    return np.minimum((cum <= (u * cum[:, -1])[:, None]).sum(axis=1), weights.shape[1] - 1)


def _choice(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(np.cumsum(probs), u, side="right"), len(probs) - 1)


def _group_rank(group: np.ndarray, *order: np.ndarray) -> np.ndarray:
    """0-based rank of each element inside its group, by ``order`` keys (last key first)."""
    n = len(group)
    if n == 0:
        return np.zeros(0, np.int64)
    idx = np.lexsort((*order, group))
    g = group[idx]
    new = np.r_[True, g[1:] != g[:-1]]
    pos = np.arange(n)
    head = np.maximum.accumulate(np.where(new, pos, 0))
    rank = np.empty(n, np.int64)
    rank[idx] = pos - head
    return rank


def _u64(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(1, 2**63, size=n, dtype=np.int64).astype(np.uint64)


# ---- one day of one chunk -------------------------------------------------------------------

def simulate_day(world: World, state: ChunkState, day: int) -> DayBlock:
    cat = world.catalog
    rng = np.random.default_rng([world.seed, 1, state.chunk, day])
    lo, hi = state.lo, state.hi
    n = hi - lo
    n_cmp = len(cat.campaign_ids)
    day_ms = world.start_ms + day * DAY_MS
    weekend = (world.start + dt.timedelta(days=day)).weekday() >= 5

    # Sessions: how many today, when (daypart), on which device.
    n_sess = np.minimum(rng.poisson(world.activity[lo:hi] * (1.3 if weekend else 1.0)), 4)
    s_prof, _ = _expand(n_sess)
    S = len(s_prof)
    daypart = _categorical(world.daypart_pref[lo + s_prof], rng.random(S))
    s_start = (day_ms + P.DAYPART_START_H[daypart] * 3_600_000
               + (rng.random(S) * P.DAYPART_HOURS[daypart] * 3_600_000)).astype(np.int64)
    other_device = _choice(P.DEVICE_WEIGHTS / P.DEVICE_WEIGHTS.sum(), rng.random(S))
    s_device = np.where(rng.random(S) < 0.75, world.primary_device[lo + s_prof], other_device)
    s_key = _u64(rng, S)

    # Title plays: the first picked by genre preference and popularity, later ones often the
    # next episode; a promo's planted lift acts on the first play of a session.
    n_plays = np.minimum(rng.geometric(0.55, S), 4)
    w_sess, w_k = _expand(n_plays)
    W = len(w_sess)
    w_prof = s_prof[w_sess]
    genre = _categorical(world.genre_pref[lo + w_prof], rng.random(W))
    show = np.searchsorted(cat.show_key, genre + rng.random(W), side="right")
    show = np.minimum(show, len(cat.show_first) - 1)
    episode = np.minimum(rng.geometric(0.4, W) - 1, cat.show_episodes[show] - 1)
    content = cat.show_first[show] + episode
    # One draw per opener, split between the promos the profile has seen, so one promo never
    # overwrites another's effect: P(opener = promo c) = lift of c for every exposed profile.
    opener = w_k == 0
    u_promo = rng.random(W)
    taken = np.zeros(W)
    for c in cat.promo_campaigns:
        seen = state.first_served[w_prof, c]
        eligible = opener & (seen >= 0) & (seen < day)
        hit = eligible & (u_promo >= taken) & (u_promo < taken + cat.cmp_lift[c])
        taken += np.where(eligible, cat.cmp_lift[c], 0.0)
        if cat.cmp_promo_content[c] >= 0:
            content[hit] = cat.cmp_promo_content[c]
        else:
            g = cat.cmp_promo_genre[c]
            picked = np.searchsorted(cat.show_key, g + rng.random(int(hit.sum())), side="right")
            content[hit] = cat.show_first[np.minimum(picked, len(cat.show_first) - 1)]
    go_on = rng.random(W)
    for k in range(1, 4):
        m = np.nonzero(w_k == k)[0]
        nxt = cat.content_next[content[m - 1]]
        take = (nxt >= 0) & (go_on[m] < P.CONTINUE_SERIES_PROB)
        content[m[take]] = nxt[take]
    duration = cat.content_duration[content]
    pref = world.genre_pref[lo + w_prof, cat.content_genre[content]] / world.pref_max[lo + w_prof]
    complete = rng.random(W) < 0.3 + 0.45 * pref
    frac = rng.uniform(0.03, 0.95, W)
    length = np.where(complete, duration, (duration * frac).astype(np.int64) // 1000 * 1000)
    length = np.maximum(length, 1000)

    # Breaks: kids' profiles are never served ads.
    ads_on = ~world.kids[lo + w_prof]
    has_pre = ads_on & (rng.random(W) < P.PREROLL_PROB)
    n_mid = np.where(ads_on, (length - 1) // P.MIDROLL_INTERVAL_MS, 0)
    b_watch, b_j = _expand(has_pre.astype(np.int64) + n_mid)
    B = len(b_watch)
    b_pos = (b_j + 1 - has_pre[b_watch]) * P.MIDROLL_INTERVAL_MS
    b_pre = b_pos == 0
    u = rng.random(B)
    pod = np.where(b_pre, _choice(P.POD_WEIGHTS_PRE, u), _choice(P.POD_WEIGHTS_MID, u)) + 1
    leaves = rng.random(B) < P.exit_probability(pod)

    # Planted effect: a session ends right after the first break its viewer leaves at.
    b_sess = w_sess[b_watch]
    first_exit = np.full(S, -1, np.int64)
    exits = np.nonzero(leaves)[0]
    sess_of_exit, at = np.unique(b_sess[exits], return_index=True)
    first_exit[sess_of_exit] = exits[at]
    fe_w = first_exit[w_sess]
    exit_watch = np.where(fe_w >= 0, b_watch[np.maximum(fe_w, 0)] if B else 0, W)
    w_index = np.arange(W)
    keep_w = w_index <= exit_watch
    ends_by_exit = w_index == exit_watch
    length = np.where(ends_by_exit, b_pos[np.maximum(fe_w, 0)] if B else 0, length)
    complete &= ~ends_by_exit
    fe_b = first_exit[b_sess]
    keep_b = (fe_b < 0) | (np.arange(B) <= fe_b)
    b_exit = np.arange(B) == fe_b

    new_w = np.cumsum(keep_w) - 1
    w_sess, w_prof, content, length, complete, ends_by_exit, has_pre = (
        a[keep_w] for a in (w_sess, w_prof, content, length, complete, ends_by_exit, has_pre))
    pref = pref[keep_w]
    W = len(w_sess)
    b_watch = new_w[b_watch[keep_b]]
    b_pos, b_pre, pod, b_exit = (a[keep_b] for a in (b_pos, b_pre, pod, b_exit))
    B = len(b_watch)
    b_sess = w_sess[b_watch]
    b_key = _u64(rng, B)

    # Ad slots and serving: targeted by category affinity (not for opted-out profiles),
    # frequency caps per profile and session day, holdouts get a filler instead (a ghost).
    sl_break, sl_pos = _expand(pod)
    K = len(sl_break)
    sl_sess = b_sess[sl_break]
    sl_prof = s_prof[sl_sess]
    active = cat.cmp_active[:, day]
    base = cat.cmp_weight * active
    affinity = world.affinity[lo:hi][:, cat.cmp_category]
    weights = np.where(world.opted_out[lo:hi, None], 1.0,
                       affinity ** P.TARGETING_EXPONENT).astype(np.float32) * base
    cum = np.cumsum(weights, axis=1)
    draw = rng.random(K).astype(np.float32)
    rows = cum[sl_prof]
    candidate = np.minimum((rows <= (draw * rows[:, -1])[:, None]).sum(axis=1), n_cmp - 1)
    order = np.arange(K)
    rank = _group_rank(sl_prof * n_cmp + candidate, order, s_start[sl_sess])
    cap = cat.cmp_cap[candidate]
    over_cap = (cap > 0) & (rank >= cap)
    ghost = ~over_cap & world.holdout[lo + sl_prof, candidate]
    fillers = np.nonzero(active & cat.cmp_filler)[0]
    if len(fillers) == 0:
        fillers = np.nonzero(cat.cmp_filler)[0]
    final = candidate.copy()
    replaced = over_cap | ghost
    final[replaced] = fillers[rng.integers(0, len(fillers), int(replaced.sum()))]
    creative = (cat.cmp_creative_first[final]
                + (rng.random(K) * cat.cmp_creative_count[final]).astype(np.int64))
    ad_ms = cat.creative_duration[creative]
    freq = (state.exposures[sl_prof, final]
            + _group_rank(sl_prof * n_cmp + final, order, s_start[sl_sess]) + 1)

    # The VAST funnel, driven by the profile's traits.
    gp = lo + sl_prof
    device = s_device[sl_sess]
    early_error = rng.random(K) < P.EARLY_ERROR_BY_DEVICE[device]
    impression = ~early_error
    started = impression & (rng.random(K) < P.START_PROB)
    mid_error = started & (rng.random(K) < P.MID_ERROR_PROB)
    aff = world.affinity[gp, cat.cmp_category[final]]
    p_skip = np.clip(world.skip_propensity[gp] * (1 + world.fatigue[gp] * (freq - 1))
                     / np.sqrt(aff), 0.0, 0.95)
    skippable = ad_ms >= P.SKIPPABLE_FROM_MS
    skip = started & ~mid_error & skippable & (rng.random(K) < p_skip)
    completed = started & ~mid_error & ~skip
    skip_ph = P.SKIP_AFTER_MS + (rng.random(K) * (ad_ms - P.SKIP_AFTER_MS)).astype(np.int64)
    error_ph = (rng.random(K) * ad_ms).astype(np.int64)
    end_ph = np.where(completed, ad_ms, np.where(skip, skip_ph, np.where(mid_error, error_ph, 0)))
    viewable = started & (end_ph >= 2000) & (rng.random(K) < P.VIEWABLE_BY_DEVICE[device])
    q = [started & (end_ph >= (i * ad_ms) // 4) & (end_ph > 0) for i in (1, 2, 3)]
    click = started & (end_ph > 0) & (
        rng.random(K) < np.clip(world.click_propensity[gp] * aff, 0.0, 0.5))
    click_ph = (rng.random(K) * end_ph).astype(np.int64)
    paused = started & (end_ph > 1000) & (rng.random(K) < world.pause_propensity[gp])
    pause_ph = 1 + (rng.random(K) * (end_ph - 1)).astype(np.int64)
    pause_ms = rng.integers(2_000, 30_000, K)
    muted = started & (end_ph > 1000) & (rng.random(K) < world.mute_propensity[gp])
    mute_ph = (rng.random(K) * end_ph).astype(np.int64)
    unmuted = muted & (rng.random(K) < 0.5)
    unmute_ph = mute_ph + 1 + (rng.random(K) * (end_ph - mute_ph - 1)).clip(0).astype(np.int64)
    error_code = np.where(
        early_error, P.EARLY_ERROR_CODES[rng.integers(0, len(P.EARLY_ERROR_CODES), K)],
        np.where(mid_error, P.MID_ERROR_CODES[rng.integers(0, len(P.MID_ERROR_CODES), K)], 0))
    slot_ms = (end_ph + np.where(paused, pause_ms, 0) + np.where(early_error, 1_500, 0)
               + np.where(impression & ~started, 1_000, 0))

    # Timeline: slot -> break -> title play -> session.
    slot_off = _exclusive_cumsum(slot_ms, sl_break, B)
    break_ms = np.bincount(sl_break, slot_ms, minlength=B).astype(np.int64)
    break_off = b_pos + _exclusive_cumsum(break_ms, b_watch, W)
    ads_in_watch = np.bincount(b_watch, break_ms, minlength=W).astype(np.int64)
    exit_delay = np.where(ends_by_exit, rng.integers(1_000, 30_000, W), 0)
    gap = rng.integers(5_000, 90_000, W)
    watch_ms = length * (length > 0) + ads_in_watch + exit_delay + gap
    watch_start = s_start[w_sess] + _exclusive_cumsum(watch_ms, w_sess, S)
    break_start = watch_start[b_watch] + break_off
    slot_start = break_start[sl_break] + slot_off

    # Ad events: a flag matrix (slot x kind) -> one row per set flag.
    zeros = np.zeros(K, np.int64)
    playheads = {
        "zero": zeros, "two_s": np.full(K, 2000, np.int64), "q1": ad_ms // 4, "q2": ad_ms // 2,
        "q3": (3 * ad_ms) // 4, "duration": ad_ms, "end": end_ph, "click": click_ph,
        "pause": pause_ph, "mute": mute_ph, "unmute": unmute_ph,
    }
    flags = np.stack([early_error, impression, started, viewable, q[0], muted, paused, paused,
                      click, q[1], unmuted, q[2], skip, mid_error, completed], axis=1)
    ph_matrix = np.stack([playheads[src] for _, src in AD_KINDS], axis=1)
    ev_slot, ev_kind = np.nonzero(flags)
    ph = ph_matrix[ev_slot, ev_kind]
    pause_shift = np.where(paused[ev_slot] & ((ph > pause_ph[ev_slot]) | (ev_kind == 7)),
                           pause_ms[ev_slot], 0)
    ev_break = sl_break[ev_slot]
    ad = AdArrays(
        type=_KIND_TYPE[ev_kind],
        ts=slot_start[ev_slot] + ph + pause_shift,
        profile=(lo + sl_prof[ev_slot]).astype(np.int64),
        session=s_key[sl_sess[ev_slot]],
        device=device[ev_slot].astype(np.uint8),
        campaign=final[ev_slot].astype(np.int16),
        creative=creative[ev_slot].astype(np.int32),
        ad_serving=None,  # filled below (keys drawn after the slots are known)
        pod=b_key[ev_break],
        pod_position=(sl_pos[ev_slot] + 1).astype(np.uint8),
        break_pre=b_pre[ev_break],
        duration=ad_ms[ev_slot],
        playhead=ph,
        content=content[b_watch[ev_break]].astype(np.int32),
        error_code=np.where(_KIND_TYPE[ev_kind] == _T["error"], error_code[ev_slot], 0),
        slot=ev_slot,
    )
    sl_key = _u64(rng, K)
    ad.ad_serving = sl_key[ev_slot]

    # Viewing events: start (after the pre-roll), a heartbeat every 5 minutes of content, then
    # complete or stop; sometimes a rating. A viewer who left at the pre-roll saw no content.
    reached = length > 0
    n_hb = np.where(reached, (length - 1) // P.HEARTBEAT_MS, 0)
    rated = reached & (length >= 300_000) & (
        rng.random(W) < np.where(complete, P.RATING_PROB_COMPLETE, P.RATING_PROB_STOP))
    n_ev = np.where(reached, 2 + n_hb + rated, 0)
    e_w, e_j = _expand(n_ev)
    b_count = np.bincount(b_watch, minlength=W)
    b_first = np.cumsum(b_count) - b_count
    cum_break = np.r_[0, np.cumsum(break_ms)]
    pre_ms = np.where(has_pre & (b_count > 0),
                      cum_break[np.minimum(b_first + 1, B)] - cum_break[b_first], 0)
    kind = np.where(e_j == 0, 0, np.where(e_j <= n_hb[e_w], 1, np.where(e_j == n_hb[e_w] + 1, 2, 3)))
    position = np.where(kind == 0, 0, np.where(kind == 1, e_j * P.HEARTBEAT_MS, length[e_w]))
    # breaks of the play at or before a heartbeat's position
    hb_breaks = np.minimum(has_pre[e_w] + position // P.MIDROLL_INTERVAL_MS, b_count[e_w])
    ads_before = cum_break[b_first[e_w] + hb_breaks] - cum_break[b_first[e_w]]
    end_ts = watch_start + length + ads_in_watch + exit_delay
    rating_delay = rng.integers(3_000, 20_000, W)
    ts = np.where(kind == 0, watch_start[e_w] + pre_ms[e_w],
                  np.where(kind == 1, watch_start[e_w] + position + ads_before,
                           np.where(kind == 2, end_ts[e_w], end_ts[e_w] + rating_delay[e_w])))
    score = pref + rng.normal(0.0, 0.25, W)
    rating_value = np.where(score < 0.25, -1, np.where(score < 0.8, 1, 2)).astype(np.int8)
    end_type = np.where(complete, _T["content_complete"], _T["content_stop"])
    types = np.array([_T["content_start"], _T["content_heartbeat"], 0, _T["rating"]], np.uint8)
    ctype = np.where(kind == 2, end_type[e_w], types[kind]).astype(np.uint8)
    wp = w_prof[e_w]
    content_events = ContentArrays(
        type=ctype,
        ts=ts.astype(np.int64),
        profile=(lo + wp).astype(np.int64),
        session=s_key[w_sess[e_w]],
        device=s_device[w_sess[e_w]].astype(np.uint8),
        content=content[e_w].astype(np.int32),
        position=np.where(kind == 3, -1, position).astype(np.int64),
        watched=np.where(kind == 3, -1, position).astype(np.int64),
        value=np.where(kind == 3, rating_value[e_w], 0).astype(np.int8),
    )

    # Ground truth of the day, then carry the state to tomorrow.
    served = impression
    imp_ts = slot_start
    freq_exact = (state.exposures[sl_prof[served], final[served]]
                  + _group_rank(sl_prof[served] * n_cmp + final[served], imp_ts[served]) + 1)
    truth = DayTruth(
        exp_profile=np.r_[lo + sl_prof[served], lo + sl_prof[ghost]].astype(np.int64),
        exp_campaign=np.r_[final[served], candidate[ghost]].astype(np.int16),
        exp_creative=np.r_[creative[served], np.full(int(ghost.sum()), -1)].astype(np.int32),
        exp_ts=np.r_[imp_ts[served], imp_ts[ghost]].astype(np.int64),
        exp_ad_serving=np.r_[sl_key[served], np.zeros(int(ghost.sum()), np.uint64)],
        exp_served=np.r_[np.ones(int(served.sum()), bool), np.zeros(int(ghost.sum()), bool)],
        exp_frequency=np.r_[freq_exact, np.zeros(int(ghost.sum()), np.int64)].astype(np.int32),
        sessions=S,
        session_profile=(lo + s_prof).astype(np.int64),
        title_plays=W,
        breaks_by_pod=np.bincount(pod - 1, minlength=4)[:4],
        exits_by_pod=np.bincount(pod[b_exit] - 1, minlength=4)[:4],
        promo_tally=np.zeros((n_cmp, 2, 2), np.int64),
    )
    _promo_truth(world, state, day, truth, s_prof, w_sess, content, reached)
    assigned = np.zeros(n * n_cmp, bool)
    assigned[sl_prof[~ghost] * n_cmp + final[~ghost]] = True
    assigned[sl_prof[ghost] * n_cmp + candidate[ghost]] = True
    assigned = assigned.reshape(n, n_cmp)
    state.first_assigned[assigned & (state.first_assigned < 0)] = day
    today = np.bincount(sl_prof[served] * n_cmp + final[served], minlength=n * n_cmp)
    today = today.reshape(n, n_cmp).astype(np.int32)
    state.first_served[(today > 0) & (state.first_served < 0)] = day
    state.exposures += today

    event_ids = _event_ids(rng, len(ad) + len(content_events))
    return DayBlock(state.chunk, day, ad, content_events, event_ids, truth)


def _event_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    return uuid4_bytes(rng, n)


def _promo_truth(world: World, state: ChunkState, day: int, truth: DayTruth, s_prof: np.ndarray,
                 w_sess: np.ndarray, content: np.ndarray, reached: np.ndarray) -> None:
    """Per promo campaign, sessions of profiles assigned before today, by arm, and how many of
    them started the promoted title (or a title of the promoted genre)."""
    cat = world.catalog
    S = len(s_prof)
    for c in cat.promo_campaigns:
        if cat.cmp_promo_content[c] >= 0:
            hit = reached & (content == cat.cmp_promo_content[c])
        else:
            hit = reached & cat.content_genres[content, cat.cmp_promo_genre[c]]
        started = np.bincount(w_sess[hit], minlength=S) > 0
        assigned_day = state.first_assigned[s_prof, c]
        after = (assigned_day >= 0) & (assigned_day < day)
        holdout = world.holdout[state.lo + s_prof, c]
        for arm, mask in ((0, after & ~holdout), (1, after & holdout)):
            truth.promo_tally[c, arm] = (int(mask.sum()), int((mask & started).sum()))
        state.started_after[s_prof[after & started], c] = True


def iterate_days(world: World, chunks: range | None = None):
    """Every (chunk, day) block of the world, chunk by chunk, day by day.

    Yields ``(state, block)``; the state of a chunk is final after its last day."""
    n_cmp = len(world.catalog.campaign_ids)
    for chunk in chunks if chunks is not None else range(world.n_chunks):
        lo = chunk * P.CHUNK_PROFILES
        hi = min(world.n_profiles, lo + P.CHUNK_PROFILES)
        state = ChunkState(chunk, lo, hi, n_cmp)
        for day in range(world.days):
            yield state, simulate_day(world, state, day)
