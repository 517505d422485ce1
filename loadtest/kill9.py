"""kill -9 under load: acknowledged events are all stored, none twice.

    uv run --group bench python -m loadtest.kill9 --cycles 5 --seconds 20

Starts ``adtier serve`` on embedded stores, keeps several senders posting batches of new
events, and every ``--seconds`` SIGKILLs the server's whole process group (server, worker and
Valkey at once), then starts it again on the same data dir while the senders retry. At the
end it stops the server cleanly and reads ClickHouse (chDB, the same data dir): every event
whose batch was answered 200 must be stored once. Prints acknowledged / stored / lost /
duplicated, and exits 1 if any was lost or duplicated.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from loadtest.run import create_key, start_server, stop_server


def _batch(n: int) -> tuple[list[str], dict]:
    now = time.time_ns() // 1_000_000
    ids = [str(uuid.uuid4()) for _ in range(n)]
    events = [{"type": "impression", "event_id": i, "ts": now, "account_id": "acc-k9",
               "profile_id": f"pf-{k % 500}", "device": "tv", "country": "US",
               "campaign_id": "cmp-k9", "creative_id": "cr-1", "ad_serving_id": f"as-{i}"}
              for k, i in enumerate(ids)]
    return ids, {"sent_at": now, "events": events}


class Senders:
    def __init__(self, threads: int, per_batch: int):
        self.url = ""
        self.key = ""
        self.per_batch = per_batch
        self.acknowledged: set[str] = set()
        self.failed_requests = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                ids, body = _batch(self.per_batch)
                try:
                    answer = client.post(f"{self.url}/v1/events", json=body,
                                         headers={"Authorization": f"Bearer {self.key}"})
                except httpx.HTTPError:
                    answer = None
                if answer is not None and answer.status_code == 200:
                    assert answer.json()["accepted"] == len(ids), answer.text
                    with self._lock:
                        self.acknowledged.update(ids)
                else:
                    with self._lock:
                        self.failed_requests += 1
                    time.sleep(0.2)  # the server is down or restarting


def stored_ids(data_dir: Path) -> tuple[int, set[str]]:
    from adtier.store import connect

    client = connect(f"chdb://{(data_dir / 'clickhouse').resolve()}")
    rows = client.query("SELECT toString(event_id) FROM ad_events "
                        "WHERE campaign_id = 'cmp-k9'").result_rows
    client.close()
    return len(rows), {r[0] for r in rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=20.0, help="load between kills")
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--per-batch", type=int, default=200)
    args = parser.parse_args(argv)
    admin_key = "adt_k9_" + secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="adtier-kill9-") as tmp:
        data_dir = Path(tmp) / "data"
        proc, url = start_server(data_dir, admin_key)
        senders = Senders(args.senders, args.per_batch)
        senders.url, senders.key = url, create_key(url, admin_key, "ingest")
        senders.start()
        for cycle in range(args.cycles):
            time.sleep(args.seconds)
            os.killpg(proc.pid, signal.SIGKILL)  # server, worker and Valkey, mid-request
            proc.wait(10)
            print(f"cycle {cycle + 1}: killed with {len(senders.acknowledged)} acknowledged",
                  flush=True)
            proc, senders.url = start_server(data_dir, admin_key)
        time.sleep(args.seconds)
        senders.stop()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # until the buffer is empty
            if httpx.get(f"{senders.url}/readyz", timeout=10).json().get("buffer_lag_events") == 0:
                break
            time.sleep(1)
        stop_server(proc)
        rows, stored = stored_ids(data_dir)
    acknowledged = senders.acknowledged
    lost = len(acknowledged - stored)
    duplicated = rows - len(stored)
    print(f"acknowledged {len(acknowledged)}  stored {len(stored & acknowledged)} "
          f"(+{len(stored - acknowledged)} stored whose answer was cut by a kill)  "
          f"lost {lost}  duplicated {duplicated}  failed requests {senders.failed_requests}")
    return 1 if lost or duplicated else 0


if __name__ == "__main__":
    sys.exit(main())
