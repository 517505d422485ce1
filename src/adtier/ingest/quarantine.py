"""Rows ClickHouse refuses: found by splitting the block, kept as ``store_refused`` rejections.

Edge validation should let no such row through; this is the defence behind it, so that one bad
value can never hold up a flusher (and the acknowledged events behind it) for good. Only errors
about the data count as a refusal; anything else (server away, timeouts, too many parts...) is
raised, and the flusher retries the whole plan as before.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

__all__ = ["REFUSAL_CODES", "Refused", "is_refusal", "insert_or_split", "quarantine_rows"]

# ClickHouse error codes that say "this data cannot be stored" whatever the server's state.
REFUSAL_CODES = frozenset({
    6,    # CANNOT_PARSE_TEXT
    25,   # CANNOT_PARSE_ESCAPE_SEQUENCE
    26,   # CANNOT_PARSE_QUOTED_STRING
    27,   # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    38,   # CANNOT_PARSE_DATE
    41,   # CANNOT_PARSE_DATETIME
    53,   # TYPE_MISMATCH
    69,   # ARGUMENT_OUT_OF_BOUND
    70,   # CANNOT_CONVERT_TYPE
    72,   # CANNOT_PARSE_NUMBER
    117,  # INCORRECT_DATA
    131,  # TOO_LARGE_STRING_SIZE
    321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
    376,  # CANNOT_PARSE_UUID
    407,  # DECIMAL_OVERFLOW (DateTime64 out of range)
    691,  # UNKNOWN_ELEMENT_OF_ENUM
})
_CODE = re.compile(r"Code: (\d+)\.")
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class Refused:
    table: str
    row: bytes
    error: str


class _Provenance(msgspec.Struct):
    source: str = ""
    key_id: str = ""
    batch_id: str = ""
    event_id: str = ""


_provenance = msgspec.json.Decoder(_Provenance)


def is_refusal(error: BaseException) -> bool:
    """A data error raised while ClickHouse read the input, so before anything was written.
    (A data error from a materialized view comes after the table's part is written: splitting
    then would store those rows twice, so it is retried like any other failure.)"""
    text = str(error)
    match = _CODE.search(text)
    return (match is not None and int(match.group(1)) in REFUSAL_CODES
            and "InputFormat" in text)


Insert = Callable[[str, bytes, str], None]


def insert_or_split(insert: Insert, table: str, block: bytes, token: str) -> list[Refused]:
    """Insert ``block`` (JSONEachRow) under ``token``; if ClickHouse refuses it for its data,
    insert each half under a token of its own (``token.0``, ``token.1``), down to single rows.
    Answers the refused rows. Deterministic: a redo sends the same parts under the same tokens,
    so the parts already stored are dropped as duplicates."""
    try:
        insert(table, block, token)
        return []
    except Exception as err:
        if not is_refusal(err):
            raise
        error = str(err)
    # JSONEachRow rows are one line each (JSON strings escape their newlines)
    lines = block.splitlines(keepends=True)
    if len(lines) == 1:
        return [Refused(table, block, error)]
    mid = len(lines) // 2
    return (insert_or_split(insert, table, b"".join(lines[:mid]), f"{token}.0")
            + insert_or_split(insert, table, b"".join(lines[mid:]), f"{token}.1"))


def quarantine_rows(refused: list[Refused], received_ms: int) -> bytes:
    """rejected_events rows for refused rows: built only from values that are always storable
    (the row itself is kept as text, the time is the block's earliest receipt)."""
    out = []
    for r in refused:
        try:
            known = _provenance.decode(r.row)
        except (msgspec.DecodeError, msgspec.ValidationError):
            known = _Provenance()
        out.append(_encoder.encode({
            "received_at": received_ms / 1000,
            "source": known.source[:16],
            "key_id": known.key_id[:64],
            "batch_id": known.batch_id[:64],
            "idx": 0,
            "event_id": known.event_id[:64],
            "reason": "store_refused",
            "detail": f"{r.table}: {r.error}"[:2000],
            "raw": r.row.decode("utf-8", "replace")[:65536],
        }) + b"\n")
    return b"".join(out)
