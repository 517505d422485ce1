"""Lookalike audiences: the profiles most like a seed segment, by affinity vectors.

Method:

1. Affinity vector of a profile (last ``LOOKALIKE_DAYS`` days, time-decayed with a
   ``HALF_LIFE_DAYS`` half-life so recent behaviour counts more):
   - its ad-category shares: impressions per IAB category of the campaigns it saw, divided by
     its total (one block, summing to 1);
   - its genre shares: watch minutes per genre of the titles it watched, divided by its total
     (a second block, summing to 1; a title counts for each of its genres).
   The two blocks are concatenated; a profile without ads or without viewing has a zero block.
2. The seed centroid is the mean of the seed members' L2-normalised vectors (members seen in
   the window; a seed needs at least ``MIN_SEED`` members).
3. Every profile of the eligible universe (profiles with any event in the last 90 days, minus
   kids', opted-out and erased profiles) that is not in the seed is scored by cosine similarity
   to the centroid.
4. The top ``size_percent`` (1 to 10) of those eligible non-seed profiles are the members:
   exactly ``round(size_percent / 100 * eligible)``, ties broken by profile hash.

Memory: the feature rows are processed per chunk; what stays for the final ranking is, per
eligible profile, its similarity, hash and id (about 16 bytes + the id's length).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import numpy as np
from clickhouse_connect.driver.client import Client

from adtier.segments import kernels as K
from adtier.segments.aggregate import Plan, hash_ranges
from adtier.segments.aggregate_arrow import Chunk, iter_chunks, load_chunk

__all__ = ["MIN_SEED", "vocabulary", "affinity", "lookalike_members", "lookalike_members_hashed"]

MIN_SEED = 100
LOOKALIKE_DAYS = 90
HALF_LIFE_DAYS = 14.0


class LookalikeError(ValueError):
    pass


def vocabulary(client: Client) -> tuple[list[str], list[str]]:
    """The ad categories and genres in the catalog: the dimensions of the affinity vector."""
    cats = [r[0] for r in client.query(
        "SELECT DISTINCT ad_category FROM campaigns FINAL ORDER BY ad_category").result_rows]
    genres = [r[0] for r in client.query(
        "SELECT DISTINCT arrayJoin(genres) AS g FROM titles FINAL ORDER BY g").result_rows]
    return cats, genres


def _plan(cats: list[str], genres: list[str], source: str = "rollup") -> Plan:
    return Plan(labels={"ad": [""] + [f"cat:{c}" for c in cats],
                        "content": [""] + [f"genre:{g}" for g in genres]},
                lookback_days=LOOKALIKE_DAYS, source=source)


def affinity(chunk: Chunk, n_cats: int, n_genres: int) -> np.ndarray:
    """Concatenated (category shares, genre shares) per profile of the chunk."""
    blocks = []
    for family, metric, n in (("ad", "impressions", n_cats), ("content", "minutes", n_genres)):
        rows = chunk.families[family]
        blocks.append(K.key_shares(rows.offsets, rows.day_off, rows.key, rows.metrics[metric],
                                   n, LOOKALIKE_DAYS, HALF_LIFE_DAYS))
    return np.hstack(blocks) if blocks else np.zeros((chunk.size, 0))


def lookalike_members(client: Client, seed_id: str, seed_version: int, size_percent: float,
                      day: dt.date, chunk_profiles: int = 200_000,
                      progress: Callable[[int, int], None] | None = None,
                      source: str = "rollup") -> np.ndarray:
    """The member profile ids of a lookalike of ``seed_id`` at ``seed_version``."""
    return lookalike_members_hashed(client, seed_id, seed_version, size_percent, day,
                                    chunk_profiles, progress, source)[0]


def lookalike_members_hashed(client: Client, seed_id: str, seed_version: int,
                             size_percent: float, day: dt.date, chunk_profiles: int = 200_000,
                             progress: Callable[[int, int], None] | None = None,
                             source: str = "rollup") -> tuple[np.ndarray, np.ndarray]:
    """``lookalike_members`` and their ``profile_hash`` (uint64, aligned): the build matches
    exclusions recorded while it ran by hash (erasures keep only the hash)."""
    seed_hashes = np.sort(client.query_arrow(
        "SELECT DISTINCT cityHash64(profile_id) AS h FROM segment_members "
        "WHERE segment_id = {s:String} AND version = {v:UInt64}",
        parameters={"s": seed_id, "v": seed_version}).column("h").to_numpy())
    if seed_hashes.shape[0] < MIN_SEED:
        raise LookalikeError(f"the seed segment {seed_id} has {seed_hashes.shape[0]} members; "
                             f"a lookalike needs at least {MIN_SEED}")
    cats, genres = vocabulary(client)
    plan = _plan(cats, genres, source)
    # Pass 1: the seed centroid, reading only the seed's profiles.
    seed_where = ("profile_hash IN (SELECT cityHash64(profile_id) FROM segment_members "
                  "WHERE segment_id = {seed:String} AND version = {seed_version:UInt64})")
    extra = {"seed": seed_id, "seed_version": seed_version}
    total = np.zeros(len(cats) + len(genres))
    n_seed = 0
    seed_chunks = max(1, int(np.ceil(seed_hashes.shape[0] / chunk_profiles)))
    for lo, hi in hash_ranges(seed_chunks):
        chunk = load_chunk(client, plan, day, lo, hi, LOOKALIKE_DAYS,
                           extra_where=seed_where, extra_params=extra)
        vectors = K.normalize_rows(affinity(chunk, len(cats), len(genres)))
        total += vectors.sum(axis=0)
        n_seed += chunk.size
    centroid = total / max(n_seed, 1)
    # Pass 2: score the eligible universe without the seed.
    sims, hashes, ids = [], [], []
    for i, n, chunk in iter_chunks(client, plan, day, chunk_profiles, LOOKALIKE_DAYS):
        keep = ~np.isin(chunk.hashes, seed_hashes)
        score = K.cosine_to(affinity(chunk, len(cats), len(genres)), centroid)
        sims.append(score[keep])
        hashes.append(chunk.hashes[keep])
        ids.append(chunk.profile_ids[keep].astype(str))  # fixed-width: compact, no objects
        if progress:
            progress(i + 1, n)
    none = (np.zeros(0, dtype=object), np.zeros(0, np.uint64))
    if not sims:
        return none
    sim = np.concatenate(sims)
    hsh = np.concatenate(hashes)
    want = int(round(size_percent / 100.0 * sim.shape[0]))
    if want == 0:
        return none
    order = np.lexsort((hsh, -sim))[:want]  # highest similarity first, then hash
    all_ids = np.concatenate(ids)
    return all_ids[order].astype(object), hsh[order]
