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
