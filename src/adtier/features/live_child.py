"""The live counters' child process: reads frames on its stdin, applies counters to Valkey.

Started by ``features.live_feed.LiveFeed`` as ``python -m adtier.features.live_child`` (a fresh
interpreter: the serving process holds chDB and threads, so it is never forked). It has no
ClickHouse: the parent loads the look-ups (campaign categories, exclusion sets) and sends them.

A frame is a header (``HEADER``: kind, flush time, two lengths) and two payloads:

- ``CONFIG``: msgpack ``{redis_url, log_level, log_json}``, always the first frame (the URL may
  hold a password, so it is not on the command line);
- ``LOOKUPS``: msgpack ``features.live.Lookups``, the second payload empty;
- ``ROWS``: a stored flush's ad rows and content rows, as the flusher inserted them
  (JSONEachRow), with the time of the flush (the counting window is the flush's).

Once configured (its imports done) it writes ``READY`` on stdout, so a server can wait for it
before it starts answering. The child ends at end of input (the parent closed the pipe or died).
"""

from __future__ import annotations

import signal
import struct
import sys
from typing import BinaryIO

import msgspec

HEADER = struct.Struct("<cdQQ")
CONFIG, LOOKUPS, ROWS = b"c", b"l", b"r"
READY = b"!"  # written once on stdout, when configured
# A ROWS frame is counted in slices of whole lines: a 100,000-row flush is ~47 MB of ad rows,
# and decoded all at once its rows are as many MB again of Python objects (the child's peak).
# Counting is additive and the script keeps the newest last ad and session mark, so slices
# count what the whole block counts; each slice is one pipeline (one fsync), hence large ones.
ROWS_SLICE_BYTES = 8 * 1024 * 1024
# The child applies a flush as the flusher thread did: its Lua calls in one pipeline. Calls of
# 1,000 values one at a time let another client's command in between (65-73 ms p99 against
# 213-253 ms behind a pipelined 100,000-row update, on a loaded machine), but with `appendfsync
# always` each call is a write that Valkey fsyncs: a catch-up became hundreds of fsyncs on
# Valkey's thread (0.47-0.50 cores in the bench's pixel phase, pixels 0.24x the ceiling).
# 10,000-value calls one at a time were no better for the other client (281 ms).

__all__ = ["HEADER", "CONFIG", "LOOKUPS", "ROWS", "READY", "Config", "main"]


class Config(msgspec.Struct):
    redis_url: str
    log_level: str = "info"
    log_json: bool | None = None


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    data = stream.read(n) if n else b""
    return data if len(data) == n else None


def frames(stream: BinaryIO):
    """(kind, flush time, payload, payload) until end of input (a cut frame ends it too)."""
    while True:
        head = _read_exactly(stream, HEADER.size)
        if head is None:
            return
        kind, at, n1, n2 = HEADER.unpack(head)
        first = _read_exactly(stream, n1)
        second = _read_exactly(stream, n2) if first is not None else None
        if second is None:
            return
        yield kind, at, first, second


def _count(counters, at: float, ad: bytes, content: bytes) -> None:
    """A flush's rows, decoded and counted slice by slice; the stops go with the last slice
    (after every ad row of the flush, as ``update`` orders them)."""
    from adtier.features.live import parse_ad_rows, parse_stop_rows
    from adtier.ingest.lines import line_slices

    stops = [stop for part in line_slices(content, ROWS_SLICE_BYTES)
             for stop in parse_stop_rows(bytes(part))]
    slices = list(line_slices(ad, ROWS_SLICE_BYTES)) or [memoryview(b"")]  # views: no copy
    for i, part in enumerate(slices):
        last = i == len(slices) - 1
        counters.update(parse_ad_rows(bytes(part)), now=at, stops=stops if last else None)


def main(stream: BinaryIO | None = None, ready: BinaryIO | None = None) -> int:
    from adtier.features.live import LiveCounters, Lookups
    from adtier.logs import configure_logging, get_logger
    from adtier.store.valkey import connect_redis

    # Ctrl-C, and a service manager's SIGTERM, reach the whole process group: the child ends
    # with the parent's pipe instead, after counting what the parent's last flushes sent
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if stream is None:
        stream, ready = sys.stdin.buffer, sys.stdout.buffer
    counters: LiveCounters | None = None
    log = get_logger("adtier.features.live_child")
    decode_lookups = msgspec.msgpack.Decoder(Lookups).decode
    for kind, at, first, second in frames(stream):
        if kind == CONFIG:
            config = msgspec.msgpack.decode(first, type=Config)
            configure_logging(config.log_level, config.log_json)
            # the parent refreshes the look-ups; this side never asks ClickHouse
            counters = LiveCounters(connect_redis(config.redis_url), None,
                                    refresh_s=float("inf"))
            if ready is not None:  # imports done: the parent may stop waiting for us
                ready.write(READY)
                ready.flush()
        elif counters is None:
            log.error("live_counters_child_unconfigured")
            return 2
        elif kind == LOOKUPS:
            try:
                counters.use(decode_lookups(first))
            except msgspec.DecodeError:  # keep the previous ones rather than die on every start
                log.exception("live_counters_lookups_unreadable")
        elif kind == ROWS:
            try:
                _count(counters, at, first, second)
            except Exception:  # noqa: BLE001 - a bad flush loses its counters, not the child
                log.exception("live_counters_update_failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
