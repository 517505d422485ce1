"""Rule keys checked against what they can match: a typo answers 400, not an empty segment.

Devices and dayparts are fixed lists; genres and ad categories are whatever the catalog holds
(a title's genres, a campaign's ``ad_category``), so a key the catalog has never heard of is
refused when the segment is created, with the closest known keys (``difflib``) as the hint.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from adtier.segments.rules import DAYPARTS, DEVICES, FEATURES, Node, RuleError, predicates

__all__ = ["Vocabulary", "load_vocabulary", "check_keys", "unknown_key"]

_CATALOG_KINDS = {"genre": ("genres", "PUT /v1/catalog/titles"),
                  "category": ("ad categories", "PUT /v1/catalog/campaigns")}
_SHOWN = 20  # known keys listed when none is close


@dataclass(frozen=True)
class Vocabulary:
    genres: tuple[str, ...]
    categories: tuple[str, ...]

    def words(self, kind: str) -> Sequence[str] | None:
        """The keys a feature of this kind can match; None: not checked here."""
        return {"genre": self.genres, "category": self.categories,
                "device": DEVICES, "daypart": DAYPARTS}.get(kind)


def load_vocabulary(client: Client) -> Vocabulary:
    """The catalog's genres and ad categories (sync: call it off the event loop)."""
    genres = client.query("SELECT DISTINCT arrayJoin(genres) AS g FROM titles FINAL "
                          "ORDER BY g").result_rows
    categories = client.query("SELECT DISTINCT ad_category AS c FROM campaigns FINAL "
                              "ORDER BY c").result_rows
    return Vocabulary(tuple(r[0] for r in genres), tuple(r[0] for r in categories))


def unknown_key(kind: str, key: str, words: Sequence[str]) -> str:
    """'unknown genre 'scifi' (did you mean 'sci_fi'?); ...' for a RuleError."""
    close = difflib.get_close_matches(key, list(words), n=3, cutoff=0.6)
    if not close:  # case slips ('TV') are not close by ratio alone
        close = [w for w in words if w.lower() == key.lower()]
    text = f"unknown {kind} {key!r}"
    if close:
        text += " (did you mean " + " or ".join(repr(w) for w in close) + "?)"
    if kind in _CATALOG_KINDS:
        plural, where = _CATALOG_KINDS[kind]
        if not words:
            return f"{text}; the catalog has no {plural} yet ({where} first)"
        shown = ", ".join(words[:_SHOWN]) + (", ..." if len(words) > _SHOWN else "")
        return f"{text}; the catalog's {plural}: {shown}"
    return f"{text}; {kind} is one of {', '.join(words)}"


def check_keys(rule: Node, vocabulary: Vocabulary) -> None:
    """Raise ``RuleError`` at the first predicate whose key nothing could match."""
    for p in predicates(rule):
        words = vocabulary.words(FEATURES[p.feature].key_kind)
        if p.key is not None and words is not None and p.key not in words:
            raise RuleError(f"{p.path}.key", unknown_key(FEATURES[p.feature].key_kind, p.key,
                                                         words))
