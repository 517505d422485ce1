"""Generated sessions: determinism, the funnel's consistency, caps, holdouts, kids, and the
planted effects as they show in the generated events."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from adtier.simulate import params as P
from adtier.simulate.sessions import iterate_days
from adtier.simulate.truth import TruthRecorder
from adtier.simulate.world import build_world

START = dt.date(2026, 11, 1)
T = P.TYPE_CODE


def _run(seed: int, profiles: int, days: int = 7, keep: bool = True):
    world = build_world(seed, profiles, days, START)
    recorder = TruthRecorder(world, keep_exposures=True)
    blocks = []
    for state, block in iterate_days(world):
        recorder.add(block)
        if block.day == world.days - 1:
            recorder.finish_chunk(state)
        if keep:
            blocks.append(block)
    return world, blocks, recorder.finish()


@pytest.fixture(scope="module")
def small():
    return _run(21, 3_000)


@pytest.fixture(scope="module")
def large():
    """Big enough for the planted effects to stand out of the noise (about 2M events)."""
    return _run(5, 20_000)


def test_same_seed_same_events_other_seed_other_events(small):
    world, blocks, _ = small
    _, again, _ = _run(21, 3_000)
    assert len(blocks) == len(again) == 7
    for a, b in zip(blocks, again):
        assert np.array_equal(a.event_ids, b.event_ids)
        for part in ("ad", "content"):
            x, y = getattr(a, part), getattr(b, part)
            for name in vars(x):
                assert np.array_equal(getattr(x, name), getattr(y, name)), (part, name)
    _, other, _ = _run(22, 3_000)
    assert not np.array_equal(blocks[0].event_ids[:100], other[0].event_ids[:100])
    assert len(blocks[0].ad) != len(other[0].ad)


def test_event_ids_are_unique_uuid4(small):
    _, blocks, truth = small
    ids = np.concatenate([b.event_ids for b in blocks])
    assert len(ids) == truth.n_events
    assert len(np.unique(ids.view("V16"))) == len(ids)
    assert ((ids[:, 6] >> 4) == 4).all() and ((ids[:, 8] >> 6) == 2).all()


def _per_play(block):
    """(plays x event types) counts, and per-play arrays, from a block's ad events."""
    a = block.ad
    plays, index = np.unique(a.slot, return_inverse=True)
    counts = np.zeros((len(plays), len(P.EVENT_TYPES)), np.int64)
    np.add.at(counts, (index, a.type), 1)
    return a, index, counts


def test_vast_funnel_is_consistent_per_ad_play(small):
    for block in small[1]:
        a, index, n = _per_play(block)
        has = n > 0
        once = [T[t] for t in ("impression", "viewable_impression", "start", "first_quartile",
                               "midpoint", "third_quartile", "complete", "skip", "error", "click")]
        assert (n[:, once] <= 1).all(), "each funnel step at most once per ad play"
        imp, start, complete, skip = (has[:, T[t]] for t in ("impression", "start", "complete", "skip"))
        q1, mid, q3 = has[:, T["first_quartile"]], has[:, T["midpoint"]], has[:, T["third_quartile"]]
        assert not (start & ~imp).any(), "no start without an impression"
        assert not (q1 & ~start).any() and not (mid & ~q1).any() and not (q3 & ~mid).any()
        assert not (complete & ~q3).any(), "no complete without every quartile"
        assert not (skip & ~start).any() and not (skip & complete).any()
        for t in ("click", "pause", "mute", "viewable_impression"):
            assert not (has[:, T[t]] & ~start).any(), t
        assert not (has[:, T["resume"]] & ~has[:, T["pause"]]).any()
        assert not (has[:, T["unmute"]] & ~has[:, T["mute"]]).any()
        error = has[:, T["error"]]
        assert not (error & complete).any()
        assert (imp | error).all(), "every ad play reports something"
        # an error before the impression is the play's only event
        early = error & ~imp
        assert (n[early].sum(axis=1) == 1).all()
        # playheads within the creative, and the quartiles in time order
        assert (a.playhead <= a.duration).all() and (a.playhead >= 0).all()
        assert ((a.error_code > 0) == (a.type == T["error"])).all()
        order = np.lexsort((a.playhead, a.type != T["start"], index))
        funnel = np.isin(a.type, [T[t] for t in ("start", "first_quartile", "midpoint",
                                                 "third_quartile", "complete")])
        sel = order[funnel[order]]
        same = index[sel][1:] == index[sel][:-1]
        assert (np.diff(a.ts[sel])[same] >= 0).all()
        assert (np.diff(a.playhead[sel])[same] >= 0).all()


def test_viewing_events_are_consistent(small):
    for block in small[1]:
        c = block.content
        key = c.session.astype(np.uint64) ^ (c.content.astype(np.uint64) << np.uint64(40))
        starts = set(key[c.type == T["content_start"]].tolist())
        ends = c.type == T["content_complete"]
        ends |= c.type == T["content_stop"]
        assert set(key[ends].tolist()) <= starts, "a title ends only after it started"
        hb = c.type == T["content_heartbeat"]
        assert (c.position[hb] % P.HEARTBEAT_MS == 0).all() and (c.position[hb] > 0).all()
        assert (c.watched[hb] == c.position[hb]).all()
        rating = c.type == T["rating"]
        assert set(np.unique(c.value[rating]).tolist()) <= {-1, 1, 2}
        assert (c.value[~rating] == 0).all() and (c.position[rating] == -1).all()


