"""The segment rule language (docs/segments.md): JSON trees validated into typed nodes.

A tree is ``{"all": [node, ...]}``, ``{"any": [node, ...]}``, ``{"not": node}`` or a predicate
``{"feature", "key"?, "window_days"?, "op", "value"}``. Each predicate is decoded by msgspec
(strict types, unknown fields refused); the walk around it builds the node path, so every error
names the node it is about: ``rule.all[1].any[0].op: ...``.

Feature catalog (all per profile; "in the window" = the last ``window_days`` UTC days up to and
including the build's as-of day, which is the day of the latest stored event; default 30,
at most 365):

======================  =====================  ==================================================
feature                 key                    definition
======================  =====================  ==================================================
ad_impressions          ad category, optional  impression events in the window
ad_completes            ad category, optional  complete events in the window
ad_skips                ad category, optional  skip events in the window
ad_clicks               ad category, optional  click events in the window
ad_completion_rate      ad category, optional  (completes + 1) / (impressions + 2): Beta(1, 1)
ad_skip_rate            ad category, optional  (skips + 1) / (impressions + 2): Beta(1, 1)
ad_ctr                  ad category, optional  (clicks + 0.5) / (impressions + 50): Beta(0.5,
                                               49.5), prior mean 1 % (CTR is rare; a flat prior
                                               would put a profile with no clicks at 50 %)
watch_minutes           -                      minutes watched in the window: per play (session
                                               x title x day) the largest ``watched_ms``, summed
sessions                -                      distinct session ids per day, summed over the
                                               window (ad and viewing events)
active_days             -                      days in the window with any event
days_since_active       - (no window)          days from the last active day to the as-of day
genre_share             genre, required        share of the window's watch minutes on titles of
                                               that genre (a title counts for each of its genres)
device_share            device, required       share of the window's events on that device
daypart_share           morning|afternoon|     share of the window's events in that part of the
                        evening|late_night     UTC day: 06-12, 12-18, 18-24, 00-06
campaign_exposures      campaign id, required  impressions of that campaign in the window
watched_title           content id, required   1 if any viewing event of the title in the window,
                                               else 0 (``true``/``false`` accepted as values)
genre_rank              genre, required        rank of that genre among all the catalog's genres
                                               by the profile's watch minutes in the window
                                               (the ``genre_share`` order): 1 = their top genre
device_rank             device, required       rank of that device among the six devices by the
                                               window's events (the ``device_share`` order)
daypart_rank            morning|afternoon|     rank of that daypart among the four by the
                        evening|late_night     window's events (the ``daypart_share`` order)
genre_affinity          genre, required        ``genre_share`` with time decay: each day's watch
                                               minutes weigh 0.5 ** (days before the as-of day
                                               / 14), over the window; sum of the genre's
                                               weighted minutes / all weighted minutes, in [0, 1]
device_affinity         device, required       ``device_share`` with the same decay (events)
daypart_affinity        daypart (as above)     ``daypart_share`` with the same decay (events)
======================  =====================  ==================================================

Ranks are competition ranks: 1 + the number of keys of that kind with a strictly larger share
(shares within a relative 1e-12 tie), so keys with equal shares share the better rank ("1, 2,
2, 4") and the result never depends on key names or order. A profile with no share of the key
in the window (it never watched the genre, never used the device, or was not active at all) has
no rank: the value is ``NO_RANK`` = 1000000, so ``{"feature": "genre_rank", "key": "drama",
"op": "<=", "value": 2}`` means "drama is among their top 2 genres" and never holds for a
profile without drama minutes, while ``> 2`` ("not in their top 2") does. Genres are those of
the titles in the catalog (a genre on no title has no minutes, so never a rank).
Affinities use a fixed half-life of ``AFFINITY_HALF_LIFE_DAYS`` = 14 days and the window as
the look-back (default 30 days): yesterday's minutes weigh 0.95, those of two weeks ago 0.5.

Smoothed rates are never NaN: with no impressions a rate is its prior mean.
Ops: ``> >= < <= == !=`` take a number, ``between`` ``[lo, hi]`` (inclusive), ``in`` a
non-empty list of numbers. Profiles without any event for a feature have the feature's zero
(counts 0, shares and affinities 0, rates the prior mean, ranks ``NO_RANK``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

import msgspec
from msgspec import Meta

__all__ = [
    "FEATURES",
    "Feature",
    "Predicate",
    "All",
    "AnyOf",
    "Not",
    "Node",
    "RuleError",
    "parse_rule",
    "predicates",
    "catalog_keys",
    "to_json",
    "DEFAULT_WINDOW_DAYS",
    "MAX_WINDOW_DAYS",
    "DAYPARTS",
    "DEVICES",
    "NO_RANK",
    "AFFINITY_HALF_LIFE_DAYS",
]

DEFAULT_WINDOW_DAYS = 30
MAX_WINDOW_DAYS = 365
MAX_NODES = 200
MAX_DEPTH = 12
DAYPARTS = ("morning", "afternoon", "evening", "late_night")
DEVICES = ("tv", "mobile", "tablet", "web", "console", "other")
NO_RANK = 1_000_000  # the rank of a key the profile has no share of: never "<= n"
AFFINITY_HALF_LIFE_DAYS = 14.0  # affinities: a day's activity weighs half as much 14 days on


@dataclass(frozen=True)
class Feature:
    name: str
    source: str  # ad | content | activity
    key: str  # "none" | "optional" | "required"
    key_kind: str  # what the key names: category, genre, device, daypart, campaign, title
    windowed: bool = True
    # ranks compare the key with every key of its kind: the plan fetches all of them
    all_keys: bool = False
    # time decay weighs each day: the plan keeps one row per day over the window
    daily: bool = False


FEATURES: dict[str, Feature] = {f.name: f for f in (
    Feature("ad_impressions", "ad", "optional", "category"),
    Feature("ad_completes", "ad", "optional", "category"),
    Feature("ad_skips", "ad", "optional", "category"),
    Feature("ad_clicks", "ad", "optional", "category"),
    Feature("ad_completion_rate", "ad", "optional", "category"),
    Feature("ad_skip_rate", "ad", "optional", "category"),
    Feature("ad_ctr", "ad", "optional", "category"),
    Feature("campaign_exposures", "ad", "required", "campaign"),
    Feature("watch_minutes", "content", "none", ""),
    Feature("genre_share", "content", "required", "genre"),
    Feature("watched_title", "content", "required", "title"),
    Feature("sessions", "activity", "none", ""),
    Feature("active_days", "activity", "none", ""),
    Feature("days_since_active", "activity", "none", "", windowed=False),
    Feature("device_share", "activity", "required", "device"),
    Feature("daypart_share", "activity", "required", "daypart"),
    Feature("genre_rank", "content", "required", "genre", all_keys=True),
    Feature("device_rank", "activity", "required", "device", all_keys=True),
    Feature("daypart_rank", "activity", "required", "daypart", all_keys=True),
    Feature("genre_affinity", "content", "required", "genre", daily=True),
    Feature("device_affinity", "activity", "required", "device", daily=True),
    Feature("daypart_affinity", "activity", "required", "daypart", daily=True),
)}

Op = Literal[">", ">=", "<", "<=", "==", "!=", "between", "in"]
Number = Union[int, float, bool]


class RuleError(ValueError):
    """A rule that cannot be used; ``path`` names the node (``rule.all[2].op``)."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class _PredicateIn(msgspec.Struct, forbid_unknown_fields=True):
    feature: str
    op: Op
    value: Union[Number, list[Number]]
    key: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    window_days: Annotated[int, Meta(ge=1, le=MAX_WINDOW_DAYS)] | None = None


