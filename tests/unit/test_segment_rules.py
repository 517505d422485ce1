"""The segment rule language: valid trees, canonical form, and errors that name the node."""

from __future__ import annotations

import numpy as np
import pytest

from adtier.segments import aggregate as F
from adtier.segments import aggregate_arrow as FA
from adtier.segments.rules import (
    DEFAULT_WINDOW_DAYS,
    FEATURES,
    All,
    AnyOf,
    Not,
    Predicate,
    RuleError,
    parse_rule,
    predicates,
    to_json,
)


def p(feature: str = "ad_impressions", op: str = ">", value=1, **kw) -> dict:
    return {"feature": feature, "op": op, "value": value, **kw}


def test_tree_shapes_and_defaults() -> None:
    tree = parse_rule({"all": [p(), {"any": [p("ad_ctr", "<", 0.02, key="IAB2"),
                                             {"not": p("days_since_active", "<=", 7)}]}]})
    assert isinstance(tree, All) and isinstance(tree.children[1], AnyOf)
    assert isinstance(tree.children[1].children[1], Not)
    found = predicates(tree)
    assert [x.feature for x in found] == ["ad_impressions", "ad_ctr", "days_since_active"]
    assert found[0].window_days == DEFAULT_WINDOW_DAYS and found[2].window_days == 0
    assert found[1].path == "rule.all[1].any[0]"
    assert to_json(parse_rule(to_json(tree))) == to_json(tree)


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_every_catalog_feature_parses(feature) -> None:
    spec = FEATURES[feature]
    key = {"daypart": "evening", "device": "tv"}.get(spec.key_kind, "k1")
    raw = p(feature, ">=", 0, **({"key": key} if spec.key == "required" else {}))
    assert isinstance(parse_rule(raw), Predicate)


@pytest.mark.parametrize("op, value, expected", [
    ("between", [1, 2], (1, 2)),
    ("in", [1, 2, 3], (1, 2, 3)),
    ("==", True, (1,)),
    (">=", 0.5, (0.5,)),
])
def test_values(op, value, expected) -> None:
    assert parse_rule(p(op=op, value=value)).value == expected


@pytest.mark.parametrize("raw, path, words", [
    ([], "rule", "expected an object"),
    ({}, "rule", "expected all, any, not"),
    ({"all": []}, "rule.all", "non-empty list"),
    ({"any": {"feature": "x"}}, "rule.any", "non-empty list"),
    ({"all": [p()], "any": [p()]}, "rule", "exactly one field"),
    ({"all": [p(), p(op="~")]}, "rule.all[1].op", "Invalid enum value"),
    ({"all": [p(), {"not": p(value="3")}]}, "rule.all[1].not.value", "Expected"),
    ({"any": [p(feature="nope")]}, "rule.any[0].feature", "unknown feature"),
    ({"not": p(extra=1)}, "rule.not", "unknown field `extra`"),
    (p("watch_minutes", key="x"), "rule.key", "takes no key"),
    (p("genre_share"), "rule.key", "needs a key"),
    (p("daypart_share", key="noon"), "rule.key", "daypart is one of"),
    (p("device_share", key="fridge"), "rule.key", "device is one of"),
    (p("days_since_active", window_days=3), "rule.window_days", "has no window"),
    ({"all": [p(), p("genre_rank", "<=", 2)]}, "rule.all[1].key", "genre_rank needs a key"),
    ({"any": [p("genre_affinity", ">", 0.2)]}, "rule.any[0].key", "needs a key (genre)"),
    ({"not": p("device_rank", key="fridge")}, "rule.not.key", "device is one of"),
    (p("daypart_rank", key="noon"), "rule.key", "daypart is one of"),
    (p("device_affinity", key="TV"), "rule.key", "device is one of"),
    (p("daypart_affinity", key="night"), "rule.key", "daypart is one of"),
    (p("genre_rank", key=""), "rule.key", "length >= 1"),
    (p("genre_rank", key="drama", window_days=400), "rule.window_days", "<= 365"),
    (p(window_days=0), "rule.window_days", ">= 1"),
    (p(window_days=366), "rule.window_days", "<= 365"),
    (p(op="between", value=1), "rule.value", "[low, high]"),
    (p(op="between", value=[3, 1]), "rule.value", "above high"),
    (p(op="in", value=[]), "rule.value", "list of 1 to 1000"),
    (p(op=">", value=[1]), "rule.value", "one number"),
    ({"all": [{"all": [{"all": [p(op="?")]}]}]}, "rule.all[0].all[0].all[0].op", "enum"),
])
def test_errors_name_the_node(raw, path, words) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rule(raw)
    assert caught.value.path == path, str(caught.value)
    assert words in str(caught.value)
    assert str(caught.value).startswith(path + ":")


