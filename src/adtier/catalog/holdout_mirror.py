"""The Valkey mirror of campaigns with a holdout, so the segment look-up (ad decisioning) can
name a profile's holdouts without asking ClickHouse.

Keys:

- ``adtier:holdouts`` — hash, campaign_id -> msgspec JSON ``{advertiser_id, holdout_percent,
  start_date, end_date}``, one field per campaign whose ``holdout_percent > 0``. The look-up
  reads it whole (``HGETALL``) and applies the rule of ``catalog.holdouts`` per campaign.
- ``adtier:holdouts:versions`` — hash, campaign_id -> the 20-digit catalog row ``version``
  last applied, for every campaign (with a holdout or not). A write older than what was
  applied is skipped, and a removal leaves its version behind, so two writers in any order
  (two API workers, a start-up restore reading ClickHouse while a campaign is upserted)
  converge on the newest catalog row: a campaign set to 0 % is never brought back by an older
  snapshot, and one set to 20 % is never dropped by one.

``publish`` is called by the campaign upsert after the ClickHouse insert, with the insert's
row version; ``restore`` re-applies ``campaigns FINAL`` (every server start, and ``adtier
segments restore``), which also picks up campaigns written straight into ClickHouse (the
simulator's direct mode). ClickHouse stays the record.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Iterable, Sequence
from functools import lru_cache

import msgspec
import redis
from clickhouse_connect.driver.client import Client

from adtier.catalog.holdouts import bucket_of_crcs, threshold

__all__ = ["HOLDOUTS_KEY", "VERSIONS_KEY", "Holdout", "publish", "restore", "assigned"]

HOLDOUTS_KEY = "adtier:holdouts"
VERSIONS_KEY = "adtier:holdouts:versions"
_PER_CALL = 1_000  # campaigns per script call: no call blocks Valkey for long


class Holdout(msgspec.Struct, frozen=True):
    advertiser_id: str
    holdout_percent: float
    start_date: dt.date
    end_date: dt.date


_encode = msgspec.json.Encoder().encode
_decoder = msgspec.json.Decoder(Holdout)

# ARGV: (campaign_id, 20-digit version, entry | '' to remove) triples. Equal-length digit
# strings compare like the numbers (a Lua number cannot hold a nanosecond stamp exactly). The
# same version is applied again (same row, same entry): a restore repairs a lost mirror key
# even when the versions hash survived.
_APPLY = """
for i = 1, #ARGV, 3 do
  local seen = redis.call('HGET', KEYS[2], ARGV[i])
  if not seen or seen <= ARGV[i + 1] then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    if ARGV[i + 2] == '' then
      redis.call('HDEL', KEYS[1], ARGV[i])
    else
      redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
    end
  end
end
return 1
"""


def _entry(campaign: object) -> bytes:
    """The mirror's value for a campaign (a catalog model or a row), b'' when it holds none."""
    get = campaign.get if isinstance(campaign, dict) else lambda f: getattr(campaign, f)
    if not get("holdout_percent") > 0:
        return b""
    return _encode(Holdout(get("advertiser_id"), float(get("holdout_percent")),
                           get("start_date"), get("end_date")))


def _apply(r: redis.Redis, changes: Sequence[tuple[str, int, bytes]]) -> None:
    script = r.register_script(_APPLY)
    for start in range(0, len(changes), _PER_CALL):
        argv: list[object] = []
        for campaign_id, version, entry in changes[start:start + _PER_CALL]:
            argv += [campaign_id, f"{version:020d}", entry]
        script(keys=[HOLDOUTS_KEY, VERSIONS_KEY], args=argv)


def publish(r: redis.Redis, campaigns: Iterable[object], version: int) -> None:
    """Mirror upserted campaigns (written to ClickHouse with row ``version``): a campaign with
    a holdout is set, one without is removed."""
    _apply(r, [(c.campaign_id, version, _entry(c)) for c in campaigns])  # type: ignore[attr-defined]


def restore(client: Client, r: redis.Redis) -> int:
    """Re-apply every current campaign row from ClickHouse; answers how many hold a holdout."""
    rows = list(client.query(
        "SELECT campaign_id, advertiser_id, holdout_percent, start_date, end_date, version "
        "FROM campaigns FINAL").named_results())
    changes = [(row["campaign_id"], int(row["version"]), _entry(row)) for row in rows]
    _apply(r, changes)
    return sum(1 for _, _, entry in changes if entry)


@lru_cache(maxsize=65_536)
def _decode(value: bytes) -> Holdout:
    # The look-up decodes the same few entries on every call: keep them.
    return _decoder.decode(value)


@lru_cache(maxsize=65_536)
def _crc(campaign_id: bytes) -> int:
    return zlib.crc32(campaign_id)


def assigned(entries: dict[bytes, bytes], profile_id: str, today: dt.date,
             advertiser_id: str | None) -> list[str]:
    """Campaign ids (sorted) of the mirror's ``entries`` (an ``HGETALL``) whose flight has not
    ended by ``today`` and whose holdout holds ``profile_id``; only ``advertiser_id``'s
    campaigns unless it is None (admin)."""
    profile_crc = zlib.crc32(profile_id.encode())
    out = []
    for campaign_id, value in entries.items():
        entry = _decode(value)
        if entry.end_date < today or advertiser_id not in (None, entry.advertiser_id):
            continue
        if bucket_of_crcs(profile_crc, _crc(campaign_id)) < threshold(entry.holdout_percent):
            out.append(campaign_id.decode())
    return sorted(out)
