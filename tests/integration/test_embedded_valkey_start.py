"""The embedded Valkey's start waits for a live server that answers late (replaying a large AOF:
~6 s per 180 MB of segment sets), instead of failing on the client's read timeout."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import redis

from adtier.embedded_valkey import EmbeddedValkey


def test_start_waits_for_a_server_that_answers_late(tmp_path: Path) -> None:
    server = EmbeddedValkey(tmp_path / "valkey", fsync="no")
    server.start()
    try:
        assert server.process is not None
        pid = server.process.pid
        os.kill(pid, signal.SIGSTOP)  # alive, not answering (as while it replays its AOF)
        resume = threading.Timer(7.0, os.kill, (pid, signal.SIGCONT))
        resume.start()
        t = time.monotonic()
        server._wait_ready(60)  # what start() does once the process runs
        assert time.monotonic() - t >= 6.5  # it waited for the server, past a read timeout
        assert redis.Redis.from_url(server.url).ping()
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
        server.stop()