def test_size_limits() -> None:
    with pytest.raises(RuleError, match="at most 200 nodes"):
        parse_rule({"any": [p()] * 250})
    deep: dict = p()
    for _ in range(20):
        deep = {"not": deep}
    with pytest.raises(RuleError, match="nests at most"):
        parse_rule(deep)


def test_rank_and_affinity_predicates() -> None:
    tree = parse_rule({"all": [
        {"feature": "genre_rank", "key": "drama", "op": "<=", "value": 2},
        {"feature": "genre_affinity", "key": "drama", "window_days": 60, "op": ">=",
         "value": 0.25},
        {"feature": "device_rank", "key": "tv", "window_days": 7, "op": "==", "value": 1},
        {"feature": "daypart_affinity", "key": "late_night", "op": "between",
         "value": [0.1, 0.5]},
    ]})
    found = predicates(tree)
    assert [x.spec for x in found] == [("genre_rank", "drama", DEFAULT_WINDOW_DAYS),
                                       ("genre_affinity", "drama", 60),
                                       ("device_rank", "tv", 7),
                                       ("daypart_affinity", "late_night", DEFAULT_WINDOW_DAYS)]
    assert FEATURES["genre_rank"].all_keys and not FEATURES["genre_rank"].daily
    assert FEATURES["genre_affinity"].daily and not FEATURES["genre_affinity"].all_keys
    assert to_json(parse_rule(to_json(tree))) == to_json(tree)


def _plan(*preds: dict) -> F.Plan:
    return F.plan_for(predicates(parse_rule({"all": list(preds)})))


def test_a_decayed_feature_keeps_days_in_its_own_family_only() -> None:
    """One rule's ``device_affinity`` over a year must not make every family of the shared
    build daily: the ad and content rows keep exactly the buckets a plan with a non-decayed
    activity feature over the same window gives them."""
    others = (p("watch_minutes", window_days=7), p("ad_impressions", window_days=30))
    plan = _plan(p("device_affinity", ">", 0.1, key="mobile", window_days=365), *others)
    same_windows = _plan(p("device_share", ">", 0.1, key="mobile", window_days=365), *others)
    assert plan.daily_days == {"activity": 365} and same_windows.daily_days == {}
    assert plan.bounds == same_windows.bounds == [7, 30, 365]
    before = np.repeat([0, 7, 30], [7, 23, 335])
    for family in ("ad", "content"):
        np.testing.assert_array_equal(FA._bucket_of(plan, family), before)
        np.testing.assert_array_equal(FA._bucket_of(same_windows, family), before)
        assert F._bucket_sql(plan, family) == F._bucket_sql(same_windows, family) \
            == "toInt32(multiIf(d < 7, 0, d < 30, 7, 30))"
    np.testing.assert_array_equal(FA._bucket_of(plan, "activity"), np.arange(365))
    assert F._bucket_sql(plan, "activity") \
        == "toInt32(if(d < 365, d, multiIf(d < 7, 0, d < 30, 7, 30)))"
    # every family's query, not only the bucket expression
    for family, sql in F._SQL.items():
        assert (sql(plan) == sql(same_windows)) == (family != "activity"), family
    with pytest.raises(ValueError, match="family"):
        F._bucket_sql(plan)  # a decayed plan cannot be bucketed without naming the family


def test_decayed_features_of_two_families_keep_their_own_windows() -> None:
    plan = _plan(p("genre_affinity", ">", 0.1, key="drama", window_days=14),
                 p("daypart_affinity", ">", 0.1, key="evening", window_days=60),
                 p("ad_clicks", window_days=90))
    assert plan.daily_days == {"content": 14, "activity": 60}
    assert plan.bounds == [14, 60, 90]
    np.testing.assert_array_equal(FA._bucket_of(plan, "content"),
                                  np.r_[np.arange(14), np.repeat([14, 60], [46, 30])])
    np.testing.assert_array_equal(FA._bucket_of(plan, "activity"),
                                  np.r_[np.arange(60), np.repeat(60, 30)])
    np.testing.assert_array_equal(FA._bucket_of(plan, "ad"), np.repeat([0, 14, 60], [14, 46, 30]))
