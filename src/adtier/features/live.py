"""Live per-profile ad counters in Redis, updated by the flusher as it stores ad events.

Layout (24 h semantics by hourly buckets): for each profile and each hour of event time one
hash ``adtier:fl:{<profile_id>}:<epoch hour>`` with fields ``impressions``, ``completes``,
``skips``, ``clicks`` and, when the campaign's ad category is known, ``<metric>|<category>``.
Each bucket expires 25 h after its hour began (``EXPIREAT``), so Redis holds at most 25 of them
per active profile. A read sums the buckets of the current hour and the 23 before it: "last
24 h" at hour granularity (it covers between 23 and 24 hours). The last ad seen (an
impression: campaign, creative, ts) is ``adtier:fl:{<profile_id>}:last``, written only if newer
than what is there, and expires 24 h after that impression. The ``{profile_id}`` hash tag keeps a
profile's keys in one Redis Cluster slot.

Cost on the flush path: the ad rows of a flush are parsed once with msgspec into a tiny Struct
(six fields), aggregated by C-level passes (one Counter over the rows, one sort; Python loops
only over distinct keys), packed with msgpack and applied by a Lua script (one call per
~10,000 values, all in one pipelined round trip; a profile's sessions are one item), in the
serving process's child as in a flusher thread (``live_child.py`` says why).

Where: in ``adtier serve`` this runs in a child process (``features.live_feed``: the serving
process only hands the stored row bytes over), in ``adtier flush`` in the flusher's thread.

Privacy: kids' and opted-out profiles and erased profiles never get counters. The counters
keep a cached exclusion set (kids' and opted-out profile ids, erased profiles' SHA-256), and
the campaign -> ad category map, both refreshed every ``refresh_s`` (60 s) from ClickHouse;
within that minute a newly excluded profile can still be counted, so the look-up also checks
exclusion at read time (it answers 404), and its counters age out within 25 h. Counters are
best effort (a flusher that dies after acknowledging but before updating them loses that
flush's increments); batch features are the exact record.

Post-ad abandonment (``post_ad_abandons`` in the hourly hash, counted in the hour of the stop):
a ``content_stop`` whose event time is 0 to 60 s after the last ad event (any ad event type) of
the same session. The flusher sees only stored rows, so "the session ended" can only mean an
explicit ``content_stop`` here (a player that just goes silent is caught by the batch feature
``post_ad_abandons``, which looks at each session's last event). Per profile, the hash
``adtier:fl:{<profile_id>}:ses`` keeps each session's last ad event time (expires 6 h after
the last flush that saw one); a counted stop removes the session's entry, so one ad break
counts once. The ad rows and the stop may arrive in the same flush or in different ones; ad
rows are applied first.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from operator import attrgetter
from typing import TYPE_CHECKING

import msgspec
import redis

# leaf modules only: the live counters' child imports this module (tests/unit/
# test_live_child.py)
from adtier.ingest.lines import line_slices
from adtier.logs import get_logger
from adtier.privacy.exclusions import ERASED_SHA256_SQL, EXCLUDED_IDS_SQL, excluded
from adtier.store.valkey import is_cluster_client

if TYPE_CHECKING:
    import redis.asyncio as aredis
    from clickhouse_connect.driver.client import Client

    from adtier.ingest.buffer import Entry
    from adtier.ingest.flusher import FlushBlocks

__all__ = ["LiveCounters", "LiveFeatures", "Lookups", "load_lookups", "read_live", "bucket_keys",
           "last_key", "live_features", "forget", "parse_ad_rows", "parse_stop_rows"]

log = get_logger("adtier.features.live")

WINDOW_HOURS = 24
_BUCKET_TTL_S = 25 * 3600
_METRIC = {"impression": "impressions", "complete": "completes", "skip": "skips",
           "click": "clicks"}
METRICS = ("impressions", "completes", "skips", "clicks")


class _AdRow(msgspec.Struct, gc=False):  # str/float fields only: never in a cycle
    """The only fields of a stored ad_events row the counters need (others are skipped)."""

    type: str
    ts: float
    profile_id: str
    campaign_id: str = ""
    creative_id: str = ""
    session_id: str = ""


class _StopRow(msgspec.Struct):
    """A stored content_events row, as far as post-ad abandonment needs it."""

    type: str
    ts: float
    profile_id: str
    session_id: str = ""


_rows_decoder = msgspec.json.Decoder(_AdRow)
_stops_decoder = msgspec.json.Decoder(list[_StopRow])
_ABANDON_S = 60.0
_SESSION_TTL_S = 6 * 3600


def _bucket(profile_id: str, hour: int) -> str:
    return f"adtier:fl:{{{profile_id}}}:{hour}"


def _last(profile_id: str) -> str:
    return f"adtier:fl:{{{profile_id}}}:last"


def _sessions(profile_id: str) -> str:
    return f"adtier:fl:{{{profile_id}}}:ses"


# One call applies a part of a flush: ARGV[1] is msgpack {buckets, lasts, marks, stops}; a
# bucket is [key, expire_at, field, n, field, n, ...]; a last ad is [key, ts, campaign,
# creative, expire_at] and is written only if newer than the stored one (flushes may arrive
# out of order); a mark is one profile's sessions' last ad events [key, expire_at, session, ts,
# session, ts, ...] (each kept if newer: one HMGET, one HSET, one EXPIREAT per profile; ts is a
# number, which Valkey writes in its shortest exact form); a stop is [sessions key, session,
# ts, bucket key, bucket expire_at]: counted when 0 to 60 s after the session's last ad event,
# which is then forgotten (one break counts once).
# Keys are not declared: on a cluster the parts are grouped by primary (``_apply_per_node``).
_APPLY = """
local data = cmsgpack.unpack(ARGV[1])
for _, b in ipairs(data[1]) do
  local key = b[1]
  for i = 3, #b, 2 do redis.call('HINCRBY', key, b[i], b[i + 1]) end
  redis.call('EXPIREAT', key, b[2])
