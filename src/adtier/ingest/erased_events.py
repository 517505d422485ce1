"""Ad events of erased profiles, kept without the profile, so campaign counters can drop them.

The report cells (sql/0011) count events, and a counter cannot forget one profile, so readers
subtract every counted event of an erased profile that ``ad_erased_events`` holds (keyed by
event and batch: copying twice is harmless). For events the flusher writes, three writers
between them copy every such event before anything deletes it:

- the erasure copies the profile's stored events, then deletes only the (event, batch) pairs
  it copied (an insert committing between its read and its delete keeps its rows for the next
  two writers);
- the view of sql/0011 copies events of profiles whose erasure was already recorded when their
  insert ran;
- the flusher, after each insert, copies its events of profiles erased since the block was
  received (``copy_flushed``): an insert whose view ran before an erasure was recorded and that
  committed after the erasure read the table is caught here, and only here.

Such rows stay in ``ad_events`` with their profile id, as any event arriving after an erasure
does (readers leave erased profiles out by hash).
"""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec
from clickhouse_connect.driver.client import Client

from adtier.privacy.exclusions import ERASED_SINCE_SQL, profile_sha256

__all__ = ["copy_profile_events", "copy_flushed"]

_COLUMNS = ["campaign_id", "day", "event_id", "type", "device", "country", "creative_id",
            "break_position", "batch_id"]
_SELECT = """SELECT campaign_id, toDate(ts), event_id, type, device, country, creative_id,
       ifNull(toString(break_position), 'unknown'), batch_id
FROM ad_events"""

# received_at comes from the ingest host's clock, erased_at from ClickHouse's.
CLOCK_MARGIN_MS = 300_000


class _Profile(msgspec.Struct):
    profile_id: str


_profile_lines = msgspec.json.Decoder(_Profile)


def copy_profile_events(client: Client, profile_id: str) -> list[tuple[uuid.UUID, str]]:
    """Copy one profile's stored ad events; answers the (event_id, batch_id) pairs copied."""
    rows = client.query(f"{_SELECT} WHERE profile_id = {{p:String}}",
                        parameters={"p": profile_id}).result_rows
    if rows:
        client.insert("ad_erased_events", rows, column_names=_COLUMNS)
    return [(row[2], row[8]) for row in rows]


def copy_flushed(client: Client, rows: bytes, batch_ids: list[str],
                 received_from_ms: int) -> list[str]:
    """After a flush stored ``rows`` (its JSONEachRow ad block) of ``batch_ids``, copy the
    events of its profiles erased since the earliest receipt (less the clock margin); answers
    the profiles copied.

    An event's view runs after its receipt, so an erasure recorded before then missed nothing.
    The usual cost is one range read of the small erasures table; the block is decoded only if
    some erasure is that recent, and ad_events is read (by profile and batch, both
    bloom-indexed) only if one of the block's own profiles was erased."""
    since = dt.datetime.fromtimestamp((received_from_ms - CLOCK_MARGIN_MS) / 1000,
                                      dt.timezone.utc)
    recent = {r[0] for r in client.query(ERASED_SINCE_SQL, parameters={"t": since}).result_rows}
    if not recent or not rows:
        return []
    ids = {p.profile_id for p in _profile_lines.decode_lines(rows)}
    erased = sorted(p for p in ids if profile_sha256(p) in recent)
    if erased:
        client.command(
            f"INSERT INTO ad_erased_events ({', '.join(_COLUMNS)}) {_SELECT} "
            "WHERE profile_id IN {p:Array(String)} AND batch_id IN {b:Array(String)}",
            parameters={"p": erased, "b": batch_ids})
    return erased
