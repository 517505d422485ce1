"""The holdout assignment rule: which profiles a campaign with a holdout must not be served.

A profile's **bucket** for a campaign is 0..9999, from a stable hash of both ids; the profile is
in the campaign's holdout when its bucket is below ``round(holdout_percent * 100)``. The hash is
ClickHouse's own ``intHash64`` of ``CRC32(profile_id) << 32 | CRC32(campaign_id)``, so the same
assignment is computed in SQL (``HOLDOUT_SQL``: content-effects measurement), one profile at a
time here (``bucket``, ``in_holdout``: the segment look-up that ad decisioning calls) and
vectorised for the simulator (``adtier.simulate.ids``). ``round`` is half-to-even in both
Python and ClickHouse (Float64), so the thresholds agree too.

It lives with the catalog because ``holdout_percent`` is a campaign attribute and both
measurement and the look-up depend on the catalog, never on each other. Pure Python on
purpose: one look-up hashes one profile for a few campaigns, where NumPy's per-call overhead
(~µs per array) would cost more than the arithmetic.
"""

from __future__ import annotations

import zlib

__all__ = ["HOLDOUT_BUCKET_SQL", "HOLDOUT_SQL", "BUCKETS", "int_hash64", "bucket",
           "bucket_of_crcs", "threshold", "in_holdout"]

BUCKETS = 10_000
_MASK64 = 0xFFFFFFFFFFFFFFFF

# In ClickHouse, over a ``profile_id`` column, with {campaign_id:String} (and, for HOLDOUT_SQL,
# {holdout_percent:Float64}) bound as parameters.
HOLDOUT_BUCKET_SQL = (
    "intHash64(bitOr(bitShiftLeft(toUInt64(CRC32(profile_id)), 32), "
    "toUInt64(CRC32({campaign_id:String})))) % 10000"
)
HOLDOUT_SQL = f"({HOLDOUT_BUCKET_SQL}) < round({{holdout_percent:Float64}} * 100)"


def int_hash64(x: int) -> int:
    """ClickHouse ``intHash64`` of a UInt64 (a murmur3 finaliser of x xor a constant)."""
    x = (x & _MASK64) ^ 0x4CF2D2BAAE6DA887
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & _MASK64
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & _MASK64
    return x ^ (x >> 33)


def bucket_of_crcs(profile_crc: int, campaign_crc: int) -> int:
    """The bucket from the ids' CRC-32s (a caller hashing one profile for many campaigns
    computes the profile's CRC once)."""
    return int_hash64((profile_crc << 32) | campaign_crc) % BUCKETS


def bucket(profile_id: str, campaign_id: str) -> int:
    """The profile's bucket 0..9999 for the campaign (``HOLDOUT_BUCKET_SQL``)."""
    return bucket_of_crcs(zlib.crc32(profile_id.encode()), zlib.crc32(campaign_id.encode()))


def threshold(holdout_percent: float) -> int:
    """Buckets below this are held out (``round(holdout_percent * 100)``, half to even)."""
    return round(holdout_percent * 100)


def in_holdout(profile_id: str, campaign_id: str, holdout_percent: float) -> bool:
    return bucket(profile_id, campaign_id) < threshold(holdout_percent)