end
for _, l in ipairs(data[2]) do
  local cur = tonumber(redis.call('HGET', l[1], 'ts') or '-1')
  if tonumber(l[2]) > cur then
    redis.call('HSET', l[1], 'ts', l[2], 'campaign_id', l[3], 'creative_id', l[4])
    redis.call('EXPIREAT', l[1], l[5])
  end
end
for _, m in ipairs(data[3]) do
  local sessions = {}
  for i = 3, #m, 2 do sessions[#sessions + 1] = m[i] end
  local cur = redis.call('HMGET', m[1], unpack(sessions))
  local known = false
  for j = 1, #sessions do
    if cur[j] then known = true break end
  end
  if not known then  -- every session new (the usual item): the item's pairs as they are
    redis.call('HSET', m[1], unpack(m, 3))
  else
    local newer = {}
    for j = 1, #sessions do
      local ts = m[2 + 2 * j]
      if not cur[j] or tonumber(ts) > tonumber(cur[j]) then
        newer[#newer + 1] = sessions[j]
        newer[#newer + 1] = ts
      end
    end
    if #newer > 0 then redis.call('HSET', m[1], unpack(newer)) end
  end
  redis.call('EXPIREAT', m[1], m[2])
end
for _, s in ipairs(data[4]) do
  local ad = redis.call('HGET', s[1], s[2])
  if ad then
    local gap = tonumber(s[3]) - tonumber(ad)
    if gap >= 0 and gap <= ABANDON_S then
      redis.call('HINCRBY', s[4], 'post_ad_abandons', 1)
      redis.call('EXPIREAT', s[4], s[5])
      redis.call('HDEL', s[1], s[2])
    end
  end
end
return 0
""".replace("ABANDON_S", repr(_ABANDON_S))
_PART_FIELDS = 10_000  # values per script call: a call never blocks Valkey for long
_pack = msgspec.msgpack.Encoder().encode


def forget(client: redis.Redis, profile_ids: list[str], now: float | None = None) -> None:
    """Delete the counters of these profiles (every bucket that can still exist, and the last
    ad): used when a stored profile becomes excluded."""
    hour = int((time.time() if now is None else now) // 3600)
    pipe = client.pipeline(transaction=False)
    for pid in profile_ids:
        pipe.delete(_last(pid), _sessions(pid),
                    *(_bucket(pid, h) for h in range(hour - 26, hour + 2)))
    pipe.execute()


def parse_ad_rows(block: bytes) -> list[_AdRow]:
    """JSONEachRow lines -> rows, with one decode call for the whole block."""
    return [row for part in line_slices(block) for row in _rows_decoder.decode_lines(part)]


def parse_stop_rows(block: bytes) -> list[_StopRow]:
    """The content_stop rows of a JSONEachRow block; other lines are not decoded at all."""
    if b'"content_stop"' not in block:
        return []
    lines = [line for line in block.split(b"\n") if b'"content_stop"' in line]
    return [r for r in _stops_decoder.decode(b"[" + b",".join(lines) + b"]")
            if r.type == "content_stop"]


class Lookups(msgspec.Struct):
    """What counting needs from ClickHouse: the campaign -> ad category map and the
    exclusion sets (kids' and opted-out profile ids, erased profiles' SHA-256)."""

    categories: dict[str, str]
    excluded_ids: list[str]
    erased_sha256: list[str]


def load_lookups(clickhouse: Client) -> Lookups | None:
    """The look-ups, or None when ClickHouse fails (the caller keeps what it had)."""
    try:
        return Lookups(
            categories=dict(clickhouse.query(
                "SELECT campaign_id, argMax(ad_category, version) FROM campaigns "
                "GROUP BY campaign_id").result_rows),
            excluded_ids=[r[0] for r in clickhouse.query(EXCLUDED_IDS_SQL).result_rows],
            erased_sha256=[r[0] for r in clickhouse.query(ERASED_SHA256_SQL).result_rows])
    except Exception as err:  # noqa: BLE001 - counters must never hold up a flush
        log.warning("live_counters_refresh_failed", error=str(err)[:300])
        return None


class LiveCounters:
    """The flusher's hook: ``on_stored(entries, blocks)`` after a flush is acknowledged."""

    def __init__(self, redis_client: redis.Redis, clickhouse: Client | None,
                 refresh_s: float = 60.0):
        self.redis = redis_client
        self.ch = clickhouse
        self.refresh_s = refresh_s
        self.categories: dict[str, str] = {}
        self.excluded_ids: frozenset[str] = frozenset()
        self.erased_sha256: frozenset[str] = frozenset()
        self._loaded_at = float("-inf")
        self._apply = redis_client.register_script(_APPLY)
        if is_cluster_client(redis_client):
            self._apply_cluster = redis_client.register_script(
                "#!lua flags=allow-cross-slot-keys\n" + _APPLY)

    def refresh(self) -> None:
        """Reload the campaign -> category map and the exclusion set (kept if ClickHouse fails)."""
        self._loaded_at = time.monotonic()
        if self.ch is None:
            return
        lookups = load_lookups(self.ch)
        if lookups is not None:
            self.use(lookups)

    def use(self, lookups: Lookups) -> None:
        """Count with these look-ups from now on (what ``refresh`` loaded, here or elsewhere)."""
        self.categories = lookups.categories
        self.excluded_ids = frozenset(lookups.excluded_ids)
        self.erased_sha256 = frozenset(lookups.erased_sha256)
        self._loaded_at = time.monotonic()

    def _excluded(self, profile_id: str) -> bool:
        return excluded(profile_id, self.excluded_ids, self.erased_sha256)

    def on_stored(self, entries: list["Entry"], blocks: "FlushBlocks") -> None:
        self.update(parse_ad_rows(blocks.ad), stops=parse_stop_rows(blocks.content))

    def update(self, rows: list[_AdRow], now: float | None = None,
               stops: list[_StopRow] | None = None) -> int:
        """Count the rows (one pipelined round trip); answers how many ad rows were counted.

        Per row only C-level passes run (comprehensions, one Counter, one sort); the Python
        loops run over distinct (profile, hour, type, campaign) keys, far fewer than rows."""
        if not rows and not stops:
            return 0
        if time.monotonic() - self._loaded_at > self.refresh_s:
            self.refresh()
        now = time.time() if now is None else now
        oldest_hour = int(now // 3600) - (WINDOW_HOURS - 1)
        verdict = self._verdicts({r.profile_id for r in rows}
                                 | {s.profile_id for s in stops or ()})
        if any(verdict.values()):
            rows = [r for r in rows if not verdict[r.profile_id]]
        buckets, counted = self._buckets(rows, oldest_hour)
        lasts = [[_last(pid), repr(row.ts), row.campaign_id, row.creative_id,
                  int(row.ts) + WINDOW_HOURS * 3600]
                 for pid, row in _last_impressions(rows, oldest_hour * 3600).items()]
        # expiry from the flush time, not the event time: a late ad row must not shorten it
        mark_args = _session_marks(rows, int(now) + _SESSION_TTL_S)
        stop_args = []
        for stop in stops or ():
            hour = int(stop.ts // 3600)
            if hour < oldest_hour or not stop.session_id or verdict[stop.profile_id]:
                continue
            stop_args.append([_sessions(stop.profile_id), stop.session_id, repr(stop.ts),
                              _bucket(stop.profile_id, hour), hour * 3600 + _BUCKET_TTL_S])
        if not (counted or mark_args or stop_args):
            return 0
        if is_cluster_client(self.redis):
            self._apply_per_node((buckets, lasts, mark_args, stop_args))
            return counted
        # one round trip, and one AOF fsync for the whole flush (live_child.py says why not
        # call by call)
        pipe = self.redis.pipeline(transaction=False)
        # in this order, so a stop sees the ad rows of its own flush (a pipeline keeps order)
        for slot, items in enumerate((buckets, lasts, mark_args, stop_args)):
            for part in _parts(items):
                parts: list[list] = [[], [], [], []]
                parts[slot] = part
                self._apply(keys=[], args=[_pack(parts)], client=pipe)
        pipe.execute()
        return counted

    def _apply_per_node(self, kinds: tuple[list, ...]) -> None:
        """On a cluster: one call per primary and part, with the keys that primary holds (the
        script is flagged to touch several slots of its node; its first key routes it)."""
        for slot, items in enumerate(kinds):
            by_node: dict[str, list[list]] = {}
            for item in items:
                by_node.setdefault(self.redis.get_node_from_key(item[0]).name, []).append(item)
            for node_items in by_node.values():
                for part in _parts(node_items):
                    parts: list[list] = [[], [], [], []]
                    parts[slot] = part
                    self._apply_cluster(keys=[part[0][0]], args=[_pack(parts)])

    def _verdicts(self, profile_ids: set[str]) -> dict[str, bool]:
        """Excluded or not, once per distinct profile of the flush."""
        return {pid: self._excluded(pid) for pid in profile_ids}

    def _buckets(self, rows: list[_AdRow], oldest_hour: int) -> tuple[list[list], int]:
        """The hourly bucket increments ([key, expire_at, field, n, ...]) and the rows counted."""
        per_key = Counter((r.profile_id, int(r.ts // 3600), r.type, r.campaign_id)
                          for r in rows if r.type in _METRIC)
        incr: dict[tuple[str, int], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        categories = self.categories
        counted = 0
        for (pid, hour, type_, campaign), n in per_key.items():
            if hour < oldest_hour:
                continue  # late arrivals outside the window do not count
            metric = _METRIC[type_]
            fields = incr[pid, hour]
            fields[metric] += n
            category = categories.get(campaign)
            if category:
                fields[f"{metric}|{category}"] += n
            counted += n
        buckets = []
        for (pid, hour), fields in incr.items():
            bucket: list = [_bucket(pid, hour), hour * 3600 + _BUCKET_TTL_S]
            for field, n in fields.items():
                bucket += (field, n)
            buckets.append(bucket)
        return buckets, counted


_ts = attrgetter("ts")
_SESSIONS_PER_MARK = 500  # sessions of one profile per mark item (Lua unpack stays small)


def _last_impressions(rows: list[_AdRow], from_ts: float) -> dict[str, _AdRow]:
    """Each profile's newest impression in the window (the first of equal times)."""
    newest_first = sorted((r for r in rows if r.type == "impression" and r.ts >= from_ts),
                          key=_ts, reverse=True)  # stable: equal times keep their order
    return {r.profile_id: r for r in reversed(newest_first)}


def _session_marks(rows: list[_AdRow], expire_at: int) -> list[list]:
    """Per profile: [sessions key, expire_at, session, ts, session, ts, ...] with each
    session's newest ad event time in these rows (any ad event type)."""
    newest = {(r.profile_id, r.session_id): r.ts
              for r in sorted((r for r in rows if r.session_id), key=_ts)}
    by_profile: dict[str, list] = defaultdict(list)
    for (pid, session), ts in newest.items():
        by_profile[pid] += (session, ts)
    marks = []
    step = 2 * _SESSIONS_PER_MARK
    for pid, pairs in by_profile.items():
        key = _sessions(pid)
        for i in range(0, len(pairs), step):
            marks.append([key, expire_at, *pairs[i:i + step]])
    return marks


def _parts(items: list[list]) -> Iterator[list[list]]:
    """Items in parts of about ``_PART_FIELDS`` values: a call never blocks Valkey for long."""
    part: list[list] = []
    size = 0
    for item in items:
        part.append(item)
        size += len(item)
        if size >= _PART_FIELDS:
            yield part
            part, size = [], 0
    if part:
        yield part


class LastAd(msgspec.Struct):
    campaign_id: str
    creative_id: str
    ts: float


class LiveFeatures(msgspec.Struct):
    """Counters of the last 24 hours (hour granularity) and the last ad seen."""

    window_hours: int
    impressions: int
    completes: int
    skips: int
    clicks: int
    by_category: dict[str, dict[str, int]]
    last_ad: LastAd | None
    # sessions that ended (content_stop) 0-60 s after an ad event of the same session
    post_ad_abandons: int = 0

    @property
    def empty(self) -> bool:
        return not (self.impressions or self.completes or self.skips or self.clicks
                    or self.last_ad or self.post_ad_abandons)


async def read_live(client: aredis.Redis, profile_id: str,
                    now: float | None = None) -> LiveFeatures:
    """One pipelined round trip: the 24 hourly buckets and the last ad."""
    pipe = client.pipeline(transaction=False)
    queue_live(pipe, profile_id, now)
    return parse_live(await pipe.execute())


LIVE_REPLIES = WINDOW_HOURS + 1


def queue_live(pipe, profile_id: str, now: float | None = None) -> None:
    """Queue the ``LIVE_REPLIES`` reads of a profile's counters on a pipeline."""
    hour = int((time.time() if now is None else now) // 3600)
    for h in range(hour - WINDOW_HOURS + 1, hour + 1):
        pipe.hgetall(_bucket(profile_id, h))
    pipe.hgetall(_last(profile_id))


def parse_live(replies: list) -> LiveFeatures:
    """The counters from the replies of ``queue_live``."""
    sums: dict[bytes, int] = defaultdict(int)
    for bucket in replies[:-1]:
        for field, value in bucket.items():
            sums[field] += int(value)
    return live_features(sums.items(), replies[-1])


def bucket_keys(profile_id: str, now: float | None = None) -> list[str]:
    """The hourly buckets of the window, oldest first."""
    hour = int((time.time() if now is None else now) // 3600)
    return [_bucket(profile_id, h) for h in range(hour - WINDOW_HOURS + 1, hour + 1)]


def last_key(profile_id: str) -> str:
    return _last(profile_id)


def live_features(sums, raw_last: dict[bytes, bytes] | None) -> LiveFeatures:
    """Counters from (field, total over the window) pairs and the last-ad hash."""
    totals = dict.fromkeys((*METRICS, "post_ad_abandons"), 0)
    by_category: dict[str, dict[str, int]] = {}
    for field, n in sums:
        metric, _, category = field.decode().partition("|")
        if category:
            per = by_category.setdefault(category, dict.fromkeys(METRICS, 0))
            per[metric] = per.get(metric, 0) + int(n)
        else:
            totals[metric] = totals.get(metric, 0) + int(n)
    last_ad = None
    if raw_last:
        last_ad = LastAd(campaign_id=raw_last[b"campaign_id"].decode(),
                         creative_id=raw_last[b"creative_id"].decode(),
                         ts=float(raw_last[b"ts"]))
    return LiveFeatures(window_hours=WINDOW_HOURS, by_category=by_category, last_ad=last_ad,
                        **totals)
