"""Headless locust run against adtier, then a summary table.

    uv run --group bench python -m loadtest.run -t 2m -u 40                 # own server
    uv run --group bench python -m loadtest.run --url http://host:8000 -t 5m -u 200

With ``--url`` the keys come from the environment (``ADTIER_INGEST_KEY``,
``ADTIER_ADVERTISER_KEY``, ``ADTIER_RECS_KEY``; with ``ADTIER_ADMIN_KEY`` alone the missing
keys are created through ``POST /v1/keys``). Without ``--url`` it starts ``python -m adtier
serve`` on embedded stores in a temporary data dir, loads a small catalog and creates the
keys itself. The table: requests/s, failures and p50/p95/p99 per endpoint (locust's stats
CSV), then server-side figures from ``/metrics``: events accepted, events stored (sum of
``adtier_flush_rows_total``) and the buffer lag.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"
ADVERTISER = "adv-load"
CAMPAIGNS = [f"cmp-{i}" for i in range(24)]

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def parse_metrics(text: str) -> dict[str, dict[str, float]]:
    """Prometheus text -> {name: {labels: value}}."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m:
            out.setdefault(m.group(1), {})[m.group(2) or ""] = float(m.group(3))
    return out


def server_figures(url: str) -> dict[str, float]:
    """Events accepted, stored (rows flushed into ad_events + content_events) and lag."""
    m = parse_metrics(httpx.get(f"{url}/metrics", timeout=10).text)

    def total(name: str, only: tuple[str, ...] = ()) -> float:
        return sum(v for labels, v in m.get(name, {}).items()
                   if not only or any(f'"{t}"' in labels for t in only))

    return {
        "accepted": total("adtier_events_accepted_total"),
        "stored": total("adtier_flush_rows_total", ("ad_events", "content_events")),
        "flushed_rows_all_tables": total("adtier_flush_rows_total"),
        "lag_events": total("adtier_buffer_lag_events"),
    }


def wait_stored(url: str, timeout: float = 30.0) -> dict[str, float]:
    """Wait until every accepted event is flushed (or the timeout): the last figures."""
    deadline = time.monotonic() + timeout
    while True:
        f = server_figures(url)
        if (f["stored"] >= f["accepted"] and f["lag_events"] == 0) or time.monotonic() > deadline:
            return f
        time.sleep(0.3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path, admin_key: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "ADTIER_DATA_DIR": str(data_dir), "ADTIER_ADMIN_KEY": admin_key,
           "ADTIER_LOG_LEVEL": "warning"}
    env.pop("ADTIER_CLICKHOUSE_URL", None)
    env.pop("ADTIER_REDIS_URL", None)
    log_path = data_dir.parent / "server.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "adtier", "serve", "--port", str(port)],
                                env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"adtier serve exited ({proc.returncode}); see {log_path}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError("adtier serve not ready")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def seed_catalog(url: str, admin_key: str) -> None:
    """One advertiser owning the campaigns the Player's events name."""
    h = {"Authorization": f"Bearer {admin_key}"}
    r = httpx.put(f"{url}/v1/catalog/advertisers", headers=h, timeout=30,
                  json={"items": [{"advertiser_id": ADVERTISER, "name": "Load test"}]})
    r.raise_for_status()
    items = [{"campaign_id": c, "advertiser_id": ADVERTISER, "name": c, "ad_category": "IAB2",
              "start_date": "2025-01-01", "end_date": "2035-12-31", "frequency_cap": 0,
              "holdout_percent": 0.0} for c in CAMPAIGNS]
    httpx.put(f"{url}/v1/catalog/campaigns", headers=h, json={"items": items},
              timeout=30).raise_for_status()


def create_key(url: str, admin_key: str, role: str, advertiser_id: str = "") -> str:
    body = {"role": role, "name": f"locust-{role}"}
    if advertiser_id:
        body["advertiser_id"] = advertiser_id
    r = httpx.post(f"{url}/v1/keys", json=body, timeout=30,
                   headers={"Authorization": f"Bearer {admin_key}"})
    r.raise_for_status()
    return r.json()["key"]