@dataclass(frozen=True)
class Predicate:
    feature: str
    op: str
    value: tuple[float, ...]  # one number, two for between, one or more for in
    key: str | None
    window_days: int  # 0 when the feature has no window
    path: str

    @property
    def spec(self) -> tuple[str, str | None, int]:
        """What has to be computed for this predicate: (feature, key, window)."""
        return (self.feature, self.key, self.window_days)


@dataclass(frozen=True)
class All:
    children: tuple["Node", ...]


@dataclass(frozen=True)
class AnyOf:
    children: tuple["Node", ...]


@dataclass(frozen=True)
class Not:
    child: "Node"


Node = Union[Predicate, All, AnyOf, Not]


def _num(value: Any) -> float:
    return int(value) if isinstance(value, (bool, int)) else float(value)


def _predicate(raw: dict, path: str) -> Predicate:
    try:
        p = msgspec.convert(raw, _PredicateIn, strict=True)
    except msgspec.ValidationError as err:
        # msgspec says "... - at `$.op`": re-anchor its location on the node's path
        text = str(err)
        where = ""
        if " - at `$" in text:
            text, _, loc = text.partition(" - at `$")
            where = loc.rstrip("`")
        raise RuleError(path + where, text) from None
    feature = FEATURES.get(p.feature)
    if feature is None:
        raise RuleError(f"{path}.feature", f"unknown feature {p.feature!r}; one of "
                        + ", ".join(sorted(FEATURES)))
    if feature.key == "none" and p.key is not None:
        raise RuleError(f"{path}.key", f"{p.feature} takes no key")
    if feature.key == "required" and p.key is None:
        raise RuleError(f"{path}.key", f"{p.feature} needs a key ({feature.key_kind})")
    if feature.key_kind in ("daypart", "device"):
        words = DAYPARTS if feature.key_kind == "daypart" else DEVICES
        if p.key not in words:
            from adtier.segments.vocabulary import unknown_key  # it imports this module

            raise RuleError(f"{path}.key", unknown_key(feature.key_kind, p.key or "", words))
    if not feature.windowed and p.window_days is not None:
        raise RuleError(f"{path}.window_days", f"{p.feature} has no window")
    window = (p.window_days or DEFAULT_WINDOW_DAYS) if feature.windowed else 0
    if p.op == "between":
        if not (isinstance(p.value, list) and len(p.value) == 2):
            raise RuleError(f"{path}.value", "between takes [low, high]")
        lo, hi = (_num(v) for v in p.value)
        if lo > hi:
            raise RuleError(f"{path}.value", f"between: low {lo} is above high {hi}")
        values: tuple[float, ...] = (lo, hi)
    elif p.op == "in":
        if not (isinstance(p.value, list) and 1 <= len(p.value) <= 1000):
            raise RuleError(f"{path}.value", "in takes a list of 1 to 1000 numbers")
        values = tuple(_num(v) for v in p.value)
    else:
        if isinstance(p.value, list):
            raise RuleError(f"{path}.value", f"{p.op} takes one number, not a list")
        values = (_num(p.value),)
    return Predicate(p.feature, p.op, values, p.key, window, path)


