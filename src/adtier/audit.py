"""The one audit log (docs/privacy.md): who asked what, when, and what we answered.

Measurement answers, segment builds and privacy-budget spends, feature exports and computes all
write here through ``record``; it lives outside those packages so none of them reaches into
another to audit. Each record keeps the key, the endpoint and its parameters, the status, how many rows were
released and the SHA-256 of the exact response body. ``GET /v1/audit`` (admin) lists them.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

__all__ = ["record", "list_records", "new_audit_id", "sha256_hex", "file_sha256"]

_COLUMNS = ["audit_id", "ts", "key_id", "role", "advertiser_id", "endpoint", "method",
            "parameters", "status", "row_count", "answer_sha256"]


def new_audit_id() -> str:
    return "rep_" + secrets.token_hex(10)


def sha256_hex(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def file_sha256(path: Path, size: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (an answer written to a file before it is sent)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(size):
            digest.update(chunk)
    return digest.hexdigest()


def record(client: Client, *, key_id: str, role: str, advertiser_id: str, endpoint: str,
           method: str, parameters: dict[str, Any], status: int, row_count: int,
           answer_sha256: str, audit_id: str | None = None) -> str:
    """Write one audit row; answers its id (``audit_id`` when the caller named the answer
    before writing it, e.g. a report id sent in the response, else a new one)."""
    audit_id = audit_id or new_audit_id()
    row = [audit_id, datetime.now(timezone.utc), key_id, role, advertiser_id, endpoint, method,
           json.dumps(parameters, sort_keys=True, default=str), status, row_count, answer_sha256]
    client.insert("audit_log", [row], column_names=_COLUMNS)
    return audit_id


def list_records(client: Client, *, limit: int, offset: int, key_id: str | None = None,
                 advertiser_id: str | None = None) -> list[dict[str, Any]]:
    where, params = [], {"limit": limit, "offset": offset}
    if key_id:
        where.append("key_id = {key_id:String}")
        params["key_id"] = key_id
    if advertiser_id:
        where.append("advertiser_id = {advertiser_id:String}")
        params["advertiser_id"] = advertiser_id
    sql = (f"SELECT {', '.join(_COLUMNS)} FROM audit_log "
           f"{'WHERE ' + ' AND '.join(where) if where else ''} "
           "ORDER BY ts DESC, audit_id LIMIT {limit:UInt32} OFFSET {offset:UInt64}")
    out = []
    for row in client.query(sql, parameters=params).named_results():
        row = dict(row)
        row["parameters"] = json.loads(row["parameters"] or "{}")
        ts = row["ts"]
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=timezone.utc)
        row["ts"] = ts.isoformat()
        out.append(row)
    return out
