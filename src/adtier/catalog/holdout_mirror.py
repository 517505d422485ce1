"""The Valkey mirror of campaigns with a live holdout, so the segment look-up (ad decisioning)
can name a profile's holdouts without asking ClickHouse.

Keys:

- ``adtier:{holdouts}`` — hash, campaign_id -> msgspec JSON ``{advertiser_id, holdout_percent,
  start_date, end_date}``, one field per campaign whose ``holdout_percent > 0`` and whose
  flight has not ended (``end_date >= today``, UTC). The admin look-up reads it whole.
- ``adtier:{holdouts}:adv:{advertiser_id}`` — hash, the same entries of one advertiser: an
  advertiser's look-up reads only its own campaigns, whatever the others hold. The two are
  written by one script, so they never disagree.
- ``adtier:{holdouts}:versions`` — hash, campaign_id -> the 20-digit catalog row ``version``
  last applied, for every campaign (with a holdout or not, ended or not). A write older than
  what was applied is skipped, and a removal leaves its version behind, so two writers in any
  order (two API workers, a restore reading ClickHouse while a campaign is upserted) converge
  on the newest catalog row: a campaign set to 0 % is never brought back by an older snapshot,
  one set to 20 % is never dropped by one, and an ended flight extended by an upsert returns.

All three share the hash tag ``{holdouts}`` (one slot on a Valkey Cluster: the script that
writes them touches one slot), and the script declares every key it touches (``KEYS``): the
advertiser hashes of the campaigns' new advertisers and of the ones their entries held before
(read first; a call that meets an entry moved meanwhile is refused, naming the missing hash,
and made again). While the slot migrates, a declared key is one the server checks before the
call starts: the call waits (TRYAGAIN) until the slot has moved, instead of starting on the old
owner and being refused half-way by a hash already moved.

Ended flights are removed (not only skipped by the look-up), so the hashes hold live holdouts
only and a look-up reads a handful of entries, not every campaign ever run: ``publish`` drops
a campaign upserted with an ended flight, ``restore`` drops the ones that ended since.

``publish`` is called by the campaign upsert after the ClickHouse insert, with the insert's
row version; ``restore`` re-applies ``campaigns FINAL`` (every server start, every
``REFRESH_S`` from the server's ``keep_restored`` loop, and ``adtier segments restore``), which
also repairs a publish that failed after its ClickHouse insert and picks up campaigns written
straight into ClickHouse (the simulator's direct mode). ClickHouse stays the record.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import anyio
import anyio.to_thread
import msgspec
import redis
from clickhouse_connect.driver.client import Client

from adtier.catalog.holdouts import bucket_of_crcs, threshold
from adtier.catalog.models import Campaign
from adtier.logs import get_logger
from adtier.store.valkey import is_cluster_client, retry_while_slot_moves

__all__ = ["HOLDOUTS_KEY", "VERSIONS_KEY", "REFRESH_S", "Holdout", "advertiser_key",
           "publish", "restore", "refresh", "keep_restored", "assigned"]

log = get_logger("adtier.catalog.holdouts")

HOLDOUTS_KEY = "adtier:{holdouts}"
VERSIONS_KEY = "adtier:{holdouts}:versions"
_ADVERTISER_PREFIX = "adtier:{holdouts}:adv:"  # ':adv:' keeps an advertiser named 'versions' apart
REFRESH_S = 60.0  # the server re-applies ClickHouse this often (a few ms: one small query)
_PER_CALL = 1_000  # campaigns per script call: no call blocks Valkey for long


class Holdout(msgspec.Struct, frozen=True):
    advertiser_id: str
    holdout_percent: float
    start_date: dt.date
    end_date: dt.date


def advertiser_key(advertiser_id: str) -> str:
    return _ADVERTISER_PREFIX + advertiser_id


_encode = msgspec.json.Encoder().encode
_decoder = msgspec.json.Decoder(Holdout)

# KEYS: the all-campaigns hash, the versions hash, then every advertiser hash the call may
# touch. ARGV[1]: the advertiser hashes' prefix; then (campaign_id, 20-digit version,
# advertiser_id, entry | '' to remove) quadruples. Answers 1, or (touching nothing) the
# advertisers whose hashes it would touch and were not declared. Equal-length digit strings compare like the numbers (a Lua
# number cannot hold a nanosecond stamp exactly). The same version is applied again (same row,
# same entry): a restore repairs a lost key even when the versions hash survived, and removes
# a flight that ended since. The entry held before names the advertiser hash to leave when a
# campaign moves to another advertiser; a removal also clears the row's own advertiser hash
# (in case the all-campaigns hash was lost).
_APPLY = """
local prefix = ARGV[1]
local declared, missing = {}, {}
for i = 3, #KEYS do declared[KEYS[i]] = true end
local function need(adv)
  if not declared[prefix .. adv] then
    declared[prefix .. adv] = true
    missing[#missing + 1] = adv
  end
end
for i = 2, #ARGV, 4 do
  local seen = redis.call('HGET', KEYS[2], ARGV[i])
  if not seen or seen <= ARGV[i + 1] then
    need(ARGV[i + 2])
    local old = redis.call('HGET', KEYS[1], ARGV[i])
    if old then need(cjson.decode(old)['advertiser_id']) end
  end
end
if #missing > 0 then return missing end
for i = 2, #ARGV, 4 do
  local id, version, adv, entry = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local seen = redis.call('HGET', KEYS[2], id)
  if not seen or seen <= version then
    redis.call('HSET', KEYS[2], id, version)
    local old = redis.call('HGET', KEYS[1], id)
    if old then
      local was = cjson.decode(old)['advertiser_id']
      if was ~= adv then
        redis.call('HDEL', prefix .. was, id)
      end
    end
    if entry == '' then
      redis.call('HDEL', KEYS[1], id)
      redis.call('HDEL', prefix .. adv, id)
    else
      redis.call('HSET', KEYS[1], id, entry)
      redis.call('HSET', prefix .. adv, id, entry)
    end
  end
end
return 1
"""


def _today() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


def _entry(holdout: Holdout, today: dt.date) -> bytes:
    """The mirror's value for a campaign, b'' (remove it) when it holds no live holdout."""
    if holdout.holdout_percent <= 0 or holdout.end_date < today:
        return b""
    return _encode(holdout)


def _of_campaign(c: Campaign) -> Holdout:
    return Holdout(c.advertiser_id, float(c.holdout_percent), c.start_date, c.end_date)


def _of_row(row: dict[str, Any]) -> Holdout:
    return Holdout(row["advertiser_id"], float(row["holdout_percent"]), row["start_date"],
                   row["end_date"])


def _apply(r: redis.Redis, changes: Sequence[tuple[str, int, Holdout]], today: dt.date) -> int:
    """Apply (campaign_id, version, holdout) changes; answers how many hold a live holdout."""
    script = r.register_script(_APPLY)
    call = ((lambda **kw: retry_while_slot_moves(lambda: script(**kw)))
            if is_cluster_client(r) else script)
    live = 0
    for start in range(0, len(changes), _PER_CALL):
        chunk = changes[start:start + _PER_CALL]
        argv: list[object] = [_ADVERTISER_PREFIX]
        for campaign_id, version, holdout in chunk:
            entry = _entry(holdout, today)
            live += bool(entry)
            argv += [campaign_id, f"{version:020d}", holdout.advertiser_id, entry]
        advertisers = {h.advertiser_id for _, _, h in chunk}
        advertisers |= {_decoder.decode(old).advertiser_id
                        for old in r.hmget(HOLDOUTS_KEY, [c for c, _, _ in chunk]) if old}
        # an entry changed between the read and the call names its hash: declare it, again
        while (missing := call(keys=[HOLDOUTS_KEY, VERSIONS_KEY,
                                     *map(advertiser_key, sorted(advertisers))], args=argv)) != 1:
            advertisers |= {m.decode() for m in missing}
    return live


def publish(r: redis.Redis, campaigns: Iterable[Campaign], version: int,
            today: dt.date | None = None) -> None:
    """Mirror upserted campaigns (written to ClickHouse with row ``version``): a campaign with
    a live holdout is set, one without (0 %, or its flight ended) is removed."""
    changes = [(c.campaign_id, version, _of_campaign(c)) for c in campaigns]
    _apply(r, changes, today or _today())


def restore(client: Client, r: redis.Redis, today: dt.date | None = None) -> int:
    """Re-apply every current campaign row from ClickHouse, dropping the flights ended by
    ``today`` (default: today, UTC); answers how many hold a live holdout."""
    rows = client.query(
        "SELECT campaign_id, advertiser_id, holdout_percent, start_date, end_date, version "
        "FROM campaigns FINAL").named_results()
    changes = [(row["campaign_id"], int(row["version"]), _of_row(row)) for row in rows]
    return _apply(r, changes, today or _today())


def refresh(client: Client, r: redis.Redis) -> int | None:
    """``restore``, logging a failure instead of raising it (the periodic loop outlives a
    store that is down for a while); None when it failed."""
    try:
        return restore(client, r)
    except Exception as err:  # noqa: BLE001 - the loop must not die; the next pass retries
        log.warning("holdout_mirror_refresh_failed", error=f"{type(err).__name__}: {err}"[:300])
        return None


async def keep_restored(client: Client, r: redis.Redis, every_s: float | None = None) -> None:
    """Run ``refresh`` every ``every_s`` (default ``REFRESH_S``) until cancelled (the server's
    lifespan): a mirror write lost after its ClickHouse insert is repaired within a minute,
    and ended flights leave the mirror the minute they end. ``client`` is this loop's own
    (one query at a time)."""
    while True:
        await anyio.sleep(every_s or REFRESH_S)
        # not abandoned on cancel: shutdown waits for a running refresh (a few ms) to end
        await anyio.to_thread.run_sync(refresh, client, r)


@lru_cache(maxsize=65_536)
def _decode(value: bytes) -> Holdout:
    # The look-up decodes the same few entries on every call: keep them.
    return _decoder.decode(value)


@lru_cache(maxsize=65_536)
def _crc(campaign_id: bytes) -> int:
    return zlib.crc32(campaign_id)


def assigned(entries: dict[bytes, bytes], profile_id: str, today: dt.date,
             advertiser_id: str | None) -> list[str]:
    """Campaign ids (sorted) of the mirror's ``entries`` (an ``HGETALL`` of ``HOLDOUTS_KEY``,
    or of ``advertiser_key(advertiser_id)``) whose flight has not ended by ``today`` (one may
    have ended since the last restore) and whose holdout holds ``profile_id``; only
    ``advertiser_id``'s campaigns unless it is None (admin)."""
    profile_crc = zlib.crc32(profile_id.encode())
    out = []
    for campaign_id, value in entries.items():
        entry = _decode(value)
        if entry.end_date < today or advertiser_id not in (None, entry.advertiser_id):
            continue
        if bucket_of_crcs(profile_crc, _crc(campaign_id)) < threshold(entry.holdout_percent):
            out.append(campaign_id.decode())
    return sorted(out)
