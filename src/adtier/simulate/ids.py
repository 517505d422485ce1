"""Vectorised identifiers: fixed-width text ids, seeded UUIDs, and the holdout assignment hash.

Ids are built as ``(n, width)`` uint8 matrices and handed to Arrow as string arrays without a
Python loop. The holdout assignment rule is ``adtier.catalog.holdouts`` (its SQL, and the
one-profile ``in_holdout`` that the segment look-up uses, are re-exported here); this module
holds its vectorised form for the simulator, which must agree with it exactly.
"""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa

from adtier.catalog.holdouts import (
    BUCKETS,
    HOLDOUT_BUCKET_SQL,
    HOLDOUT_SQL,
    in_holdout,
    threshold,
)

__all__ = [
    "decimal_ids", "hex_ids", "uuid4_bytes", "uuid_text", "arrow_strings", "matrix_strings",
    "crc32_rows", "int_hash64", "holdout_bucket", "holdout_mask", "in_holdout",
    "HOLDOUT_BUCKET_SQL", "HOLDOUT_SQL",
]

_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
_DIGITS = np.frombuffer(b"0123456789", np.uint8)


def decimal_ids(prefix: str, values: np.ndarray, width: int) -> np.ndarray:
    """``prefix`` + zero-padded decimal ``values`` as an ``(n, len(prefix) + width)`` matrix."""
    head = np.frombuffer(prefix.encode(), np.uint8)
    out = np.empty((len(values), len(head) + width), np.uint8)
    out[:, : len(head)] = head
    v = np.asarray(values, np.int64).copy()
    for j in range(width - 1, -1, -1):
        out[:, len(head) + j] = _DIGITS[v % 10]
        v //= 10
    return out


def hex_ids(values: np.ndarray, prefix: str = "") -> np.ndarray:
    """``prefix`` + 16 lowercase hex digits of uint64 ``values``."""
    head = np.frombuffer(prefix.encode(), np.uint8)
    out = np.empty((len(values), len(head) + 16), np.uint8)
    out[:, : len(head)] = head
    v = np.asarray(values, np.uint64).copy()
    for j in range(15, -1, -1):
        out[:, len(head) + j] = _HEX[(v & np.uint64(15)).astype(np.intp)]
        v >>= np.uint64(4)
    return out


def uuid4_bytes(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random UUIDs (version 4, RFC 4122 variant) as an ``(n, 16)`` byte matrix."""
    raw = np.frombuffer(rng.bytes(16 * n), np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    return raw


_UUID_SLOTS = np.array([0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34])


def uuid_text(raw: np.ndarray) -> np.ndarray:
    """``(n, 16)`` UUID bytes -> ``(n, 36)`` canonical text (8-4-4-4-12, lowercase)."""
    out = np.full((len(raw), 36), ord("-"), np.uint8)
    out[:, _UUID_SLOTS] = _HEX[raw >> 4]
    out[:, _UUID_SLOTS + 1] = _HEX[raw & 15]
    return out


def matrix_strings(matrix: np.ndarray) -> np.ndarray:
    """A fixed-width byte matrix as a NumPy ``S`` array (for tests and small look-ups)."""
    matrix = np.ascontiguousarray(matrix)
    return matrix.view(f"S{matrix.shape[1]}").ravel()


def arrow_strings(matrix: np.ndarray) -> pa.StringArray:
    """A fixed-width byte matrix as an Arrow string array (no copy of the characters)."""
    matrix = np.ascontiguousarray(matrix)
    n, width = matrix.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(matrix))


def _crc_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0xEDB88320), table >> 1)
    return table.astype(np.uint32)


_CRC_TABLE = _crc_table()


def crc32_rows(matrix: np.ndarray) -> np.ndarray:
    """CRC-32 (zlib / ClickHouse ``CRC32``) of each row of a fixed-width byte matrix."""
    crc = np.full(len(matrix), 0xFFFFFFFF, np.uint32)
    for j in range(matrix.shape[1]):
        crc = _CRC_TABLE[(crc ^ matrix[:, j]) & 0xFF] ^ (crc >> np.uint32(8))
    return crc ^ np.uint32(0xFFFFFFFF)


def int_hash64(x: np.ndarray) -> np.ndarray:
    """ClickHouse ``intHash64`` (a murmur finaliser of x xor a constant), vectorised."""
    x = np.asarray(x, np.uint64) ^ np.uint64(0x4CF2D2BAAE6DA887)
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(33))
        x = x * np.uint64(0xFF51AFD7ED558CCD)
        x = x ^ (x >> np.uint64(33))
        x = x * np.uint64(0xC4CEB9FE1A85EC53)
        x = x ^ (x >> np.uint64(33))
    return x


def holdout_bucket(profile_crc: np.ndarray, campaign_id: str) -> np.ndarray:
    """Buckets 0..9999 of profiles (given the CRC-32 of their ids) for one campaign: the rule
    of ``adtier.catalog.holdouts`` (``bucket``), vectorised."""
    key = (np.asarray(profile_crc, np.uint64) << np.uint64(32)) | np.uint64(
        zlib.crc32(campaign_id.encode()))
    return int_hash64(key) % np.uint64(BUCKETS)


def holdout_mask(profile_crc: np.ndarray, campaign_id: str, holdout_percent: float) -> np.ndarray:
    return holdout_bucket(profile_crc, campaign_id) < np.uint64(threshold(holdout_percent))
