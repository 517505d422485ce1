"""The verification feed: one campaign-day of log-level ad events as Parquet, pseudonymised.

``GET /v1/campaigns/{id}/log-level?date=YYYY-MM-DD`` answers every stored ad event of the
campaign whose event time falls on that UTC day (impressions and the VAST events that follow
them), one row per event, for third-party verification (IVT, viewability and delivery
reconciliation on ``ad_serving_id``).

**Why it is allowed although it is per-profile** (docs/privacy.md asks every advertiser-facing row to
cover >= k profiles): a verification vendor needs event-level rows to reconcile delivery, so k
cannot apply row by row here. The feed is restricted instead:

- only verifier keys (role ``verifier``, made by an admin for one advertiser: the
  third-party verification vendor under contract, who can fetch nothing else) for that
  advertiser's campaigns, and admin keys. An advertiser key gets 403 even on its own campaign
  (404 on another's, as every measurement endpoint): ``ad_serving_id`` links each row to the
  advertiser's own ad-server logs, so per-event rows in an advertiser's hands would undo the
  k rule;
- no profile id leaves: ``hashed_profile_id`` is HMAC-SHA256 under a key derived per advertiser
  from a server secret, so rows of one advertiser can be joined with each other (frequency,
  de-duplication) but not with another advertiser's feed, nor with anything we publish
  elsewhere (exports use the plain SHA-256 and the store uses cityHash64 — both computable
  from a known id; the keyed hash is not without the secret);
- no account or session id (direct or linkable identifiers a verifier does not need);
- kids', opted-out and erased profiles are left out entirely;
- every call is audited (key, parameters, row count, SHA-256 of the exact Parquet bytes).

**The secret**: ``ADTIER_LOG_LEVEL_SECRET`` when set (an operator-managed secret, the same on
every node). Otherwise one is generated at first use and kept in Redis/Valkey under
``SECRET_KEY`` (``SET NX``, so concurrent first requests on a fleet agree on one value). Redis
is the store every node of a fleet already shares and it is persistent (AOF), so pseudonyms
stay stable across restarts and across nodes — a file in the data dir would be neither shared
nor present on a stateless API node. Losing it changes every pseudonym from then on (a
rotation), which is safe, never a leak.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from clickhouse_connect.driver.client import Client

from adtier.privacy.exclusions import excluded_profile_hashes_sql
from adtier import audit
from adtier.privacy import release as privacy_release

__all__ = ["SCHEMA", "SECRET_KEY", "FeedFile", "advertiser_key", "load_secret",
           "pseudonymise", "write_feed"]

SECRET_KEY = "adtier:measure:log_level_secret"
# Domain separation: the per-advertiser key is never the raw secret, and a future scheme (v2)
# gets different pseudonyms instead of colliding with these.
_DERIVE_PREFIX = b"adtier/log-level/v1/"
_BATCH_ROWS = 65_536

SCHEMA = pa.schema([
    pa.field("ts", pa.timestamp("ms", tz="UTC"), nullable=False),
    pa.field("event_type", pa.string(), nullable=False),
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("campaign_id", pa.string(), nullable=False),
    pa.field("creative_id", pa.string(), nullable=False),
    pa.field("ad_serving_id", pa.string(), nullable=False),
    pa.field("pod_id", pa.string(), nullable=False),
    pa.field("pod_position", pa.uint8()),
    pa.field("break_position", pa.string()),
    pa.field("ad_duration_ms", pa.uint32()),
    pa.field("ad_playhead_ms", pa.uint32()),
    pa.field("content_id", pa.string(), nullable=False),
    pa.field("error_code", pa.uint16()),
    pa.field("device", pa.string(), nullable=False),
    pa.field("country", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("hashed_profile_id", pa.string(), nullable=False),
])

# Columns by position (no aliases: an alias named like a column would shadow it in WHERE
# and the sort key could not be used). Every column but the last comes straight from
# ClickHouse; profile_id is read only to be replaced by its keyed hash in this process (the
# secret never travels to the database).
_SQL = f"""
SELECT ts, toString(type), toString(event_id), toString(campaign_id), toString(creative_id),
       ad_serving_id, pod_id, pod_position, CAST(break_position AS Nullable(String)),
       ad_duration_ms, ad_playhead_ms, content_id, error_code, toString(device),
       toString(country), toString(source), profile_id
FROM ad_events
WHERE campaign_id = {{campaign_id:String}} AND toDate(ts) = {{day:Date}}
  AND profile_hash NOT IN ({excluded_profile_hashes_sql()})
ORDER BY ts, event_id
"""


def advertiser_key(secret: bytes, advertiser_id: str) -> bytes:
    """The advertiser's own HMAC key: HMAC-SHA256(secret, prefix + advertiser id)."""
    return hmac.new(secret, _DERIVE_PREFIX + advertiser_id.encode(), hashlib.sha256).digest()


def pseudonymise(key: bytes, profile_id: str) -> str:
    """Lower-hex HMAC-SHA256 of the profile id under the advertiser's key."""
    return hmac.new(key, profile_id.encode(), hashlib.sha256).hexdigest()


async def load_secret(configured: str, redis) -> bytes:
    """The configured secret, else the one kept in Redis (created once, ``SET NX``)."""
    return await privacy_release.load_secret(configured, redis, SECRET_KEY)


def _hash_column(profile_ids: pa.Array, key: bytes) -> pa.Array:
    """Hash each distinct id of the batch once (a profile has many events a day)."""
    encoded = pc.dictionary_encode(profile_ids)
    hashed = pa.array([pseudonymise(key, p) for p in encoded.dictionary.to_pylist()],
                      pa.string())
    return pc.take(hashed, encoded.indices)


def _pseudonymised(batch: pa.RecordBatch, key: bytes) -> pa.RecordBatch:
    arrays = [batch.column(i).cast(SCHEMA.field(i).type) for i in range(len(SCHEMA) - 1)]
    arrays.append(_hash_column(batch.column(len(SCHEMA) - 1).cast(pa.string()), key))
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)


class FeedFile:
    """A written feed: where it is, how many rows, and the SHA-256 of its bytes."""

    def __init__(self, path: Path, rows: int, sha256: str):
        self.path, self.rows, self.sha256 = path, rows, sha256


def write_feed(client: Client, campaign_id: str, day: dt.date, key: bytes) -> FeedFile:
    """Write the campaign-day to a temporary Parquet file (zstd), streamed from ClickHouse
    block by block so memory stays bounded; the caller streams it out and removes it."""
    fd, name = tempfile.mkstemp(prefix="adtier-log-level-", suffix=".parquet")
    os.close(fd)
    path = Path(name)
    rows = 0
    try:
        with pq.ParquetWriter(str(path), SCHEMA, compression="zstd") as writer, \
                client.query_arrow_stream(_SQL, parameters={"campaign_id": campaign_id,
                                                            "day": day},
                                          settings={"max_block_size": _BATCH_ROWS}) as stream:
            for batch in stream:
                if batch.num_rows:
                    writer.write_batch(_pseudonymised(batch, key))
                    rows += batch.num_rows
        digest = audit.file_sha256(path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return FeedFile(path, rows, digest)


