"""Rule keys against a vocabulary: close matches for typos, the list when nothing is close."""

from __future__ import annotations

import pytest

from adtier.segments.rules import RuleError, parse_rule
from adtier.segments.vocabulary import Vocabulary, check_keys, unknown_key

WORDS = Vocabulary(genres=("comedy", "drama", "sci_fi"), categories=("IAB1", "IAB2-3"))


def _rule(feature: str, key: str) -> dict:
    return {"any": [{"feature": "sessions", "op": ">", "value": 1},
                    {"feature": feature, "key": key, "op": ">=", "value": 0.1}]}


@pytest.mark.parametrize(("feature", "key", "expected"), [
    ("genre_share", "scifi", "rule.any[1].key: unknown genre 'scifi' (did you mean 'sci_fi'?)"),
    ("genre_affinity", "Drama", "(did you mean 'drama'?)"),
    ("ad_clicks", "IAB2", "(did you mean 'IAB2-3'"),
    ("genre_rank", "western",
     "unknown genre 'western'; the catalog's genres: comedy, drama, sci_fi"),
])
def test_unknown_keys_name_the_node_and_the_close_matches(feature, key, expected):
    with pytest.raises(RuleError) as err:
        check_keys(parse_rule(_rule(feature, key)), WORDS)
    assert expected in str(err.value)


def test_known_keys_and_keyless_features_pass():
    for feature, key in (("genre_share", "sci_fi"), ("ad_skips", "IAB1"),
                         ("device_rank", "tv"), ("daypart_share", "evening")):
        check_keys(parse_rule(_rule(feature, key)), WORDS)
    check_keys(parse_rule({"feature": "ad_impressions", "op": ">", "value": 0}), WORDS)


def test_fixed_lists_suggest_too():
    expected = r"unknown device 'TV' \(did you mean 'tv'\?\); device is one of"
    with pytest.raises(RuleError, match=expected):
        parse_rule(_rule("device_share", "TV"))
    assert "did you mean 'late_night'" in unknown_key("daypart", "latenight",
                                                       ("morning", "late_night"))
