"""A batch's state as ClickHouse holds it, for ``GET /v1/ingest/batches/{id}`` once the buffer
has forgotten the batch: its provenance rows (``ingest_batches``) and its stored events."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

# one row per buffer partition the batch was split over (``parts`` of them)
_RECORD_SQL = (
    "SELECT batch_id, any(key_id), any(source), toUnixTimestamp64Milli(min(received_at)), "
    "any(body_sha256), sum(events), sum(accepted), sum(duplicates), sum(rejected), "
    "count() >= max(parts) FROM ingest_batches "
    "WHERE batch_id = {b:String} GROUP BY batch_id")

_STORED_SQL = ("SELECT (SELECT count() FROM ad_events WHERE batch_id = {b:String})"
               " + (SELECT count() FROM content_events WHERE batch_id = {b:String})")


def stored_record(client: Client, batch_id: str) -> tuple | None:
    """(batch_id, key_id, source, received ms, body sha256, events, accepted, duplicates,
    rejected, every part stored) summed over the batch's parts; None for a batch never
    stored."""
    rows = client.query(_RECORD_SQL, parameters={"b": batch_id}).result_rows
    return rows[0] if rows else None


def stored_events(client: Client, batch_id: str) -> int:
    """The batch's events now in the event tables."""
    return int(client.query(_STORED_SQL, parameters={"b": batch_id}).result_rows[0][0])
