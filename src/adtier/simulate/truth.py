"""Ground truth: what the simulated world really was, written as Parquet (pyarrow).

``--truth PATH`` is a directory:

- ``profiles.parquet`` - one row per profile: household, kind, opt-out, country, devices and the
  latent traits (genre preferences, ad-category affinities, skip/click/mute/pause propensities,
  ad fatigue, dayparts, activity), plus realised sessions and impressions;
- ``exposures.parquet`` - every impression served (``served``) and every holdout opportunity
  (``served = false``: the campaign was chosen for a holdout profile, which was shown a filler);
- ``campaigns.parquet`` - per campaign: flight, cap, holdout, promotion, true impressions, reach,
  frequency distribution (1..10+), cumulative daily reach and funnel counts;
- ``effects.parquet`` - the planted effects with the amount planted and what was realised;
- ``summary.json`` - the run: seed, size, window, events by type.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from adtier.events import AD_EVENT_TYPES
from adtier.simulate import params as P
from adtier.simulate.emit import _dict, _take, _ts
from adtier.simulate.ids import arrow_strings, hex_ids
from adtier.simulate.sessions import ChunkState, DayBlock
from adtier.simulate.world import World

__all__ = ["TruthRecorder", "Truth"]

_N_TYPES = len(P.EVENT_TYPES)
_N_AD = len(AD_EVENT_TYPES)
_NULL = pa.scalar(None, pa.string())


@dataclass
class Truth:
    """The in-memory ground truth (what the Parquet files hold, minus the exposure rows)."""

    events_by_type: dict[str, int]
    n_ad_events: int
    n_content_events: int
    profiles: pa.Table
    campaigns: pa.Table
    effects: pa.Table
    summary: dict
    exposures: pa.Table | None = None  # kept in memory only when asked (small worlds)

    @property
    def n_events(self) -> int:
        return self.n_ad_events + self.n_content_events


@dataclass
class TruthRecorder:
    world: World
    path: Path | None = None
    keep_exposures: bool = False
    _writer: pq.ParquetWriter | None = field(default=None, init=False)
    _kept: list[pa.Table] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        w = self.world
        n_cmp = len(w.catalog.campaign_ids)
        self.type_counts = np.zeros(_N_TYPES, np.int64)
        self.campaign_types = np.zeros((n_cmp, _N_TYPES), np.int64)
        self.reach = np.zeros(n_cmp, np.int64)
        self.freq_hist = np.zeros((n_cmp, 10), np.int64)
        self.daily_new_reach = np.zeros((n_cmp, w.days), np.int64)
        self.assigned = np.zeros((n_cmp, 2), np.int64)  # by arm: treated, holdout
        self.started_after = np.zeros((n_cmp, 2), np.int64)
        self.promo_tally = np.zeros((n_cmp, 2, 2), np.int64)
        self.breaks_by_pod = np.zeros(4, np.int64)
        self.exits_by_pod = np.zeros(4, np.int64)
        self.sessions = np.zeros(w.n_profiles, np.int32)
        self.impressions = np.zeros(w.n_profiles, np.int32)
        self.total_sessions = 0
        self.ad_sessions = 0
        self.openers_started = 0
        self.total_plays = 0
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)

    # ---- accumulate --------------------------------------------------------------------------
    def add(self, block: DayBlock) -> None:
        a, c, t = block.ad, block.content, block.truth
        n_cmp = len(self.world.catalog.campaign_ids)
        self.type_counts += np.bincount(a.type, minlength=_N_TYPES)[:_N_TYPES]
        self.type_counts += np.bincount(c.type, minlength=_N_TYPES)[:_N_TYPES]
        self.campaign_types += np.bincount(a.campaign.astype(np.int64) * _N_TYPES + a.type,
                                           minlength=n_cmp * _N_TYPES).reshape(n_cmp, _N_TYPES)
        self.promo_tally += t.promo_tally
        self.breaks_by_pod += t.breaks_by_pod
        self.exits_by_pod += t.exits_by_pod
        self.total_sessions += t.sessions
        self.total_plays += t.title_plays
        self.ad_sessions += t.ad_sessions
        self.openers_started += t.openers_started
        self.sessions += np.bincount(t.session_profile,
                                     minlength=self.world.n_profiles).astype(np.int32)
        self.impressions += np.bincount(t.exp_profile[t.exp_served],
                                        minlength=self.world.n_profiles).astype(np.int32)
        if self.path is not None or self.keep_exposures:
            table = self._exposure_table(block)
            if self.path is not None:
                if self._writer is None:
                    self._writer = pq.ParquetWriter(self.path / "exposures.parquet", table.schema,
                                                    compression="zstd")
                self._writer.write_table(table)
            if self.keep_exposures:
                self._kept.append(table)

    def finish_chunk(self, state: ChunkState) -> None:
        """Per-profile facts of a chunk, once its last day is done."""
        exposed = state.exposures > 0
        self.reach += exposed.sum(axis=0)
        capped = np.minimum(state.exposures, 10)
        for k in range(1, 11):
            self.freq_hist[:, k - 1] += (capped == k).sum(axis=0)
        days = self.world.days
        first = state.first_served.astype(np.int64)
        for c in range(first.shape[1]):
            seen = first[:, c][first[:, c] >= 0]
            self.daily_new_reach[c] += np.bincount(seen, minlength=days)[:days]
        holdout = self.world.holdout[state.lo:state.hi]
        assigned = state.first_assigned >= 0
        for arm, mask in ((0, assigned & ~holdout), (1, assigned & holdout)):
            self.assigned[:, arm] += mask.sum(axis=0)
            self.started_after[:, arm] += (mask & state.started_after).sum(axis=0)

    def _exposure_table(self, block: DayBlock) -> pa.Table:
        t = block.truth
        w = self.world
        cat = w.catalog
        served = pa.array(t.exp_served)
        return pa.table({
            "profile_id": arrow_strings(w.profile_id_matrix(t.exp_profile)),
            "campaign_id": _dict(t.exp_campaign, cat.campaign_ids),
            "creative_id": pc.if_else(
                served, _take(cat.creative_ids, np.maximum(t.exp_creative, 0)), _NULL),
            "ts": _ts(t.exp_ts),
            "day": pa.array(np.full(len(t.exp_ts), block.day, np.int16)),
            "ad_serving_id": pc.if_else(served, arrow_strings(hex_ids(t.exp_ad_serving)), _NULL),
            "served": pa.array(t.exp_served),
            "frequency": pa.array(t.exp_frequency),
        })

    # ---- results -----------------------------------------------------------------------------
    def finish(self, extra_summary: dict | None = None) -> Truth:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        truth = Truth(
            events_by_type={t: int(n) for t, n in zip(P.EVENT_TYPES, self.type_counts) if n},
            n_ad_events=int(self.type_counts[:_N_AD].sum()),
            n_content_events=int(self.type_counts[_N_AD:].sum()),
            profiles=self._profiles(),
            campaigns=self._campaigns(),
            effects=self._effects(),
            summary={},
            exposures=pa.concat_tables(self._kept) if self._kept else None,
        )
        w = self.world
        truth.summary = {
            "seed": w.seed, "profiles": w.n_profiles, "accounts": w.n_accounts, "days": w.days,
            "start": w.start.isoformat(),
            "end": (w.start + dt.timedelta(days=w.days)).isoformat(),
            "kids_profiles": int(w.kids.sum()), "opted_out_profiles": int(w.opted_out.sum()),
            "campaigns": len(w.catalog.campaign_ids), "titles": len(w.catalog.titles),
            "sessions": self.total_sessions, "title_plays": self.total_plays,
            "events": truth.n_events, "ad_events": truth.n_ad_events,
            "content_events": truth.n_content_events, "events_by_type": truth.events_by_type,
            "holdout_rule": "profile in holdout when intHash64(bitOr(bitShiftLeft(toUInt64("
                            "CRC32(profile_id)), 32), toUInt64(CRC32(campaign_id)))) % 10000 "
                            "< round(holdout_percent * 100)",
            "frequency_cap_day": "the UTC day the session started",
            **(extra_summary or {}),
        }
        if self.path is not None:
            pq.write_table(truth.profiles, self.path / "profiles.parquet", compression="zstd")
            pq.write_table(truth.campaigns, self.path / "campaigns.parquet")
            pq.write_table(truth.effects, self.path / "effects.parquet")
            (self.path / "summary.json").write_text(json.dumps(truth.summary, indent=2) + "\n")
        return truth

    def _profiles(self) -> pa.Table:
        w = self.world
        cols: dict[str, object] = {
            "profile_id": arrow_strings(w.profile_id_matrix(np.arange(w.n_profiles))),
            "account_id": arrow_strings(w.account_id_matrix(w.account)),
            "kind": _dict(w.kids.astype(np.int32), ["adult", "kids"]),
            "opted_out": pa.array(w.opted_out),
            "country": _dict(w.country, list(P.COUNTRIES)),
            "primary_device": _dict(w.primary_device, list(P.DEVICES)),
            "sessions_per_day": pa.array(w.activity),
            "skip_propensity": pa.array(w.skip_propensity),
            "ad_fatigue": pa.array(w.fatigue),
            "click_propensity": pa.array(w.click_propensity),
            "mute_propensity": pa.array(w.mute_propensity),
            "pause_propensity": pa.array(w.pause_propensity),
            "top_genre": _dict(w.genre_pref.argmax(axis=1), list(P.GENRES)),
        }
        for g, name in enumerate(P.GENRES):
            cols[f"genre_pref_{name}"] = pa.array(w.genre_pref[:, g])
        for k, name in enumerate(P.AD_CATEGORIES):
            cols[f"affinity_{name}"] = pa.array(w.affinity[:, k])
        for d, name in enumerate(P.DAYPARTS):
            cols[f"daypart_{name}"] = pa.array(w.daypart_pref[:, d])
        cols["sessions"] = pa.array(self.sessions)
        cols["impressions"] = pa.array(self.impressions)
        return pa.table(cols)

    def _campaigns(self) -> pa.Table:
        cat = self.world.catalog
        T = P.TYPE_CODE
        ct = self.campaign_types
        impressions = ct[:, T["impression"]]
        return pa.table({
            "campaign_id": cat.campaign_ids,
            "advertiser_id": [c["advertiser_id"] for c in cat.campaigns],
            "ad_category": [c["ad_category"] for c in cat.campaigns],
            "start_date": [c["start_date"] for c in cat.campaigns],
            "end_date": [c["end_date"] for c in cat.campaigns],
            "frequency_cap": cat.cmp_cap,
            "holdout_percent": cat.cmp_holdout,
            "promoted_title_id": [c.get("promoted_title_id") for c in cat.campaigns],
            "promoted_genre": [c.get("promoted_genre") for c in cat.campaigns],
            "impressions": impressions,
            "reach": self.reach,
            "avg_frequency": np.where(self.reach > 0, impressions / np.maximum(self.reach, 1), 0.0),
            "frequency_1_to_10plus": pa.array(self.freq_hist.tolist(), pa.list_(pa.int64())),
            "cumulative_daily_reach": pa.array(np.cumsum(self.daily_new_reach, axis=1).tolist(),
                                               pa.list_(pa.int64())),
            **{t: ct[:, T[t]] for t in ("viewable_impression", "start", "first_quartile",
                                        "midpoint", "third_quartile", "complete", "skip",
                                        "click", "error")},
            "assigned_treated": self.assigned[:, 0],
            "assigned_holdout": self.assigned[:, 1],
        })

    def _effects(self) -> pa.Table:
        cat = self.world.catalog
        rows: list[dict] = []
        opener_share = self.openers_started / self.ad_sessions if self.ad_sessions else 1.0
        for c in cat.promo_campaigns:
            (ts, tst), (hs, hst) = self.promo_tally[c]
            treated_rate = tst / ts if ts else float("nan")
            holdout_rate = hst / hs if hs else float("nan")
            title = cat.campaigns[c].get("promoted_title_id")
            rows.append({
                "effect": "promo_start_lift",
                "campaign_id": cat.campaign_ids[c],
                "target": title or f"genre:{cat.campaigns[c]['promoted_genre']}",
                "planted": float(cat.cmp_lift[c]),
                "definition": "extra probability that a session of a treated profile opens with "
                              "the promoted title (or a title of the promoted genre), from the "
                              "day after its first impression; none for the holdout. Expected "
                              "difference in the share of sessions starting it: planted * "
                              "(1 - holdout rate) * share of sessions whose first title starts "
                              "(viewers who leave at the pre-roll start nothing)",
                "treated_sessions": int(ts), "treated_sessions_with_start": int(tst),
                "holdout_sessions": int(hs), "holdout_sessions_with_start": int(hst),
                "treated_rate": treated_rate, "holdout_rate": holdout_rate,
                "realised": treated_rate - holdout_rate,
                "expected": float(cat.cmp_lift[c]) * (1 - holdout_rate) * opener_share
                            if hs else float("nan"),
                "assigned_treated_profiles": int(self.assigned[c, 0]),
                "assigned_holdout_profiles": int(self.assigned[c, 1]),
                "treated_profiles_started_after": int(self.started_after[c, 0]),
                "holdout_profiles_started_after": int(self.started_after[c, 1]),
            })
        for k in range(4):
            breaks, exits = self.breaks_by_pod[k], self.exits_by_pod[k]
            rows.append({
                "effect": "session_exit_after_pod",
                "campaign_id": None,
                "target": f"pod_size={k + 1}",
                "planted": float(P.exit_probability(k + 1)),
                "definition": "probability that the session ends right after a break of this "
                              "many ads (the viewer leaves within 30 s of the pod's end)",
                "treated_sessions": int(breaks), "treated_sessions_with_start": int(exits),
                "holdout_sessions": None, "holdout_sessions_with_start": None,
                "treated_rate": exits / breaks if breaks else float("nan"),
                "holdout_rate": None,
                "realised": exits / breaks if breaks else float("nan"),
                "expected": float(P.exit_probability(k + 1)),
                "assigned_treated_profiles": None, "assigned_holdout_profiles": None,
                "treated_profiles_started_after": None, "holdout_profiles_started_after": None,
            })
        return pa.Table.from_pylist(rows)
