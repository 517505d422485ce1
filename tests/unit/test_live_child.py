"""The live counters' child imports only what counting needs (msgspec, redis, structlog and its
own modules): numpy, pyarrow, clickhouse-connect or litestar would cost it tens of MiB of RSS
in a process that never uses them (docs/performance_ingest.md, Memory)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("numpy", "pyarrow", "clickhouse_connect", "litestar", "chdb", "granian", "pandas")

# The child configured for real (its imports run in ``main``): a CONFIG frame, then end of
# input. Nothing is sent to Valkey, so the URL needs no server.
_SCRIPT = """
import io, json, sys
import msgspec
from adtier.features import live_child as c
config = msgspec.msgpack.encode({"redis_url": "redis://127.0.0.1:1", "log_level": "warning"})
stream = io.BytesIO(c.HEADER.pack(c.CONFIG, 0.0, len(config), 0) + config)
ready = io.BytesIO()
assert c.main(stream, ready) == 0 and ready.getvalue() == c.READY
print(json.dumps(sorted(sys.modules)))
"""


def test_child_imports_no_heavy_packages():
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    modules = json.loads(out.strip().splitlines()[-1])
    heavy = sorted({m.split(".")[0] for m in modules} & set(HEAVY))
    assert heavy == [], f"the live counters' child imports {heavy}"
    assert "adtier.features.live" in modules  # the counting code did load


def _rows_frame(ad: bytes, content: bytes) -> bytes:
    from adtier.features import live_child as c
    return c.HEADER.pack(c.ROWS, 1.0, len(ad), len(content)) + ad + content


def test_a_rows_frame_read_in_chunks_decodes_what_the_whole_block_does(monkeypatch):
    """Chunks far smaller than a line: lines cut by a chunk are decoded whole; a frame whose
    rows do not parse answers the error and the next frame is read from its start; a cut frame
    ends the input uncounted."""
    import io

    from adtier.features import live_child as c
    from adtier.features.live import parse_ad_rows, parse_stop_rows

    monkeypatch.setattr(c, "ROWS_SLICE_BYTES", 37)
    ad = b"".join(b'{"type":"impression","ts":%d.5,"profile_id":"p%d","session_id":"s%d"}\n'
                  % (i, i, i) for i in range(50))
    content = b"".join(b'{"type":"%s","ts":%d.5,"profile_id":"p%d","session_id":"s%d"}\n'
                       % (b"content_stop" if i % 3 == 0 else b"content_start", i, i, i)
                       for i in range(50))
    frame = _rows_frame(ad, content)
    got = list(c.frames(io.BytesIO(frame + _rows_frame(b"garbage\n", b"") + frame
                                   + frame[:-5])))
    assert len(got) == 3
    assert got[0][2] == parse_ad_rows(ad) and len(got[0][2]) == 50
    assert got[0][3] == parse_stop_rows(content) and len(got[0][3]) == 17
    assert isinstance(got[1][2], Exception)
    assert got[2][2:] == got[0][2:]
