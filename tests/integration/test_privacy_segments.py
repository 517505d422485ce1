"""Attacks on one person through segments, with advertiser keys only.

Attack 2: a one-profile static list builds to size 0 for a kids' or opted-out profile and 1
otherwise (and the profile look-up says the same). Attack 3: the overlap of a list with a
platform segment, then of the list plus one target: the difference is the target's membership.
After: a list below the minimum list size releases no size and no overlap; above it, sizes and
overlaps are noisy (seeded), so the ±1 difference is lost in the noise."""

from __future__ import annotations

import msgspec
import pytest

from tests.helpers import use_noise_secret
from tests.integration.test_segments_http import build, create, key_for, world  # noqa: F401

SECRETS = [f"secret-{i:02d}" for i in range(20)]


def _static(api, ids: list[str], headers: dict) -> dict:
    seg = create(api, {"name": "crm", "kind": "static", "profile_ids": ids}, headers)
    built = build(api, seg["segment_id"], headers)
    assert built["status"] == "ready", built
    return built


def _overlap(api, headers, a: str, b: str) -> int | None:
    got = api.client.get(f"/v1/segments/overlap?ids={a},{b}", headers=headers)
    assert got.status_code == 200, got.text
    return next(p["intersection"] for p in got.json()["pairs"] if p["a"] != p["b"])


def test_a_one_profile_list_does_not_tell_a_kid_or_an_opted_out_profile(world):  # noqa: F811
    adv = key_for(world, "adv-1")
    answers = {}
    for pid in ("pf-kid", "pf-opt", "pf-a"):  # excluded, excluded, an adult
        seg = _static(world, [pid], adv)
        platform = create(world, {"name": "all", "kind": "static",
                                  "profile_ids": ["pf-kid", "pf-opt", "pf-a"]})
        build(world, platform["segment_id"])
        lookup = world.client.get(f"/v1/profiles/{pid}/segments", headers=adv)
        answers[pid] = (seg["size"], _overlap(world, adv, seg["segment_id"],
                                              platform["segment_id"]),
                        lookup.status_code, lookup.json().get("segments"))
        # the admin still sees the exact size: the exclusion works
        assert world.client.get(f"/v1/segments/{seg['segment_id']}", headers=world.admin
                                ).json()["size"] == (0 if pid != "pf-a" else 1)
    # with exact sizes: (0, ...) for the kid and the opted-out profile, (1, ...) for the adult
    assert answers["pf-kid"] == answers["pf-opt"] == answers["pf-a"], answers
    assert answers["pf-a"][0] is None  # a list below the minimum size releases no size


@pytest.fixture
def crowd(world):  # noqa: F811
    """A platform segment of 1,200 profiles holding the target; the advertiser's list of 1,000
    of them (the minimum list size), and the same list plus the target."""
    adv = key_for(world, "adv-1")
    base = [f"u{i:04d}" for i in range(1000)]
    platform = create(world, {"name": "platform", "kind": "static",
                              "profile_ids": base + [f"v{i}" for i in range(199)] + ["target"]})
    assert build(world, platform["segment_id"])["status"] == "ready"
    listed = _static(world, base, adv)
    plus = _static(world, base + ["target"], adv)
    return adv, platform["segment_id"], listed["segment_id"], plus["segment_id"]


def test_list_plus_one_overlap_does_not_reveal_membership(world, rds, crowd):  # noqa: F811
    adv, platform, listed, plus = crowd
    exact = (_overlap(world, world.admin, listed, platform),
             _overlap(world, world.admin, plus, platform))
    assert exact == (1000, 1001)  # what the attack reads with exact overlaps
    hits = 0
    for secret in SECRETS:
        use_noise_secret(world, secret)
        a, b = _overlap(world, adv, listed, platform), _overlap(world, adv, plus, platform)
        hits += a is not None and b is not None and b - a == 1
    assert hits <= 5, hits  # exact overlaps: 20 of 20


def test_the_attack_as_filed_a_60_profile_list_gets_no_overlap(world, crowd):  # noqa: F811
    adv, platform, _, _ = crowd
    small = _static(world, [f"u{i:04d}" for i in range(60)], adv)
    small_plus = _static(world, [f"u{i:04d}" for i in range(60)] + ["target"], adv)
    assert _overlap(world, adv, small["segment_id"], platform) is None
    assert _overlap(world, adv, small_plus["segment_id"], platform) is None
    assert small["size"] is None and small_plus["size"] is None


def test_overlap_follows_the_k_setting(world, crowd):  # noqa: F811
    """The overlap's k is ADTIER_PRIVACY_K (it was a constant 50)."""
    adv, platform, listed, _ = crowd
    state = world.client.app.state.adtier
    state.settings = msgspec.structs.replace(state.settings, privacy_k=2000)
    got = world.client.get(f"/v1/segments/overlap?ids={listed},{platform}", headers=adv).json()
    assert got["k"] == 2000
    # 1,000-profile intersections are under that k: suppressed for the advertiser
    assert all(p["intersection"] is None and p["suppressed"] for p in got["pairs"])
    admin = world.client.get(f"/v1/segments/overlap?ids={listed},{platform}",
                             headers=world.admin).json()
    assert {p["intersection"] for p in admin["pairs"]} == {1000, 1200}