def parse_rule(raw: Any, path: str = "rule") -> Node:
    """Validate a decoded JSON tree; raises ``RuleError`` naming the first bad node."""
    count = [0]

    def walk(node: Any, where: str, depth: int) -> Node:
        count[0] += 1
        if count[0] > MAX_NODES:
            raise RuleError(where, f"a rule has at most {MAX_NODES} nodes")
        if depth > MAX_DEPTH:
            raise RuleError(where, f"a rule nests at most {MAX_DEPTH} levels")
        if not isinstance(node, dict):
            raise RuleError(where, f"expected an object, got {type(node).__name__}")
        combinators = [k for k in ("all", "any", "not") if k in node]
        if combinators:
            if len(node) != 1:
                raise RuleError(where, "a combinator node has exactly one field "
                                f"(all, any or not), got {', '.join(sorted(node))}")
            op = combinators[0]
            inner = node[op]
            if op == "not":
                return Not(walk(inner, f"{where}.not", depth + 1))
            if not isinstance(inner, list) or not inner:
                raise RuleError(f"{where}.{op}", "expected a non-empty list of nodes")
            children = tuple(walk(c, f"{where}.{op}[{i}]", depth + 1)
                             for i, c in enumerate(inner))
            return All(children) if op == "all" else AnyOf(children)
        if "feature" not in node:
            raise RuleError(where, "expected all, any, not or a predicate with a feature")
        return _predicate(node, where)

    return walk(raw, path, 0)


def predicates(node: Node) -> list[Predicate]:
    """Every predicate of a tree, in document order."""
    if isinstance(node, Predicate):
        return [node]
    if isinstance(node, Not):
        return predicates(node.child)
    return [p for c in node.children for p in predicates(c)]


def catalog_keys(node: Node) -> list[tuple[str, str | None]]:
    """``(key_kind, key)`` of every keyed predicate: what tenancy checks (``adtier.privacy``)."""
    return [(FEATURES[p.feature].key_kind, p.key) for p in predicates(node) if p.key is not None]


def to_json(node: Node) -> Any:
    """The canonical JSON form of a validated tree (defaults filled in)."""
    if isinstance(node, Predicate):
        out: dict[str, Any] = {"feature": node.feature, "op": node.op}
        if node.key is not None:
            out["key"] = node.key
        if node.window_days:
            out["window_days"] = node.window_days
        out["value"] = list(node.value) if node.op in ("between", "in") else node.value[0]
        return out
    if isinstance(node, Not):
        return {"not": to_json(node.child)}
    return {"all" if isinstance(node, All) else "any": [to_json(c) for c in node.children]}
