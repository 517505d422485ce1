"""The simulated world: households, traits, catalog; vectorised ids and the holdout rule."""

from __future__ import annotations

import datetime as dt
import uuid
import zlib

import msgspec
import numpy as np
import pytest

from adtier.catalog.models import Advertiser, Campaign, Creative, Title
from adtier.simulate import params as P
from adtier.simulate.ids import (
    crc32_rows,
    decimal_ids,
    hex_ids,
    holdout_mask,
    in_holdout,
    int_hash64,
    matrix_strings,
    uuid4_bytes,
    uuid_text,
)
from adtier.simulate.world import build_world, default_start

START = dt.date(2026, 11, 1)


@pytest.fixture(scope="module")
def world():
    return build_world(11, 5_000, 7, START)


def test_same_seed_same_world_and_another_seed_another(world):
    again = build_world(11, 5_000, 7, START)
    for name in ("account", "kids", "opted_out", "country", "primary_device", "genre_pref",
                 "affinity", "skip_propensity", "fatigue", "holdout"):
        assert np.array_equal(getattr(world, name), getattr(again, name)), name
    assert world.catalog.campaigns == again.catalog.campaigns
    assert world.catalog.titles == again.catalog.titles
    other = build_world(12, 5_000, 7, START)
    assert not np.array_equal(world.genre_pref, other.genre_pref)


def test_households_kids_and_opt_outs(world):
    sizes = np.bincount(world.account)
    assert sizes.min() >= 1 and sizes.max() <= 5
    owners = np.r_[0, np.cumsum(sizes)[:-1]]
    assert not world.kids[owners].any(), "an account's first profile is an adult"
    assert 0.07 < world.kids.mean() < 0.13
    assert not (world.kids & world.opted_out).any()
    assert world.opted_out.sum() > 0
    kid_genres = np.array([g in P.KIDS_GENRES for g in P.GENRES])
    assert np.allclose(world.genre_pref[world.kids][:, ~kid_genres], 0)
    assert np.allclose(world.genre_pref.sum(axis=1), 1, atol=1e-5)
    # a household shares its country
    assert all(len(set(world.country[world.account == a])) == 1 for a in range(50))


def test_catalog_items_are_valid_api_items(world):
    cat = world.catalog
    msgspec.convert(cat.advertisers, list[Advertiser])
    campaigns = msgspec.convert(cat.campaigns, list[Campaign])
    msgspec.convert(cat.creatives, list[Creative])
    titles = msgspec.convert(cat.titles, list[Title])
    assert len({c.campaign_id for c in campaigns}) == len(campaigns)
    ids = {t.content_id for t in titles}
    promos = [c for c in campaigns if c.promoted_title_id or c.promoted_genre]
    assert len(promos) == len(cat.promo_campaigns) >= 2
    assert all(c.holdout_percent > 0 for c in promos)
    assert all(c.promoted_title_id in ids for c in promos if c.promoted_title_id)
    assert all(c.start_date >= START and c.end_date <= START + dt.timedelta(days=6)
               for c in campaigns)
    assert cat.cmp_filler.sum() >= 2 and cat.cmp_active[cat.cmp_filler].all()
    assert all(t.series_id in ids for t in titles if t.kind == "episode")


def test_default_window_is_in_the_past():
    today = dt.date(2026, 11, 28)
    start = default_start(7, today)
    assert start + dt.timedelta(days=7) == today - dt.timedelta(days=1)


def test_vectorised_ids_match_python():
    values = np.array([0, 7, 123_456, 9_999_999])
    assert matrix_strings(decimal_ids("pf", values, 7)).astype(str).tolist() == [
        f"pf{v:07d}" for v in values]
    big = np.array([0, 1, 2**63 - 1, 0xDEADBEEF], np.uint64)
    assert matrix_strings(hex_ids(big)).astype(str).tolist() == [f"{int(v):016x}" for v in big]
    raw = uuid4_bytes(np.random.default_rng(1), 50)
    texts = matrix_strings(uuid_text(raw)).astype(str).tolist()
    for row, text in zip(raw, texts):
        parsed = uuid.UUID(text)
        assert parsed.bytes == row.tobytes() and parsed.version == 4 and str(parsed) == text


def test_crc32_and_int_hash64_match_clickhouse_definitions():
    words = [b"pf0000001", b"pf0000002", b"abcdefghijklmnop"]
    matrix = np.array([np.frombuffer(w.ljust(16, b" ")[:16], np.uint8) for w in words])
    padded = [w.ljust(16, b" ")[:16] for w in words]
    assert crc32_rows(matrix).tolist() == [zlib.crc32(w) for w in padded]
    # SELECT intHash64(toUInt64(12345)) on ClickHouse
    assert int(int_hash64(np.array([12345], np.uint64))[0]) == 16722121143744093920


def test_holdout_share_and_single_profile_rule(world):
    crc = world.profile_crc
    mask = holdout_mask(crc, "cmp-house-1", 20.0)
    assert 0.17 < mask.mean() < 0.23
    other = holdout_mask(crc, "cmp-house-2", 20.0)
    assert 0.02 < (mask & other).mean() < 0.06, "campaigns' holdouts are independent"
    for i in range(0, 200, 7):
        assert in_holdout(world.profile_id(i), "cmp-house-1", 20.0) == mask[i]
    c = world.catalog.campaign_ids.index("cmp-house-1")
    assert np.array_equal(world.holdout[:, c], mask)