def test_kids_are_never_served_ads_and_opted_out_still_watch(small):
    world, blocks, truth = small
    ad_profiles = np.concatenate([b.ad.profile for b in blocks])
    assert not world.kids[ad_profiles].any()
    viewers = np.concatenate([b.content.profile for b in blocks])
    assert world.kids[viewers].any(), "kids do watch"
    assert world.opted_out[viewers].any(), "opted-out profiles still watch"
    exposures = truth.exposures
    profile_index = np.array([int(p[2:]) for p in exposures["profile_id"].to_pylist()])
    assert not world.kids[profile_index].any()


def test_frequency_caps_and_holdouts_hold(small):
    world, _, truth = small
    cat = world.catalog
    e = truth.exposures
    profile = np.array([int(p[2:]) for p in e["profile_id"].to_pylist()])
    campaign = np.array([cat.campaign_ids.index(c) for c in e["campaign_id"].to_pylist()])
    served = np.array(e["served"].to_pylist())
    day = e["day"].to_numpy()
    # holdout profiles are never shown the campaign; every ghost is a holdout profile
    assert not world.holdout[profile[served], campaign[served]].any()
    assert world.holdout[profile[~served], campaign[~served]].all()
    assert (~served).sum() > 0
    # impressions per profile, campaign and (session) day never exceed the cap
    key = (profile[served] * 100 + campaign[served]) * 100 + day[served]
    keys, counts = np.unique(key, return_counts=True)
    cap = cat.cmp_cap[(keys // 100) % 100]
    assert ((cap == 0) | (counts <= cap)).all()
    assert (counts[cap > 0] == cap[cap > 0]).any(), "caps are reached"
    # reach in the truth is the number of distinct exposed profiles
    reach = dict(zip(truth.campaigns["campaign_id"].to_pylist(), truth.campaigns["reach"].to_pylist()))
    for c in range(len(cat.campaign_ids)):
        assert reach[cat.campaign_ids[c]] == len(np.unique(profile[served & (campaign == c)]))


def test_planted_promo_lift_shows_in_the_events(large):
    world, blocks, truth = large
    cat = world.catalog
    e = truth.exposures
    profile = np.array([int(p[2:]) for p in e["profile_id"].to_pylist()])
    campaign = np.array([cat.campaign_ids.index(c) for c in e["campaign_id"].to_pylist()])
    day = e["day"].to_numpy()
    checked = 0
    for c in cat.promo_campaigns:
        promo = cat.cmp_promo_content[c]
        if promo < 0:
            continue  # the genre promo is noisier (a genre is a large baseline)
        first = np.full(world.n_profiles, 99)
        np.minimum.at(first, profile[campaign == c], day[campaign == c])
        rates = {}
        for arm in (False, True):
            sessions = started = 0
            for b in blocks:
                keys = np.concatenate([b.ad.session, b.content.session])
                owners = np.concatenate([b.ad.profile, b.content.profile])
                keys, at = np.unique(keys, return_index=True)
                owners = owners[at]
                after = (first[owners] < b.day) & (world.holdout[owners, c] == arm)
                opened = b.content.session[(b.content.type == T["content_start"])
                                           & (b.content.content == promo)]
                sessions += int(after.sum())
                started += int((after & np.isin(keys, opened)).sum())
            rates[arm] = started / sessions
        planted = cat.cmp_lift[c] * (1 - rates[True])
        assert rates[False] - rates[True] == pytest.approx(planted, abs=0.035), (c, rates)
        checked += 1
    assert checked >= 2


def test_planted_long_pod_exits_show_in_the_events(large):
    _, blocks, truth = large
    ended = np.zeros(4)
    total = np.zeros(4)
    for b in blocks:
        a, c = b.ad, b.content
        sessions = np.concatenate([a.session, c.session])
        order = np.argsort(sessions, kind="stable")
        ts = np.concatenate([a.ts, c.ts])[order]
        keys = sessions[order]
        bounds = np.r_[np.nonzero(np.diff(keys))[0] + 1, len(keys)]
        last = dict(zip(keys[bounds - 1].tolist(), np.maximum.reduceat(ts, np.r_[0, bounds[:-1]]).tolist()))
        pods, index = np.unique(a.pod, return_inverse=True)
        size = np.zeros(len(pods), np.int64)
        np.maximum.at(size, index, a.pod_position.astype(np.int64))
        end = np.zeros(len(pods), np.int64)
        np.maximum.at(end, index, a.ts)
        session = np.zeros(len(pods), np.uint64)
        session[index] = a.session
        session_end = np.array([last[s] for s in session.tolist()])
        quits = session_end - end <= 60_000
        for k in range(4):
            total[k] += (size == k + 1).sum()
            ended[k] += (quits & (size == k + 1)).sum()
    rate = ended / total
    planted_gap = P.exit_probability(np.arange(1, 5)) - P.exit_probability(1)
    assert rate[3] - rate[0] == pytest.approx(planted_gap[3], abs=0.03)
    assert rate[2] - rate[1] == pytest.approx(planted_gap[2] - planted_gap[1], abs=0.025)
    assert abs(rate[1] - rate[0]) < 0.02
    planted = truth.effects.filter(
        truth.effects["effect"].to_numpy(zero_copy_only=False) == "session_exit_after_pod")
    for row in planted.to_pylist():
        assert row["realised"] == pytest.approx(row["planted"], abs=0.01)
