"""Audit records of the feature feed (docs/privacy.md): every export (HTTP and CLI) and every batch
computation, through ``adtier.audit.record`` (the one audit log, ``GET /v1/audit``).

Who: the API key (``key_id``, ``role``), or ``cli:<user>`` / ``scheduler`` for runs without
one. What: ``endpoint`` (``features_export``, ``features_export_cli``, ``features_compute``)
and its parameters (``since``, ``watermark``, ``format``, ``columns``; for a compute its
counts). Row count: profiles exported (tombstones included), or rows written by a compute.
Hash of the answer: SHA-256 of the exact bytes sent or written; for a compute (whose answer
is its result), SHA-256 of the result as JSON.
"""

from __future__ import annotations

import getpass
import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
from clickhouse_connect.driver.client import Client

from adtier import audit

__all__ = ["record", "record_compute", "hashed", "cli_who"]


def record(client: Client, *, who: str, role: str, endpoint: str, parameters: dict[str, Any],
           row_count: int, answer_sha256: str, status: int = 200, method: str = "GET") -> str:
    """Write one audit record; answers its id."""
    return audit.record(client, key_id=who, role=role, advertiser_id="", endpoint=endpoint,
                        method=method, parameters=parameters, status=status,
                        row_count=row_count, answer_sha256=answer_sha256)


def record_compute(client: Client, result: object, *, who: str, role: str,
                   error: str | None = None) -> str:
    """A batch computation: its result (ComputeResult) is the answer."""
    body = msgspec.json.encode({"result": result, "error": error})
    written = getattr(result, "written", 0) if result is not None else 0
    parameters = {"as_of": getattr(result, "as_of", None),
                  "watermark": getattr(result, "watermark", None),
                  "profiles": getattr(result, "profiles", None),
                  "tombstones": getattr(result, "tombstones", None), "error": error}
    return record(client, who=who, role=role, endpoint="features_compute", method="POST",
                  parameters=parameters, row_count=written, answer_sha256=audit.sha256_hex(body),
                  status=500 if error else 200)


def hashed(chunks: Iterator[bytes], on_end: Callable[[str, bool], None]) -> Iterator[bytes]:
    """Pass the chunks through; at the end call ``on_end(sha256 hex, completed)`` (completed is
    False when the consumer went away before the end)."""
    digest = hashlib.sha256()
    completed = False
    try:
        for chunk in chunks:
            digest.update(chunk)
            yield chunk
        completed = True
    finally:
        on_end(digest.hexdigest(), completed)


def cli_who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no user name (containers): still audited
        return "cli"
