"""Ad events of erased profiles, kept without the profile, so campaign counters can drop them.

The report cells (sql/0011) count events, and a counter cannot forget one profile, so readers
subtract every counted event of an erased profile that ``ad_erased_events`` holds (keyed by
event and batch: copying twice is harmless). Three writers fill it, and between them every
such event is copied before anything deletes it:

- the erasure copies the profile's stored events, then deletes only the events it copied (an
  insert committing between its read and its delete keeps its rows for the next two writers);
- the view of sql/0011 copies events of profiles whose erasure was already recorded when their
  insert ran;
- the flusher copies, after each insert, its events of profiles erased since the block was
  received (``copy_flushed``): an insert whose view ran before an erasure was recorded and that
  committed after the erasure read the table is caught here, and only here.
"""

from __future__ import annotations

import datetime as dt
import uuid

from clickhouse_connect.driver.client import Client

__all__ = ["CLOCK_MARGIN_MS", "copy_profile_events", "copy_flushed"]

_COLUMNS = ["campaign_id", "day", "event_id", "type", "device", "country", "creative_id",
            "break_position", "batch_id"]
_SELECT = """SELECT campaign_id, toDate(ts), event_id, type, device, country, creative_id,
       ifNull(toString(break_position), 'unknown'), batch_id
FROM ad_events"""

# received_at comes from the ingest host's clock, erased_at from ClickHouse's.
CLOCK_MARGIN_MS = 300_000


def copy_profile_events(client: Client, profile_id: str) -> list[tuple[uuid.UUID, str]]:
    """Copy one profile's stored ad events; answers the (event_id, batch_id) pairs copied."""
    rows = client.query(f"{_SELECT} WHERE profile_id = {{p:String}}",
                        parameters={"p": profile_id}).result_rows
    if rows:
        client.insert("ad_erased_events", rows, column_names=_COLUMNS)
    return [(row[2], row[8]) for row in rows]


def copy_flushed(client: Client, batch_ids: list[str], received_from_ms: int) -> bool:
    """After a flush stored ``batch_ids``, copy their events of profiles erased since the
    earliest of them was received (less the clock margin); answers whether it had to.

    An event's view runs after its receipt, so an erasure recorded before that missed nothing;
    the check is one read of the small erasures table, and erasures are rare."""
    since = dt.datetime.fromtimestamp((received_from_ms - CLOCK_MARGIN_MS) / 1000, dt.timezone.utc)
    recent = client.query("SELECT count() FROM erasures WHERE erased_at >= {t:DateTime64(3)}",
                          parameters={"t": since}).result_rows[0][0]
    if not recent or not batch_ids:
        return False
    client.command(
        f"INSERT INTO ad_erased_events ({', '.join(_COLUMNS)}) {_SELECT} "
        "WHERE batch_id IN {b:Array(String)} AND profile_hash IN "
        "(SELECT profile_hash FROM erasures WHERE erased_at >= {t:DateTime64(3)})",
        parameters={"b": batch_ids, "t": since})
    return True
