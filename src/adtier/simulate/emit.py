"""Turn a day block's arrays into what leaves the simulator: Arrow tables shaped like the
``ad_events``/``content_events`` tables (direct mode), JSON events as the API takes them, and
VAST pixel query strings. All column-wise (NumPy + Arrow compute), no loop per event.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from adtier.simulate import params as P
from adtier.simulate.ids import arrow_strings, hex_ids, uuid_text
from adtier.simulate.sessions import AdArrays, ContentArrays, DayBlock
from adtier.simulate.world import World

__all__ = ["SOURCE", "KEY_ID", "ad_table", "content_table", "ad_json", "content_json",
           "block_json", "pixel_queries", "pixel_mask", "VAST_NAMES"]

SOURCE = "simulate"
KEY_ID = "simulate"
_TS = pa.timestamp("ms", tz="UTC")
# latency of a simulated delivery (direct mode's provenance columns): sent 1 s after the event,
# received 0.2 s later
_SENT_AFTER_MS = 1_000
_RECEIVED_AFTER_MS = 1_200
_TYPES = pa.array(P.EVENT_TYPES)
_DEVICES = pa.array(P.DEVICES)
_COUNTRIES = pa.array(P.COUNTRIES)
_BREAKS = pa.array(["mid", "pre"])
# our event type -> the VAST tracking event name a pixel carries
VAST_NAMES = {"impression": "impression", "viewable_impression": "viewable", "start": "start",
              "first_quartile": "firstQuartile", "midpoint": "midpoint",
              "third_quartile": "thirdQuartile", "complete": "complete", "skip": "skip",
              "click": "click", "pause": "pause", "resume": "resume", "mute": "mute",
              "unmute": "unmute", "error": "error"}
_VAST = pa.array([VAST_NAMES.get(t, "") for t in P.EVENT_TYPES])


def _dict(indices: np.ndarray, values: pa.Array | list[str]) -> pa.DictionaryArray:
    values = values if isinstance(values, pa.Array) else pa.array(values)
    return pa.DictionaryArray.from_arrays(pa.array(np.asarray(indices, np.int32)), values)


def _ts(ms: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(ms, np.int64), _TS)


def _uuid_binary(raw: np.ndarray) -> pa.Array:
    raw = np.ascontiguousarray(raw)
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(raw), [None, pa.py_buffer(raw)])


def _common(world: World, ids: np.ndarray, types: np.ndarray, ts: np.ndarray,
            profile: np.ndarray, session: np.ndarray, device: np.ndarray,
            batch_id: str) -> dict[str, pa.Array]:
    n = len(types)
    return {
        "event_id": _uuid_binary(ids),
        "type": _dict(types, _TYPES),
        "ts": _ts(ts),
        "client_ts": _ts(ts),
        "sent_at": _ts(ts + _SENT_AFTER_MS),
        "received_at": _ts(ts + _RECEIVED_AFTER_MS),
        "clock_skew_ms": pa.array(np.zeros(n, np.int64)),
        "account_id": arrow_strings(world.account_id_matrix(world.account[profile])),
        "profile_id": arrow_strings(world.profile_id_matrix(profile)),
        "session_id": arrow_strings(hex_ids(session)),
        "device": _dict(device, _DEVICES),
        "country": _dict(world.country[profile], _COUNTRIES),
        "source": _dict(np.zeros(n), [SOURCE]),
        "batch_id": _dict(np.zeros(n), [batch_id]),
        "key_id": _dict(np.zeros(n), [KEY_ID]),
    }


def ad_table(world: World, block: DayBlock, batch_id: str) -> pa.Table:
    a: AdArrays = block.ad
    cat = world.catalog
    cols = _common(world, block.event_ids[: len(a)], a.type, a.ts, a.profile, a.session,
                   a.device, batch_id)
    cols.update({
        "campaign_id": _dict(a.campaign, cat.campaign_ids),
        "creative_id": _dict(a.creative, cat.creative_ids),
        "ad_serving_id": arrow_strings(hex_ids(a.ad_serving)),
        "pod_id": arrow_strings(hex_ids(a.pod)),
        "pod_position": pa.array(a.pod_position.astype(np.uint8)),
        "break_position": _dict(a.break_pre.astype(np.int32), _BREAKS),
        "ad_duration_ms": pa.array(a.duration.astype(np.uint32)),
        "ad_playhead_ms": pa.array(a.playhead.astype(np.uint32)),
        "content_id": _dict(a.content, cat.content_ids),
        "error_code": pa.array(a.error_code.astype(np.uint16), mask=a.error_code == 0),
    })
    return pa.table(cols)


def content_table(world: World, block: DayBlock, batch_id: str) -> pa.Table:
    c: ContentArrays = block.content
    cols = _common(world, block.event_ids[len(block.ad):], c.type, c.ts, c.profile, c.session,
                   c.device, batch_id)
    absent = c.position < 0
    cols.update({
        "content_id": _dict(c.content, world.catalog.content_ids),
        "position_ms": pa.array(c.position.clip(0).astype(np.uint32), mask=absent),
        "watched_ms": pa.array(c.watched.clip(0).astype(np.uint32), mask=absent),
        "value": pa.array(c.value, mask=c.value == 0),
    })
    return pa.table(cols)


# ---- JSON, as a player sends it --------------------------------------------------------------

def _text(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(np.asarray(values, np.int64)), pa.string())


def _take(dictionary: pa.Array | list[str], indices: np.ndarray) -> pa.Array:
    dictionary = dictionary if isinstance(dictionary, pa.Array) else pa.array(dictionary)
    return pc.take(dictionary, pa.array(np.asarray(indices, np.int32)))


def _join(*parts: object) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _json_common(world: World, ids: np.ndarray, types: np.ndarray, ts: np.ndarray,
                 profile: np.ndarray, session: np.ndarray, device: np.ndarray) -> list[object]:
    return [
        '{"type":"', _take(_TYPES, types),
        '","event_id":"', arrow_strings(uuid_text(ids)),
        '","ts":', _text(ts),
        ',"account_id":"', arrow_strings(world.account_id_matrix(world.account[profile])),
        '","profile_id":"', arrow_strings(world.profile_id_matrix(profile)),
        '","session_id":"', arrow_strings(hex_ids(session)),
        '","device":"', _take(_DEVICES, device),
        '","country":"', _take(_COUNTRIES, world.country[profile]),
    ]


def ad_json(world: World, block: DayBlock, mask: np.ndarray | None = None) -> pa.Array:
    """One JSON object per ad event, each followed by a comma (ready to join into a batch)."""
    a = block.ad
    ids = block.event_ids[: len(a)]
    sel = np.arange(len(a)) if mask is None else np.nonzero(mask)[0]
    cat = world.catalog
    err = a.error_code[sel]
    parts = _json_common(world, ids[sel], a.type[sel], a.ts[sel], a.profile[sel],
                         a.session[sel], a.device[sel])
    parts += [
        '","campaign_id":"', _take(cat.campaign_ids, a.campaign[sel]),
        '","creative_id":"', _take(cat.creative_ids, a.creative[sel]),
        '","ad_serving_id":"', arrow_strings(hex_ids(a.ad_serving[sel])),
        '","pod_id":"', arrow_strings(hex_ids(a.pod[sel])),
        '","pod_position":', _text(a.pod_position[sel]),
        ',"break_position":"', _take(_BREAKS, a.break_pre[sel].astype(np.int32)),
        '","ad_duration_ms":', _text(a.duration[sel]),
        ',"ad_playhead_ms":', _text(a.playhead[sel]),
        ',"content_id":"', _take(cat.content_ids, a.content[sel]),
        '"', pc.if_else(pa.array(err > 0), _join(',"error_code":', _text(err)), ""),
        "},",
    ]
    return _join(*parts)


def content_json(world: World, block: DayBlock) -> pa.Array:
    c = block.content
    ids = block.event_ids[len(block.ad):]
    rating = pa.array(c.position < 0)
    parts = _json_common(world, ids, c.type, c.ts, c.profile, c.session, c.device)
    parts += [
        '","content_id":"', _take(world.catalog.content_ids, c.content), '"',
        pc.if_else(rating, _join(',"value":', _text(c.value)),
                   _join(',"position_ms":', _text(c.position.clip(0)),
                         ',"watched_ms":', _text(c.watched.clip(0)))),
        "},",
    ]
    return _join(*parts)


def pixel_mask(block: DayBlock, permille: int) -> np.ndarray:
    """Ad events of the ad plays a player reports by VAST pixels rather than in batches: a
    stable share of ad plays, chosen by their [ADSERVINGID]."""
    return (block.ad.ad_serving % np.uint64(1000)) < np.uint64(permille)


def block_json(world: World, block: DayBlock,
               pixel_permille: int = 0) -> tuple[pa.Array, np.ndarray]:
    """The block's batch events as JSON (trailing commas), in player order - by session, then
    time - and the ad-event mask of those left to pixels."""
    pixels = pixel_mask(block, pixel_permille) if pixel_permille else np.zeros(len(block.ad), bool)
    ads = ad_json(world, block, ~pixels)
    views = content_json(world, block)
    a, c = block.ad, block.content
    session = np.r_[a.session[~pixels], c.session]
    ts = np.r_[a.ts[~pixels], c.ts]
    order = np.lexsort((ts, session))
    rows = pa.concat_arrays([ads, views]) if len(ads) or len(views) else ads
    return pc.take(rows, pa.array(order)), pixels


def pixel_queries(world: World, block: DayBlock, mask: np.ndarray) -> pa.Array:
    """Query strings (without ``k=``) of the pixels for the masked ad events, in time order."""
    a = block.ad
    sel = np.nonzero(mask)[0]
    sel = sel[np.lexsort((a.ts[sel], a.ad_serving[sel]))]
    cat = world.catalog
    err = a.error_code[sel]
    prof = a.profile[sel]
    return _join(
        "e=", _take(_VAST, a.type[sel]),
        "&asid=", arrow_strings(hex_ids(a.ad_serving[sel])),
        "&cmp=", _take(cat.campaign_ids, a.campaign[sel]),
        "&cr=", _take(cat.creative_ids, a.creative[sel]),
        "&acc=", arrow_strings(world.account_id_matrix(world.account[prof])),
        "&pf=", arrow_strings(world.profile_id_matrix(prof)),
        "&ses=", arrow_strings(hex_ids(a.session[sel])),
        "&pod=", arrow_strings(hex_ids(a.pod[sel])),
        "&pos=", _text(a.pod_position[sel]),
        "&bp=", _take(pa.array(["midroll", "preroll"]), a.break_pre[sel].astype(np.int32)),
        "&dur=", _text(a.duration[sel]),
        "&ph=", _text(a.playhead[sel]),
        "&c=", _take(cat.content_ids, a.content[sel]),
        "&dev=", _take(_DEVICES, a.device[sel]),
        "&cc=", _take(_COUNTRIES, world.country[prof]),
        "&ts=", _text(a.ts[sel]),
        "&cb=", _text(a.ad_serving[sel] % np.uint64(100_000_000)),
        pc.if_else(pa.array(err > 0), _join("&err=", _text(err)), ""),
    )
