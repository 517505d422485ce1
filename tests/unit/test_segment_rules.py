"""The segment rule language: valid trees, canonical form, and errors that name the node."""

from __future__ import annotations

import pytest

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
