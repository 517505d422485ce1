"""CLI failures a person can act on: a sentence and a hint, a traceback only with --debug."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from adtier.runtime import lock_data_dir
from tests.helpers import run_cli
from tests.integration.server_process import free_port

COMMANDS = ("serve", "migrate", "flush", "keys", "simulate", "segments", "export")


def _refused(out: subprocess.CompletedProcess[str], code: int, *phrases: str) -> None:
    assert out.returncode == code, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("adtier: ") and "\n  hint: " in out.stderr, out.stderr
    for phrase in phrases:
        assert phrase in out.stderr, out.stderr


def test_version(tmp_path):
    out = run_cli(tmp_path, "--version")
    assert out.returncode == 0 and out.stdout.startswith("adtier 0.")


def test_help_lists_every_command_with_an_example(tmp_path):
    top = run_cli(tmp_path, "--help").stdout
    for command in COMMANDS:
        assert f"\n  {command} " in top and f"adtier {command} " in top
        sub = run_cli(tmp_path, command, "--help")
        assert sub.returncode == 0 and "example:\n  adtier " + command in sub.stdout


def test_export_refuses_an_unknown_extension(tmp_path):
    out = run_cli(tmp_path / "data", "export", "features", "--out", str(tmp_path / "x.csv"))
    _refused(out, 2, ".parquet", ".arrow", "not .csv")
    assert not (tmp_path / "x.csv").exists()


def test_an_invalid_setting_is_named(tmp_path):
    env = {**os.environ, "ADTIER_PORT": "eighty"}
    out = subprocess.run([sys.executable, "-m", "adtier", "keys", "list"], env=env,
                         capture_output=True, text=True, timeout=60)
    _refused(out, 2, "setting is not valid", "ADTIER_")


@pytest.mark.slow
def test_data_commands_name_the_owner_of_a_busy_data_dir(tmp_path):
    data = tmp_path / "data"
    fd = lock_data_dir(data, "adtier serve on http://127.0.0.1:8123")
    try:
        for args in (("keys", "list"), ("flush", "--once"), ("segments", "restore")):
            _refused(run_cli(data, *args), 1, "in use by adtier serve on http://127.0.0.1:8123",
                     f"pid {os.getpid()}", "HTTP API")
        _refused(run_cli(data, "migrate"), 1, "in use by adtier serve on http://127.0.0.1:8123",
                 "applies new migrations itself when it starts")
        _refused(run_cli(data, "serve", "--port", str(free_port())), 1,
                 "in use by adtier serve on http://127.0.0.1:8123", "--data-dir")
    finally:
        os.close(fd)


@pytest.mark.slow
def test_serve_refuses_a_port_another_server_listens_on(tmp_path):
    # granian's own sockets are SO_REUSEPORT: a second one would share the port silently
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        out = run_cli(tmp_path / "data", "serve", "--port", str(port))
    _refused(out, 1, f"port {port} on 127.0.0.1 is already in use", "--port")
    assert not (tmp_path / "data" / "adtier.lock").exists()  # nothing started


@pytest.mark.slow
def test_store_failures_are_a_sentence_and_debug_shows_the_traceback(tmp_path):
    env = {**os.environ, "ADTIER_CLICKHOUSE_URL": f"http://127.0.0.1:{free_port()}",
           "ADTIER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "ADTIER_LOG_LEVEL": "warning"}
    plain = subprocess.run([sys.executable, "-m", "adtier", "keys", "list"], env=env,
                           capture_output=True, text=True, timeout=120)
    _refused(plain, 1)
    debug = subprocess.run([sys.executable, "-m", "adtier", "--debug", "keys", "list"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr
