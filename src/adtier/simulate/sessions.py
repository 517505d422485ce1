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
    # sessions with ads, and those whose first title started (its viewer did not leave at the
    # pre-roll): the share of a promo's planted lift that can show as a start
    ad_sessions: int = 0
    openers_started: int = 0


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
    """Simulate one day of one chunk of profiles; advances ``state`` to the next day."""
    return _Day(world, state, day).run()


class _Day:
    """The stages of one simulated day, in the order they draw from the day's random stream
    (the order is part of the model: changing it changes every event of a seed)."""

    def __init__(self, world: World, state: ChunkState, day: int):
        self.world, self.state, self.day = world, state, day
        self.cat = world.catalog
        self.rng = np.random.default_rng([world.seed, 1, state.chunk, day])
        self.lo, self.n = state.lo, state.hi - state.lo
        self.n_cmp = len(self.cat.campaign_ids)

    def run(self) -> DayBlock:
        self.sessions()
        self.title_plays()
        self.breaks()
        self.serve()
        self.funnel()
        self.timeline()
        ad = self.ad_events()
        content = self.content_events()
        truth = self.truth()
        event_ids = uuid4_bytes(self.rng, len(ad) + len(content))
        return DayBlock(self.state.chunk, self.day, ad, content, event_ids, truth)

    def sessions(self) -> None:
        """How many sessions each profile has today, when (daypart), on which device."""
        w, rng, lo = self.world, self.rng, self.lo
        weekend = (w.start + dt.timedelta(days=self.day)).weekday() >= 5
        n_sess = np.minimum(rng.poisson(w.activity[lo:lo + self.n] * (1.3 if weekend else 1.0)), 4)
        self.s_prof, _ = _expand(n_sess)
        S = self.S = len(self.s_prof)
        daypart = _categorical(w.daypart_pref[lo + self.s_prof], rng.random(S))
        day_ms = w.start_ms + self.day * DAY_MS
        self.s_start = (day_ms + P.DAYPART_START_H[daypart] * 3_600_000
                        + (rng.random(S) * P.DAYPART_HOURS[daypart] * 3_600_000)).astype(np.int64)
        other_device = _choice(P.DEVICE_WEIGHTS / P.DEVICE_WEIGHTS.sum(), rng.random(S))
        self.s_device = np.where(rng.random(S) < 0.75, w.primary_device[lo + self.s_prof],
                                 other_device)
        self.s_key = _u64(rng, S)

    def title_plays(self) -> None:
        """The first title of a session is picked by genre preference and popularity (or is a
        promo's, by its planted lift), later ones are often the next episode; how much of each
        is watched follows the profile's taste for its genre."""
        w, cat, rng, lo, day, state = self.world, self.cat, self.rng, self.lo, self.day, self.state
        n_plays = np.minimum(rng.geometric(0.55, self.S), 4)
        self.w_sess, w_k = _expand(n_plays)
        W = len(self.w_sess)
        w_prof = self.w_prof = self.s_prof[self.w_sess]
        genre = _categorical(w.genre_pref[lo + w_prof], rng.random(W))
        show = np.searchsorted(cat.show_key, genre + rng.random(W), side="right")
        show = np.minimum(show, len(cat.show_first) - 1)
        episode = np.minimum(rng.geometric(0.4, W) - 1, cat.show_episodes[show] - 1)
        content = cat.show_first[show] + episode
        # One draw per opener, split between the promos the profile has seen, so one promo
        # never overwrites another's effect: P(opener = promo c) = lift of c when exposed.
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
        self.content = content
        duration = cat.content_duration[content]
        self.pref = w.genre_pref[lo + w_prof, cat.content_genre[content]] / w.pref_max[lo + w_prof]
        self.complete = rng.random(W) < 0.3 + 0.45 * self.pref
        frac = rng.uniform(0.03, 0.95, W)
        length = np.where(self.complete, duration,
                          (duration * frac).astype(np.int64) // 1000 * 1000)
        self.length = np.maximum(length, 1000)

    def breaks(self) -> None:
        """Pre-rolls and mid-rolls with their pods (kids' profiles are never served ads), and
        the planted long-pod effect: a session ends right after the first break its viewer
        leaves at; the rest of that session is dropped."""
        rng, W, S = self.rng, len(self.w_sess), self.S
        ads_on = ~self.world.kids[self.lo + self.w_prof]
        has_pre = ads_on & (rng.random(W) < P.PREROLL_PROB)
        n_mid = np.where(ads_on, (self.length - 1) // P.MIDROLL_INTERVAL_MS, 0)
        b_watch, b_j = _expand(has_pre.astype(np.int64) + n_mid)
        B = len(b_watch)
        b_pos = (b_j + 1 - has_pre[b_watch]) * P.MIDROLL_INTERVAL_MS
        b_pre = b_pos == 0
        u = rng.random(B)
        pod = np.where(b_pre, _choice(P.POD_WEIGHTS_PRE, u), _choice(P.POD_WEIGHTS_MID, u)) + 1
        leaves = rng.random(B) < P.exit_probability(pod)

        b_sess = self.w_sess[b_watch]
        first_exit = np.full(S, -1, np.int64)
        exits = np.nonzero(leaves)[0]
        sess_of_exit, at = np.unique(b_sess[exits], return_index=True)
        first_exit[sess_of_exit] = exits[at]
        fe_w = first_exit[self.w_sess]
        exit_watch = np.where(fe_w >= 0, b_watch[np.maximum(fe_w, 0)] if B else 0, W)
        w_index = np.arange(W)
        keep_w = w_index <= exit_watch
        ends_by_exit = w_index == exit_watch
        self.length = np.where(ends_by_exit, b_pos[np.maximum(fe_w, 0)] if B else 0, self.length)
        self.complete &= ~ends_by_exit
        fe_b = first_exit[b_sess]
        keep_b = (fe_b < 0) | (np.arange(B) <= fe_b)
        b_exit = np.arange(B) == fe_b

        new_w = np.cumsum(keep_w) - 1
        self.ends_by_exit, self.has_pre = ends_by_exit[keep_w], has_pre[keep_w]
        for name in ("w_sess", "w_prof", "content", "length", "complete", "pref"):
            setattr(self, name, getattr(self, name)[keep_w])
        self.W = len(self.w_sess)
        self.b_watch = new_w[b_watch[keep_b]]
        self.b_pos, self.b_pre, self.pod, self.b_exit = (
            a[keep_b] for a in (b_pos, b_pre, pod, b_exit))
        self.B = len(self.b_watch)
        self.b_sess = self.w_sess[self.b_watch]
        self.b_key = _u64(rng, self.B)

    def serve(self) -> None:
        """One campaign per ad slot: targeted by category affinity (not for opted-out
        profiles), frequency caps per profile and session day, and a filler for a holdout
        profile (a ghost exposure) or an over-cap slot."""
        w, cat, rng, lo, n, n_cmp = self.world, self.cat, self.rng, self.lo, self.n, self.n_cmp
        self.sl_break, self.sl_pos = _expand(self.pod)
        K = self.K = len(self.sl_break)
        self.sl_sess = self.b_sess[self.sl_break]
        sl_prof = self.sl_prof = self.s_prof[self.sl_sess]
        active = cat.cmp_active[:, self.day]
        base = cat.cmp_weight * active
        affinity = w.affinity[lo:lo + n][:, cat.cmp_category]
        weights = np.where(w.opted_out[lo:lo + n, None], 1.0,
                           affinity ** P.TARGETING_EXPONENT).astype(np.float32) * base
        cum = np.cumsum(weights, axis=1)
        draw = rng.random(K).astype(np.float32)
        rows = cum[sl_prof]
        candidate = np.minimum((rows <= (draw * rows[:, -1])[:, None]).sum(axis=1), n_cmp - 1)
        order = np.arange(K)
        session_start = self.s_start[self.sl_sess]
        rank = _group_rank(sl_prof * n_cmp + candidate, order, session_start)
        cap = cat.cmp_cap[candidate]
        over_cap = (cap > 0) & (rank >= cap)
        self.ghost = ~over_cap & w.holdout[lo + sl_prof, candidate]
        fillers = np.nonzero(active & cat.cmp_filler)[0]
        if len(fillers) == 0:
            fillers = np.nonzero(cat.cmp_filler)[0]
        final = candidate.copy()
        replaced = over_cap | self.ghost
        final[replaced] = fillers[rng.integers(0, len(fillers), int(replaced.sum()))]
        self.candidate, self.final = candidate, final
        self.creative = (cat.cmp_creative_first[final]
                         + (rng.random(K) * cat.cmp_creative_count[final]).astype(np.int64))
        self.ad_ms = cat.creative_duration[self.creative]
        self.freq = (self.state.exposures[sl_prof, final]
                     + _group_rank(sl_prof * n_cmp + final, order, session_start) + 1)

    def funnel(self) -> None:
        """The VAST funnel of every ad play, driven by the profile's traits: errors, start,
        viewability, skip (rising with frequency: fatigue), quartiles, clicks, pause, mute."""
        w, rng, K, ad_ms = self.world, self.rng, self.K, self.ad_ms
        gp = self.lo + self.sl_prof
        device = self.device = self.s_device[self.sl_sess]
        self.early_error = rng.random(K) < P.EARLY_ERROR_BY_DEVICE[device]
        self.impression = ~self.early_error
        started = self.started = self.impression & (rng.random(K) < P.START_PROB)
        mid_error = self.mid_error = started & (rng.random(K) < P.MID_ERROR_PROB)
        aff = w.affinity[gp, self.cat.cmp_category[self.final]]
        p_skip = np.clip(w.skip_propensity[gp] * (1 + w.fatigue[gp] * (self.freq - 1))
                         / np.sqrt(aff), 0.0, 0.95)
        skippable = ad_ms >= P.SKIPPABLE_FROM_MS
        skip = self.skip = started & ~mid_error & skippable & (rng.random(K) < p_skip)
        self.completed = started & ~mid_error & ~skip
        skip_ph = P.SKIP_AFTER_MS + (rng.random(K) * (ad_ms - P.SKIP_AFTER_MS)).astype(np.int64)
        error_ph = (rng.random(K) * ad_ms).astype(np.int64)
        end_ph = self.end_ph = np.where(self.completed, ad_ms, np.where(
            skip, skip_ph, np.where(mid_error, error_ph, 0)))
        self.viewable = started & (end_ph >= 2000) & (
            rng.random(K) < P.VIEWABLE_BY_DEVICE[device])
        self.quartiles = [started & (end_ph >= (i * ad_ms) // 4) & (end_ph > 0) for i in (1, 2, 3)]
        self.click = started & (end_ph > 0) & (
            rng.random(K) < np.clip(w.click_propensity[gp] * aff, 0.0, 0.5))
        self.click_ph = (rng.random(K) * end_ph).astype(np.int64)
        self.paused = started & (end_ph > 1000) & (rng.random(K) < w.pause_propensity[gp])
        self.pause_ph = 1 + (rng.random(K) * (end_ph - 1)).astype(np.int64)
        self.pause_ms = rng.integers(2_000, 30_000, K)
        self.muted = started & (end_ph > 1000) & (rng.random(K) < w.mute_propensity[gp])
        self.mute_ph = (rng.random(K) * end_ph).astype(np.int64)
        self.unmuted = self.muted & (rng.random(K) < 0.5)
        self.unmute_ph = self.mute_ph + 1 + (
            rng.random(K) * (end_ph - self.mute_ph - 1)).clip(0).astype(np.int64)
        self.error_code = np.where(
            self.early_error, P.EARLY_ERROR_CODES[rng.integers(0, len(P.EARLY_ERROR_CODES), K)],
            np.where(mid_error, P.MID_ERROR_CODES[rng.integers(0, len(P.MID_ERROR_CODES), K)], 0))
        self.slot_ms = (end_ph + np.where(self.paused, self.pause_ms, 0)
                        + np.where(self.early_error, 1_500, 0)
                        + np.where(self.impression & ~started, 1_000, 0))

    def timeline(self) -> None:
        """Wall-clock times: slot -> break -> title play -> session, by segmented sums."""
        rng, W, B = self.rng, self.W, self.B
        slot_off = _exclusive_cumsum(self.slot_ms, self.sl_break, B)
        self.break_ms = np.bincount(self.sl_break, self.slot_ms, minlength=B).astype(np.int64)
        break_off = self.b_pos + _exclusive_cumsum(self.break_ms, self.b_watch, W)
        self.ads_in_watch = np.bincount(self.b_watch, self.break_ms, minlength=W).astype(np.int64)
        self.exit_delay = np.where(self.ends_by_exit, rng.integers(1_000, 30_000, W), 0)
        gap = rng.integers(5_000, 90_000, W)
        watch_ms = self.length * (self.length > 0) + self.ads_in_watch + self.exit_delay + gap
        self.watch_start = (self.s_start[self.w_sess]
                            + _exclusive_cumsum(watch_ms, self.w_sess, self.S))
        break_start = self.watch_start[self.b_watch] + break_off
        self.slot_start = break_start[self.sl_break] + slot_off

    def ad_events(self) -> AdArrays:
        """A flag matrix (slot x kind) -> one row per set flag."""
        K, ad_ms = self.K, self.ad_ms
        q = self.quartiles
        playheads = {
            "zero": np.zeros(K, np.int64), "two_s": np.full(K, 2000, np.int64),
            "q1": ad_ms // 4, "q2": ad_ms // 2, "q3": (3 * ad_ms) // 4, "duration": ad_ms,
            "end": self.end_ph, "click": self.click_ph, "pause": self.pause_ph,
            "mute": self.mute_ph, "unmute": self.unmute_ph,
        }
        flags = np.stack([self.early_error, self.impression, self.started, self.viewable, q[0],
                          self.muted, self.paused, self.paused, self.click, q[1], self.unmuted,
                          q[2], self.skip, self.mid_error, self.completed], axis=1)
        ph_matrix = np.stack([playheads[src] for _, src in AD_KINDS], axis=1)
        ev_slot, ev_kind = np.nonzero(flags)
        ph = ph_matrix[ev_slot, ev_kind]
        pause_shift = np.where(
            self.paused[ev_slot] & ((ph > self.pause_ph[ev_slot]) | (ev_kind == 7)),
            self.pause_ms[ev_slot], 0)
        ev_break = self.sl_break[ev_slot]
        types = _KIND_TYPE[ev_kind]
        self.sl_key = _u64(self.rng, K)
        return AdArrays(
            type=types,
            ts=self.slot_start[ev_slot] + ph + pause_shift,
            profile=(self.lo + self.sl_prof[ev_slot]).astype(np.int64),
            session=self.s_key[self.sl_sess[ev_slot]],
            device=self.device[ev_slot].astype(np.uint8),
            campaign=self.final[ev_slot].astype(np.int16),
            creative=self.creative[ev_slot].astype(np.int32),
            ad_serving=self.sl_key[ev_slot],
            pod=self.b_key[ev_break],
            pod_position=(self.sl_pos[ev_slot] + 1).astype(np.uint8),
            break_pre=self.b_pre[ev_break],
            duration=ad_ms[ev_slot],
            playhead=ph,
            content=self.content[self.b_watch[ev_break]].astype(np.int32),
            error_code=np.where(types == _T["error"], self.error_code[ev_slot], 0),
            slot=ev_slot,
        )

    def content_events(self) -> ContentArrays:
        """Start (after the pre-roll), a heartbeat every 5 minutes of content, then complete or
        stop; sometimes a rating. A viewer who left at the pre-roll saw no content."""
        rng, W, B, length = self.rng, self.W, self.B, self.length
        reached = self.reached = length > 0
        n_hb = np.where(reached, (length - 1) // P.HEARTBEAT_MS, 0)
        rated = reached & (length >= 300_000) & (
            rng.random(W) < np.where(self.complete, P.RATING_PROB_COMPLETE, P.RATING_PROB_STOP))
        e_w, e_j = _expand(np.where(reached, 2 + n_hb + rated, 0))
        b_count = np.bincount(self.b_watch, minlength=W)
        b_first = np.cumsum(b_count) - b_count
        cum_break = np.r_[0, np.cumsum(self.break_ms)]
        pre_ms = np.where(self.has_pre & (b_count > 0),
                          cum_break[np.minimum(b_first + 1, B)] - cum_break[b_first], 0)
        kind = np.where(e_j == 0, 0, np.where(e_j <= n_hb[e_w], 1,
                                              np.where(e_j == n_hb[e_w] + 1, 2, 3)))
        position = np.where(kind == 0, 0, np.where(kind == 1, e_j * P.HEARTBEAT_MS, length[e_w]))
        # the play's breaks at or before a heartbeat's position
        hb_breaks = np.minimum(self.has_pre[e_w] + position // P.MIDROLL_INTERVAL_MS, b_count[e_w])
        ads_before = cum_break[b_first[e_w] + hb_breaks] - cum_break[b_first[e_w]]
        start = self.watch_start
        end_ts = start + length + self.ads_in_watch + self.exit_delay
        rating_delay = rng.integers(3_000, 20_000, W)
        ts = np.where(kind == 0, start[e_w] + pre_ms[e_w],
                      np.where(kind == 1, start[e_w] + position + ads_before,
                               np.where(kind == 2, end_ts[e_w], end_ts[e_w] + rating_delay[e_w])))
        score = self.pref + rng.normal(0.0, 0.25, W)
        rating_value = np.where(score < 0.25, -1, np.where(score < 0.8, 1, 2)).astype(np.int8)
        end_type = np.where(self.complete, _T["content_complete"], _T["content_stop"])
        types = np.array([_T["content_start"], _T["content_heartbeat"], 0, _T["rating"]], np.uint8)
        session = self.w_sess[e_w]
        return ContentArrays(
            type=np.where(kind == 2, end_type[e_w], types[kind]).astype(np.uint8),
            ts=ts.astype(np.int64),
            profile=(self.lo + self.w_prof[e_w]).astype(np.int64),
            session=self.s_key[session],
            device=self.s_device[session].astype(np.uint8),
            content=self.content[e_w].astype(np.int32),
            position=np.where(kind == 3, -1, position).astype(np.int64),
            watched=np.where(kind == 3, -1, position).astype(np.int64),
            value=np.where(kind == 3, rating_value[e_w], 0).astype(np.int8),
        )

    def truth(self) -> DayTruth:
        """The day's ground truth; then the chunk's state moves on to tomorrow."""
        world, state, lo, n, day = self.world, self.state, self.lo, self.n, self.day
        n_cmp = self.n_cmp
        sl_prof, final, ghost, candidate = self.sl_prof, self.final, self.ghost, self.candidate
        served = self.impression
        imp_ts = self.slot_start
        n_ghost = int(ghost.sum())
        freq_exact = (state.exposures[sl_prof[served], final[served]]
                      + _group_rank(sl_prof[served] * n_cmp + final[served], imp_ts[served]) + 1)
        truth = DayTruth(
            exp_profile=np.r_[lo + sl_prof[served], lo + sl_prof[ghost]].astype(np.int64),
            exp_campaign=np.r_[final[served], candidate[ghost]].astype(np.int16),
            exp_creative=np.r_[self.creative[served], np.full(n_ghost, -1)].astype(np.int32),
            exp_ts=np.r_[imp_ts[served], imp_ts[ghost]].astype(np.int64),
            exp_ad_serving=np.r_[self.sl_key[served], np.zeros(n_ghost, np.uint64)],
            exp_served=np.r_[np.ones(int(served.sum()), bool), np.zeros(n_ghost, bool)],
            exp_frequency=np.r_[freq_exact, np.zeros(n_ghost, np.int64)].astype(np.int32),
            sessions=self.S,
            session_profile=(lo + self.s_prof).astype(np.int64),
            title_plays=self.W,
            breaks_by_pod=np.bincount(self.pod - 1, minlength=4)[:4],
            exits_by_pod=np.bincount(self.pod[self.b_exit] - 1, minlength=4)[:4],
            promo_tally=np.zeros((n_cmp, 2, 2), np.int64),
        )
        _promo_truth(world, state, day, truth, self.s_prof, self.w_sess, self.content, self.reached)
        W = self.W
        first_play = (np.r_[0, np.nonzero(np.diff(self.w_sess))[0] + 1] if W
                      else np.zeros(0, np.int64))
        adult_session = ~world.kids[lo + self.s_prof[self.w_sess[first_play]]]
        truth.ad_sessions = int(adult_session.sum())
        truth.openers_started = int((adult_session & self.reached[first_play]).sum())

        assigned = np.zeros(n * n_cmp, bool)
        assigned[sl_prof[~ghost] * n_cmp + final[~ghost]] = True
        assigned[sl_prof[ghost] * n_cmp + candidate[ghost]] = True
        assigned = assigned.reshape(n, n_cmp)
        state.first_assigned[assigned & (state.first_assigned < 0)] = day
        today = np.bincount(sl_prof[served] * n_cmp + final[served], minlength=n * n_cmp)
        today = today.reshape(n, n_cmp).astype(np.int32)
        state.first_served[(today > 0) & (state.first_served < 0)] = day
        state.exposures += today
        return truth


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
