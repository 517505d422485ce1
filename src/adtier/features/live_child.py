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
  Read and decoded in chunks of lines, then counted in one ``update``.

It imports no numpy, pyarrow, clickhouse-connect or litestar (tests/unit/test_live_child.py):
they were half of its memory.

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
# A ROWS frame is read and decoded in chunks of whole lines: a 100,000-row flush is ~47 MB of
# ad rows, and the whole frame held beside its decoded rows (and a split of its content block)
# was the child's peak. The rows are still counted in one ``update`` (one pipeline): counting
# slice by slice instead repeated each slice's buckets and last ads in Valkey (+1.3-1.5 µs of
# Valkey CPU per event in profile_flush, where every batch has the same 1,000 profiles).
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
    """(kind, flush time, payload, payload) until end of input (a cut frame ends it too); a
    ROWS frame's payloads are its decoded ad rows and stop rows, read chunk by chunk."""
    from adtier.features.live import parse_ad_rows, parse_stop_rows

    while True:
        head = _read_exactly(stream, HEADER.size)
        if head is None:
            return
        kind, at, n1, n2 = HEADER.unpack(head)
        if kind == ROWS:
            first = _decoded(stream, n1, parse_ad_rows)
            second = _decoded(stream, n2, parse_stop_rows) if first is not None else None
        else:
            first = _read_exactly(stream, n1)
            second = _read_exactly(stream, n2) if first is not None else None
        if second is None:
            return
        yield kind, at, first, second


def _decoded(stream: BinaryIO, n: int, parse) -> list | Exception | None:
    """``parse`` over the next ``n`` bytes, a chunk of whole lines at a time (None if cut).
    Rows that do not parse are the error, answered once all ``n`` bytes are read (the next
    frame starts after them)."""
    out: list | Exception = []
    rest = b""
    while n:
        data = stream.read(min(ROWS_SLICE_BYTES, n))
        if not data:
            return None
        n -= len(data)
        data = rest + data if rest else data
        end = data.rfind(b"\n") + 1 if n else len(data)  # a line cut by the chunk waits
        rest = data[end:]
        if end and not isinstance(out, Exception):
            try:
                out += parse(data[:end] if rest else data)
            except Exception as err:  # noqa: BLE001 - the frame's counters, not the child
                out = err
    return out


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
            if isinstance(first, Exception) or isinstance(second, Exception):
                bad = first if isinstance(first, Exception) else second
                log.error("live_counters_update_failed", error=repr(bad)[:300])
                continue
            try:
                counters.update(first, now=at, stops=second)
            except Exception:  # noqa: BLE001 - a bad flush loses its counters, not the child
                log.exception("live_counters_update_failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
