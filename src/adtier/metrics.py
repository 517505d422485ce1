"""Prometheus metrics (names are a contract: docs/operations.md)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "EVENTS_ACCEPTED",
    "EVENTS_REJECTED",
    "EVENTS_DUPLICATE",
    "BUFFER_LAG",
    "BUFFER_LAG_SECONDS",
    "FLUSH_SECONDS",
    "FLUSH_ROWS",
    "FLUSH_FAILURES",
    "PIXELS",
    "QUARANTINED",
    "FLUSHER_LAST_SUCCESS",
    "FLUSHER_FAILURES",
    "LIVE_COUNTERS_DROPPED",
    "LIVE_COUNTERS_RESTARTS",
    "LIVE_COUNTERS_STARTS",
]

EVENTS_ACCEPTED = Counter(
    "adtier_events_accepted", "Events acknowledged as new (durable in the buffer)", ["type"]
)
EVENTS_REJECTED = Counter("adtier_events_rejected", "Events rejected, by reason", ["reason"])
EVENTS_DUPLICATE = Counter("adtier_events_duplicate", "Events dropped as duplicates of an event_id")
BUFFER_LAG = Gauge("adtier_buffer_lag_events", "Events buffered in Redis, not yet in ClickHouse")
BUFFER_LAG_SECONDS = Gauge("adtier_buffer_lag_seconds", "Age of the oldest buffered entry")
FLUSH_SECONDS = Histogram(
    "adtier_flush_seconds",
    "Time to insert one flush into ClickHouse",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
FLUSH_ROWS = Counter("adtier_flush_rows", "Rows inserted by flushers", ["table"])
FLUSH_FAILURES = Counter("adtier_flush_failures", "Flush attempts that failed and will be retried")
PIXELS = Counter("adtier_pixels", "Tracking pixel requests, by outcome", ["outcome"])
QUARANTINED = Counter(
    "adtier_events_quarantined",
    "Rows ClickHouse refused, kept in rejected_events as store_refused, by table",
    ["table"],
)
FLUSHER_LAST_SUCCESS = Gauge(
    "adtier_flusher_last_success_timestamp_seconds",
    "When each flusher last completed a round: its flush stored, or nothing to store",
    ["flusher"],
)
FLUSHER_FAILURES = Gauge(
    "adtier_flusher_consecutive_failures", "Failed attempts of each flusher's current plan",
    ["flusher"],
)
LIVE_COUNTERS_DROPPED = Counter(
    "adtier_live_counters_dropped_rows",
    "Stored rows whose live counters were dropped (queue to the counting child full, or the "
    "child down), by reason",
    ["reason"],
)
LIVE_COUNTERS_RESTARTS = Counter(
    "adtier_live_counters_child_restarts", "Restarts of the live counters' child process"
)
LIVE_COUNTERS_STARTS = Counter(
    "adtier_live_counters_child_starts",
    "Starts of the live counters' child process, by outcome (started: ready; failed)",
    ["outcome"],
)
