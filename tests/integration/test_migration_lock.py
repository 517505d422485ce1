"""Several migrators on one store at once (a fleet starting): the Valkey lease lets one run
each migration, so a backfill is counted once; a dead holder's lease expires; a lease held too
long is a clear error; a holder whose lease could not be renewed stops before its next
statement and records nothing.

The race runs in a child process with its own chDB path (one process opens one chDB), two
threads migrating the same store from a migration whose backfill takes ~1.5 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adtier.store.migrate import apply_migrations
from adtier.store.migration_lock import LOCK_KEY, MigrationLockTimeout, migration_lock

_RACE = r"""
import json, sys, threading
from pathlib import Path
import redis
from adtier.store import connect
from adtier.store.migrate import apply_migrations
from adtier.store.migration_lock import migration_lock

dsn, directory, url, locked = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
applied, start = {}, threading.Barrier(2)

def migrate(name):
    client = connect(dsn)
    lock = migration_lock(redis.Redis.from_url(url), ttl_s=2.0) if locked else None
    start.wait()
    applied[name] = [m.version for m in apply_migrations(client, directory, lock=lock)]

threads = [threading.Thread(target=migrate, args=(n,)) for n in ("a", "b")]
for t in threads: t.start()
for t in threads: t.join()
rows = connect(dsn).query("SELECT count() FROM backfilled").result_rows[0][0]
print(json.dumps({"applied": sorted(applied.values()), "rows": rows}))
"""

# the backfill sleeps 1 s a row: longer than the 2 s lease, so only renewal keeps it
_MIGRATION = """CREATE TABLE IF NOT EXISTS backfilled (n UInt64) ENGINE = MergeTree ORDER BY n;
INSERT INTO backfilled SELECT number + sleepEachRow(1) FROM numbers(3)
SETTINGS max_block_size = 1;
"""


_LOST = r"""
import json, sys, threading, time
from pathlib import Path
import redis
from adtier.store import connect
from adtier.store.migrate import apply_migrations
from adtier.store.migration_lock import LOCK_KEY, MigrationLeaseLost, migration_lock

dsn, directory, url = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
valkey = redis.Redis.from_url(url)
def lose_it():  # another node's doing, or Valkey losing the key: the next renewal fails
    while not valkey.exists(LOCK_KEY):
        time.sleep(0.01)
    time.sleep(0.1)
    valkey.delete(LOCK_KEY)

threading.Thread(target=lose_it, daemon=True).start()
try:
    apply_migrations(connect(dsn), directory, lock=migration_lock(valkey, ttl_s=1.2))
    outcome = "applied"
except MigrationLeaseLost:
    outcome = "stopped"
ledger = connect(dsn).query("SELECT count() FROM schema_migrations").result_rows[0][0]
print(json.dumps({"outcome": outcome, "ledger": ledger}))
"""


def _race(tmp_path: Path, url: str, locked: bool) -> dict:
    directory = tmp_path / "sql"
    directory.mkdir()
    (directory / "0001_backfill.sql").write_text(_MIGRATION)
    return _child(_RACE, tmp_path, directory, url, "1" if locked else "0")


def _child(script: str, tmp_path: Path, directory: Path, *args: str) -> dict:
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    out = subprocess.run([sys.executable, "-c", script, dsn, str(directory), *args],
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_two_migrators_with_the_lease_run_a_backfill_once(tmp_path, valkey, rds):
    got = _race(tmp_path, valkey.url, locked=True)
    assert got == {"applied": [[], [1]], "rows": 3}
    assert not rds.exists(LOCK_KEY)


def test_two_migrators_without_a_lease_double_a_backfill(tmp_path, valkey, rds):
    """What the lease prevents: both read the ledger before either records the migration."""
    got = _race(tmp_path, valkey.url, locked=False)
    assert got == {"applied": [[1], [1]], "rows": 6}


def test_a_dead_holders_lease_expires(ch, rds):
    rds.set(LOCK_KEY, "a-node-that-died", px=700)
    t = time.monotonic()
    assert apply_migrations(ch, lock=migration_lock(rds)) == []  # the session store: up to date
    assert time.monotonic() - t >= 0.5
    assert not rds.exists(LOCK_KEY)


def test_a_lease_held_too_long_is_a_clear_error(ch, rds):
    rds.set(LOCK_KEY, "a-slow-node", px=10_000)
    with pytest.raises(MigrationLockTimeout, match="held the migration lock"):
        apply_migrations(ch, lock=migration_lock(rds, wait_s=0.3))
    assert rds.get(LOCK_KEY) == b"a-slow-node"  # not ours to release


def test_a_holder_that_lost_its_lease_stops_and_records_nothing(tmp_path, valkey, rds):
    directory = tmp_path / "sql"
    directory.mkdir()
    # the lease is lost during the first statement (1.5 s; renewals every 0.4 s): the table,
    # the backfill and the ledger row never happen
    (directory / "0001_backfill.sql").write_text(
        "SELECT sleepEachRow(0.5) FROM numbers(3) SETTINGS max_block_size = 1;\n" + _MIGRATION)
    got = _child(_LOST, tmp_path, directory, valkey.url)
    assert got == {"outcome": "stopped", "ledger": 0}
