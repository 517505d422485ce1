"""A segment's members: the rule evaluated over chunks of profiles (``aggregate`` +
``kernels``), a lookalike's scored universe, or a static segment's uploaded list; kids',
opted-out and erased profiles are left out in every case (``privacy.exclusions``). The
members carry their ``profile_hash`` so a build can drop exclusions recorded while it ran
(``excluded_since``). ``build`` turns them into a served version."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from clickhouse_connect.driver.client import Client

from adtier.privacy import tenancy
from adtier.privacy.exclusions import EXCLUDED_SINCE_SQL, excluded_profile_hashes_sql
from adtier.segments import aggregate as A
from adtier.segments import aggregate_arrow as AA
from adtier.segments import kernels as K
from adtier.segments import store
from adtier.segments.lookalike import lookalike_members_hashed
from adtier.segments.rules import (All, AnyOf, Node, Not, Predicate, catalog_keys, parse_rule,
                                   predicates)

__all__ = ["Members", "Progress", "evaluate", "shared_rule_members", "static_members",
           "excluded_since", "members_of", "rule_members_hashed", "distinct", "check_tenancy"]

Progress = Callable[[int, int], None]


@dataclass
class Members:
    """A build's members: ids (Arrow strings) and their ``profile_hash`` (cityHash64, uint64,
    aligned). The hashes let a build drop exclusions recorded while it ran: an erasure keeps
    only the hash."""

    ids: pa.Array
    hashes: np.ndarray

    def keep(self, mask: np.ndarray) -> Members:
        return Members(self.ids.filter(pa.array(mask)), self.hashes[mask])

    @staticmethod
    def empty() -> Members:
        return Members(pa.array([], pa.string()), np.zeros(0, np.uint64))


Precomputed = tuple[Members, dt.date, Any]  # (members, as-of day, data through)


class BuildFailed(RuntimeError):
    pass


def evaluate(node: Node, chunk: AA.Chunk) -> np.ndarray:
    """The rule over one chunk: a bool per profile."""
    if isinstance(node, Predicate):
        values = AA.feature_values(chunk, node.feature, node.key, node.window_days)
        return K.compare(values, K.OPS[node.op], np.asarray(node.value, np.float64))
    if isinstance(node, Not):
        return ~evaluate(node.child, chunk)
    parts = [evaluate(c, chunk) for c in node.children]
    if isinstance(node, All):
        return np.logical_and.reduce(parts) if parts else np.ones(chunk.size, bool)
    assert isinstance(node, AnyOf)
    return np.logical_or.reduce(parts) if parts else np.zeros(chunk.size, bool)


def rule_members(client: Client, rule: Node, day: dt.date, chunk_profiles: int = 200_000,
                 progress: Progress | None = None, source: str = "rollup") -> pa.Array:
    return rule_members_hashed(client, {"": rule}, day, chunk_profiles, progress, source)[""].ids


def static_members(client: Client, segment_id: str) -> Members:
    """The uploaded list (version 0) minus excluded profiles."""
    rows = client.query_arrow(
        "SELECT profile_id, any(profile_hash) AS h FROM segment_members "
        "WHERE segment_id = {id:String} AND version = 0 "
        f"AND profile_hash NOT IN ({excluded_profile_hashes_sql()}) GROUP BY profile_id",
        parameters={"id": segment_id})
    return Members(store.as_arrow_ids(rows.column("profile_id")),
                   rows.column("h").to_numpy().astype(np.uint64))


def check_tenancy(client: Client, owner: str, tree: Node) -> None:
    """Checked again at build: a campaign may have changed hands since the rule was made."""
    foreign = tenancy.foreign_campaigns(client, owner,
                                        tenancy.campaign_keys(catalog_keys(tree)))
    if foreign:
        raise BuildFailed(f"no campaign {foreign[0]!r}")


def members_of(client: Client, row: store.SegmentRow, day: dt.date, chunk_profiles: int,
             progress: Progress | None, source: str = "rollup") -> Members:
    definition = row.definition_json()
    if row.kind == "rule":
        tree = parse_rule(definition["rule"])
        check_tenancy(client, row.owner, tree)
        return rule_members_hashed(client, {"": tree}, day, chunk_profiles, progress, source)[""]
    if row.kind == "static":
        return static_members(client, row.segment_id)
    if row.kind == "lookalike":
        seed = store.get_segment(client, definition["seed_segment_id"])
        if seed is None or seed.version == 0:
            raise BuildFailed(f"the seed segment {definition['seed_segment_id']} has no built "
                              "version yet; build it first")
        ids, hashes = lookalike_members_hashed(
            client, seed.segment_id, seed.version, float(definition["size_percent"]), day,
            chunk_profiles, progress, source)
        return Members(store.as_arrow_ids(ids), hashes)
    raise BuildFailed(f"unknown segment kind {row.kind!r}")


def shared_rule_members(client: Client, rules: dict[str, Node], day: dt.date,
                        chunk_profiles: int = 200_000, progress: Progress | None = None,
                        source: str = "rollup") -> dict[str, pa.Array]:
    """Members (Arrow strings) of several rule segments from one pass over the data: the union
    of their features is pre-aggregated once per chunk, and every rule is evaluated on it.

    ``source``: "rollup" (profile-first daily tables) or "events" (raw event tables, the
    reference the rollup path is checked against)."""
    shared = rule_members_hashed(client, rules, day, chunk_profiles, progress, source)
    return {sid: members.ids for sid, members in shared.items()}


def rule_members_hashed(client: Client, rules: dict[str, Node], day: dt.date,
                  chunk_profiles: int = 200_000, progress: Progress | None = None,
                  source: str = "rollup",
                  sink: Callable[[str, pa.Array], Any] | None = None) -> dict[str, Members]:
    """``shared_rule_members`` with each member's profile_hash (members come in hash order).
    ``sink(segment_id, ids)`` is handed each chunk's members of each rule as they are found."""
    plan = A.plan_for((p for rule in rules.values() for p in predicates(rule)), source)
    found: dict[str, list[Members]] = {sid: [] for sid in rules}
    for i, n, chunk in AA.iter_chunks(client, plan, day, chunk_profiles):
        if chunk.size:
            whole = Members(chunk.ids, chunk.hashes)
            for sid, rule in rules.items():
                # filtered in Arrow: the members go to ClickHouse and Valkey as Arrow anyway
                found[sid].append(whole.keep(evaluate(rule, chunk)))
                if sink is not None:
                    sink(sid, found[sid][-1].ids)
        if progress:
            progress(i + 1, n)
    return {sid: Members(pa.concat_arrays([m.ids for m in parts]),
                         np.concatenate([m.hashes for m in parts]))
            if parts else Members.empty() for sid, parts in found.items()}


def distinct(members: Members) -> Members:
    """Each id once (a static list may repeat one)."""
    if not len(members.ids):
        return members
    table = pa.table({"id": members.ids, "h": members.hashes}).group_by(["id", "h"]).aggregate([])
    return Members(table.column("id").combine_chunks(), table.column("h").to_numpy())


def excluded_since(client: Client, since: dt.datetime) -> np.ndarray:
    """profile_hash (uint64) of every profile excluded since ``since``."""
    got = client.query_arrow(EXCLUDED_SINCE_SQL, parameters={"since": since})
    return got.column("h").to_numpy().astype(np.uint64)
