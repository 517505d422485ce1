"""Attack: an advertiser names another advertiser's catalog ids in the inputs it controls.

Every input that takes a campaign id (the rule language's ``campaign_exposures`` key, wherever
it sits in the tree), a segment id (lookalike seeds, forecasts, overlaps) must answer exactly as
a never-existing id does: the competitor's ids cannot be probed or used. Platform catalog keys
(titles, genres, categories) stay open to everyone."""

from __future__ import annotations

import pytest

from tests.integration.test_segments_http import build, create, key_for, world  # noqa: F401

FOREIGN, UNKNOWN, OWN = "cmp-food", "cmp-never-was", "cmp-auto"  # adv-2's, nobody's, adv-1's


def exposures(campaign: str, op: str = ">=", value: int = 1) -> dict:
    return {"feature": "campaign_exposures", "key": campaign, "op": op, "value": value}


# every place a campaign-keyed predicate can sit in a tree
TREES = {
    "bare": lambda c: exposures(c),
    "all": lambda c: {"all": [{"feature": "active_days", "op": ">=", "value": 0}, exposures(c)]},
    "any": lambda c: {"any": [exposures(c, ">=", 2)]},
    "not": lambda c: {"not": exposures(c, "==", 0)},
    "deep": lambda c: {"all": [{"any": [{"not": exposures(c, ">=", 3)}]}]},
}


def _answer(api, headers, rule) -> tuple[int, str]:
    got = api.client.post("/v1/segments", json={"name": "probe", "kind": "rule", "rule": rule},
                          headers=headers)
    return got.status_code, got.json().get("error", "")


@pytest.mark.parametrize("shape", sorted(TREES))
def test_rule_keyed_on_a_competitors_campaign_answers_like_an_unknown_id(world, shape):  # noqa: F811
    adv1 = key_for(world, "adv-1")
    tree = TREES[shape]
    foreign, unknown = _answer(world, adv1, tree(FOREIGN)), _answer(world, adv1, tree(UNKNOWN))
    assert foreign == unknown == (404, "not_found")
    # the advertiser's own campaign is fine, in the same place
    assert _answer(world, adv1, tree(OWN))[0] == 201


def test_the_foreign_rule_cannot_be_built_into_the_competitors_reach(world):  # noqa: F811
    """The attack as filed: the rule builds to the competitor's exposed audience."""
    adv1 = key_for(world, "adv-1")
    got = world.client.post("/v1/segments", json={"name": "spy", "kind": "rule",
                                                  "rule": exposures(FOREIGN)}, headers=adv1)
    assert got.status_code == 404, got.text


def test_an_admin_made_segment_for_an_advertiser_is_held_to_its_owners_campaigns(world):  # noqa: F811
    body = {"name": "x", "kind": "rule", "rule": exposures(FOREIGN), "advertiser_id": "adv-1"}
    assert world.client.post("/v1/segments", json=body, headers=world.admin).status_code == 404
    # a platform segment (no owner) may name any campaign: it is the platform's own data
    body.pop("advertiser_id")
    assert world.client.post("/v1/segments", json=body, headers=world.admin).status_code == 201


def test_platform_catalog_keys_stay_open(world):  # noqa: F811
    adv1 = key_for(world, "adv-1")
    for rule in ({"feature": "watched_title", "key": "t-drama", "op": "==", "value": 1},
                 {"feature": "genre_share", "key": "drama", "op": ">", "value": 0},
                 {"feature": "ad_impressions", "key": "IAB8", "op": ">=", "value": 1}):
        assert _answer(world, adv1, rule)[0] == 201, rule


def test_segment_id_inputs_answer_a_competitors_segment_like_an_unknown_one(world):  # noqa: F811
    adv1, adv2 = key_for(world, "adv-1"), key_for(world, "adv-2")
    theirs = create(world, {"name": "theirs", "kind": "rule",
                            "rule": exposures("cmp-food")}, adv2)
    assert build(world, theirs["segment_id"], adv2)["status"] == "ready"
    answers = []
    for probe in (theirs["segment_id"], "seg_0000000000000000"):
        look = world.client.post("/v1/segments", json={
            "name": "lal", "kind": "lookalike", "seed_segment_id": probe, "size_percent": 5},
            headers=adv1)
        over = world.client.get(f"/v1/segments/overlap?ids={probe}", headers=adv1)
        fore = world.client.post("/v1/forecast/reach", json={
            "segment_ids": [probe], "impressions": 1000, "days": 7}, headers=adv1)
        answers.append([(r.status_code, r.json()["error"]) for r in (look, over, fore)])
    # the competitor's segment and a never-existing one: the same answers, word for word
    # (a lookalike's seed is a field of the body: 400 unknown_seed; the others 404)
    assert answers[0] == answers[1] == [(400, "unknown_seed"), (404, "not_found"),
                                        (404, "not_found")]
