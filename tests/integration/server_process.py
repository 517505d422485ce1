"""Run ``adtier serve`` as a real process (own data dir, embedded stores) for fault tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, data_dir: Path, *serve_args: str, redis_url: str = "", **env: str):
        """``serve_args`` go after ``adtier serve``; ``redis_url``: an external Valkey instead
        of the embedded one."""
        self.data_dir = data_dir
        self.serve_args = serve_args
        self.redis_url = redis_url
        self.port = free_port()
        self.admin_key = "adt_admin_" + uuid.uuid4().hex
        self.extra_env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0, **env: str) -> "ServerProcess":
        environ = {**os.environ, "ADTIER_DATA_DIR": str(self.data_dir),
                   "ADTIER_ADMIN_KEY": self.admin_key, "ADTIER_LOG_LEVEL": "warning",
                   "ADTIER_FLUSH_MAX_SECONDS": "0.2", **self.extra_env, **env}
        environ.pop("ADTIER_CLICKHOUSE_URL", None)  # these tests are about the embedded stores
        environ.pop("ADTIER_REDIS_URL", None)
        if self.redis_url:
            environ["ADTIER_REDIS_URL"] = self.redis_url
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "adtier", "serve", "--port", str(self.port), *self.serve_args],
            env=environ, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited at start:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    def new_key(self, role: str = "ingest") -> dict[str, str]:
        answer = httpx.post(f"{self.url}/v1/keys", json={"role": role}, headers=self.admin(), timeout=30)
        answer.raise_for_status()
        return {"Authorization": f"Bearer {answer.json()['key']}"}

    def kill_group(self) -> None:
        """SIGKILL the server and everything it started (worker, Valkey) at once."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def group_alive(pgid: int) -> list[int]:
    """Pids still alive in a process group."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            alive.append(int(entry.name))
    return alive