def locust_env(url: str, admin_key: str, advertiser_id: str = ADVERTISER) -> dict[str, str]:
    """Keys for the three user classes: from the environment, else created with the admin key."""
    env = {}
    for var, role in (("ADTIER_INGEST_KEY", "ingest"), ("ADTIER_ADVERTISER_KEY", "advertiser"),
                      ("ADTIER_RECS_KEY", "recs")):
        env[var] = os.environ.get(var) or (
            create_key(url, admin_key, role, advertiser_id if role == "advertiser" else "")
            if admin_key else "")
    if admin_key:
        env["ADTIER_ADMIN_KEY"] = admin_key
        env.setdefault("ADTIER_ADVERTISER_ID", os.environ.get("ADTIER_ADVERTISER_ID", advertiser_id))
    return env


def run_locust(url: str, env: dict[str, str], csv_prefix: Path, users: int, spawn_rate: float,
               run_time: str, extra: list[str] | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
           "-u", str(users), "-r", str(spawn_rate), "-t", run_time, "--host", url,
           "--only-summary", "--csv", str(csv_prefix), "--stop-timeout", "10",
           "--loglevel", "WARNING", *(extra or [])]
    return subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True,
                          check=False)


def read_stats(csv_prefix: Path) -> list[dict[str, str]]:
    with open(f"{csv_prefix}_stats.csv", newline="") as f:
        return list(csv.DictReader(f))


def summary_table(rows: list[dict[str, str]], figures: dict[str, float] | None = None,
                  sent: dict | None = None) -> str:
    head = (f"{'method':<6} {'endpoint':<32} {'requests':>9} {'fail':>5} {'req/s':>8} "
            f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        name = r["Name"] if r["Name"] != "Aggregated" else "(all)"
        if r["Name"] == "Aggregated":
            lines.append("-" * len(head))
        lines.append(f"{r['Type']:<6} {name:<32} {int(r['Request Count']):>9,} "
                     f"{int(r['Failure Count']):>5} {float(r['Requests/s']):>8.1f} "
                     f"{r['50%']:>7} {r['95%']:>7} {r['99%']:>7}")
    if figures:
        lines += ["", "server (/metrics):",
                  f"  events accepted          {figures['accepted']:>12,.0f}",
                  (f"  events stored            {figures['stored']:>12,.0f}"
                   "   (adtier_flush_rows_total, ad_events + content_events)"),
                  f"  rows flushed, all tables {figures['flushed_rows_all_tables']:>12,.0f}",
                  (f"  buffer lag (events)      {figures['lag_events']:>12,.0f}"
                   "   (adtier_buffer_lag_events, after the drain wait)")]
    if sent:
        lines += ["", ("player (acknowledged first sends): "
                       f"{sent['batches']:,} batches, {sent['events']:,} events "
                       f"({sent['accepted']:,} accepted), {sent['pixels']:,} pixels, "
                       f"{sent['retries']:,} deliberate retries")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default=None, help="target server (default: start one)")
    p.add_argument("-t", "--run-time", default="1m", help="locust run time, e.g. 30s, 5m")
    p.add_argument("-u", "--users", type=int, default=20)
    p.add_argument("-r", "--spawn-rate", type=float, default=10)
    p.add_argument("--out", default=None, help="directory for locust CSVs (default: temp)")
    args = p.parse_args(argv)

    work = Path(args.out or tempfile.mkdtemp(prefix="adtier-locust-"))
    work.mkdir(parents=True, exist_ok=True)
    proc = None
    url = args.url
    admin = os.environ.get("ADTIER_ADMIN_KEY", "")
    try:
        if url is None:
            admin = "adt_admin_" + secrets.token_hex(16)
            proc, url = start_server(work / "data", admin)
            seed_catalog(url, admin)
            os.environ.setdefault("ADTIER_LOCUST_ALLOW_404", "1")  # fresh server: sparse data
            print(f"started adtier at {url} (data in {work / 'data'})", file=sys.stderr)
        env = locust_env(url, admin)
        env["ADTIER_LOCUST_SENT_FILE"] = str(work / "sent.json")
        print(f"locust: {args.users} users for {args.run_time} against {url}", file=sys.stderr)
        done = run_locust(url, env, work / "locust", args.users, args.spawn_rate, args.run_time)
        if not Path(f"{work / 'locust'}_stats.csv").exists():
            print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
            return done.returncode or 1
        figures = wait_stored(url)
        sent_path = work / "sent.json"
        sent = json.loads(sent_path.read_text()) if sent_path.exists() else None
        print(summary_table(read_stats(work / "locust"), figures, sent))
        print(f"\nlocust exit code {done.returncode}; CSVs in {work}", file=sys.stderr)
        return done.returncode
    finally:
        if proc is not None:
            stop_server(proc)


if __name__ == "__main__":
    sys.exit(main())
