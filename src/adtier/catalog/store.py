"""SQL of the catalog, profiles and privacy records (sync: call it off the event loop).

Every value reaches ClickHouse as a bound ``{name:Type}`` parameter or through
``client.insert(..., column_names=...)``; table and column names come only from the constants
below. Who is never targeted (kids, opted out, erased) is ``adtier.privacy.exclusions``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import msgspec
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from adtier.catalog.models import (
    Advertiser,
    Campaign,
    Creative,
    PrivacyStatus,
    Profile,
    Title,
)
from adtier.ingest.erased_events import copy_profile_events
from adtier.privacy.exclusions import is_excluded

__all__ = [
    "Kind",
    "CATALOG",
    "PROFILES",
    "upsert",
    "existing_ids",
    "list_rows",
    "get_row",
    "record_optouts",
    "erase_profile",
    "delete_profile_rows",
    "privacy_status",
]

_ID_CHUNK = 1_000  # ids per IN-list look-up: keeps a request's parameters small on a server


@dataclass(frozen=True)
class Kind:
    """One upsertable table: its model, id column and data columns (in model field order)."""

    name: str
    table: str
    id_column: str
    model: type[msgspec.Struct]
    columns: tuple[str, ...]

    def item_id(self, item: msgspec.Struct) -> str:
        return getattr(item, self.id_column)


def _kind(name: str, model: type[msgspec.Struct], id_column: str) -> Kind:
    return Kind(name, name, id_column, model, tuple(model.__struct_fields__))


CATALOG: dict[str, Kind] = {
    k.name: k
    for k in (
        _kind("advertisers", Advertiser, "advertiser_id"),
        _kind("campaigns", Campaign, "campaign_id"),
        _kind("creatives", Creative, "creative_id"),
        _kind("titles", Title, "content_id"),
    )
}
PROFILES = _kind("profiles", Profile, "profile_id")
# Tables an erasure deletes a profile's rows from (the profile_*_daily rollups of
# sql/0009_profile_rollups.sql are the event tables' per-day sums: they go too).
ERASE_TABLES: tuple[str, ...] = ("ad_events", "content_events", "profiles", "profile_ad_daily",
                                 "profile_content_daily", "profile_activity_daily",
                                 "ad_campaign_daily", "ad_breaks_daily", "session_ends_daily")
# Rollups that keep only the profile's hash are matched on it (same cityHash64 as everywhere).
_BY_HASH = "profile_hash = cityHash64({p:String})"
_PROFILE_MATCH = {"ad_campaign_daily": _BY_HASH, "ad_breaks_daily": _BY_HASH,
                  "session_ends_daily": _BY_HASH}


def _utc(value: object) -> object:
    # clickhouse-connect hands DateTime64(3, 'UTC') back as naive UTC datetimes
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def _row(named: dict[str, object]) -> dict[str, object]:
    return {name: _utc(value) for name, value in named.items()}


def upsert(client: Client, kind: Kind, items: Sequence[msgspec.Struct],
           version: int | None = None) -> int:
    """Write a new version of every item (a repeated id: the last item wins); distinct ids.
    ``version``: the rows' version (default: now in ns) — a caller that mirrors the rows
    elsewhere (campaign holdouts) passes it, to order its copies like ClickHouse does."""
    latest = {kind.item_id(item): item for item in items}
    if not latest:
        return 0
    now = datetime.now(timezone.utc)
    version = version or time.time_ns()
    rows = [[getattr(item, c) for c in kind.columns] + [now, version] for item in latest.values()]
    client.insert(kind.table, rows, column_names=[*kind.columns, "updated_at", "version"])
    return len(latest)


def existing_ids(client: Client, table: str, id_column: str, ids: Iterable[str]) -> set[str]:
    """Which of ``ids`` have a row in ``table`` (any version: nothing in the catalog is deleted)."""
    wanted = list(dict.fromkeys(ids))
    found: set[str] = set()
    for start in range(0, len(wanted), _ID_CHUNK):
        chunk = wanted[start:start + _ID_CHUNK]
        rows = client.query(
            f"SELECT DISTINCT {id_column} FROM {table} WHERE {id_column} IN {{ids:Array(String)}}",
            parameters={"ids": chunk},
        ).result_rows
        found.update(row[0] for row in rows)
    return found


def _select(kind: Kind) -> str:
    return f"SELECT {', '.join(kind.columns)}, updated_at FROM {kind.table} FINAL"


def list_rows(client: Client, kind: Kind, limit: int, offset: int) -> tuple[list[dict], int]:
    """Current rows (latest version of each id) in id order, and how many there are."""
    rows = client.query(
        f"{_select(kind)} ORDER BY {kind.id_column} "
        "LIMIT {limit:UInt32} OFFSET {offset:UInt64}",
        parameters={"limit": limit, "offset": offset},
    ).named_results()
    total = client.query(f"SELECT count() FROM {kind.table} FINAL").result_rows[0][0]
    return [_row(r) for r in rows], int(total)


def get_row(client: Client, kind: Kind, item_id: str) -> dict[str, object] | None:
    rows = list(client.query(
        f"{_select(kind)} WHERE {kind.id_column} = {{id:String}}",
        parameters={"id": item_id},
    ).named_results())
    return _row(rows[0]) if rows else None


def record_optouts(client: Client, profile_ids: Iterable[str]) -> tuple[int, int]:
    """Opt profiles out (sticky; the first time is kept). Answers (distinct, already opted out)."""
    wanted = list(dict.fromkeys(profile_ids))
    already = existing_ids(client, "privacy_optouts", "profile_id", wanted)
    new = [p for p in wanted if p not in already]
    if new:
        now = datetime.now(timezone.utc)
        client.insert("privacy_optouts", [[p, now] for p in new],
                      column_names=["profile_id", "opted_out_at"])
    return len(wanted), len(already)


def delete_profile_rows(client: Client, table: str, profile_id: str,
                        lightweight: bool = True,
                        only: list[tuple[uuid.UUID, str]] | None = None) -> str:
    """Delete one profile's rows from ``table`` before returning; answers the method used.
    ``only``: of those, only these (event_id, batch_id) pairs (event tables).

    Lightweight ``DELETE FROM`` (masks rows at once, physically removed by later merges) is
    the normal path, and it works on chdb. A table the server refuses it on (old servers, tables
    with projections) falls back to a synchronous mutation, which rewrites the affected parts.
    """
    parameters: dict[str, object] = {"p": profile_id}
    match = _PROFILE_MATCH.get(table, "profile_id = {p:String}")
    if only is not None:
        match += " AND (event_id, batch_id) IN {only:Array(Tuple(UUID, String))}"
        parameters["only"] = only
    if lightweight:
        try:
            client.command(f"DELETE FROM {table} WHERE {match}",
                           parameters=parameters, settings={"lightweight_deletes_sync": 2})
            return "lightweight"
        except DatabaseError:
            pass
    # mutations_sync = 2 waits for every replica (the same as 1 on a single server or chdb)
    client.command(
        f"ALTER TABLE {table} DELETE WHERE {match} SETTINGS mutations_sync = 2",
        parameters=parameters,
    )
    return "mutation"


def erase_profile(client: Client, profile_id: str) -> dict[str, str]:
    """Record the erasure, then delete the profile's rows; answers {table: method}.

    The record comes first: if a delete fails the caller answers an error and the client
    retries (erasure is idempotent), while the record already keeps the profile out of
    targeting and tells exports to emit its deletion. Opt-outs are kept (sticky suppression).
    """
    client.command(
        "INSERT INTO erasures (profile_hash, profile_sha256, erased_at) "
        "SELECT cityHash64({p:String}), lower(hex(SHA256({p:String}))), now64(3)",
        parameters={"p": profile_id},
    )
    # Campaign report cells keep counters, not profiles: ad events are copied (without the
    # profile) for readers to subtract, and only the copied ones are deleted (erased_events.py).
    copied = copy_profile_events(client, profile_id)
    methods = {"ad_events": _delete_copied(client, profile_id, copied)}
    methods.update((table, delete_profile_rows(client, table, profile_id))
                   for table in ERASE_TABLES if table != "ad_events")
    return methods


def _delete_copied(client: Client, profile_id: str, copied: list[tuple[uuid.UUID, str]]) -> str:
    method = "none"
    for at in range(0, len(copied), _DELETE_CHUNK):
        method = delete_profile_rows(client, "ad_events", profile_id,
                                     only=copied[at:at + _DELETE_CHUNK])
    return method


# pairs per DELETE statement: a profile with many events deletes in several
_DELETE_CHUNK = 5_000


def privacy_status(client: Client, profile_id: str) -> PrivacyStatus:
    parameters = {"p": profile_id}
    kind = client.query("SELECT kind FROM profiles FINAL WHERE profile_id = {p:String}",
                        parameters=parameters).result_rows
    opted = client.query(
        "SELECT minOrNull(opted_out_at) FROM privacy_optouts WHERE profile_id = {p:String}",
        parameters=parameters).result_rows[0][0]
    erased = client.query(
        "SELECT maxOrNull(erased_at) FROM erasures WHERE profile_hash = cityHash64({p:String})",
        parameters=parameters).result_rows[0][0]
    kind_value = kind[0][0] if kind else None
    return PrivacyStatus(
        profile_id=profile_id,
        kind=kind_value,
        opted_out=opted is not None,
        opted_out_at=_utc(opted),
        erased=erased is not None,
        last_erased_at=_utc(erased),
        excluded=is_excluded(kind_value, opted is not None, erased is not None),
    )
