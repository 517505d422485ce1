"""Several migrators on one store at once (a fleet starting): the Valkey lease lets one run
each migration, so a backfill is counted once; a dead holder's lease expires; a lease held too
long is a clear error.

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
    lock = migration_lock(redis.Redis.from_url(url), ttl_s=0.6) if locked else None
    start.wait()
    applied[name] = [m.version for m in apply_migrations(client, directory, lock=lock)]

threads = [threading.Thread(target=migrate, args=(n,)) for n in ("a", "b")]
for t in threads: t.start()
for t in threads: t.join()
rows = connect(dsn).query("SELECT count() FROM backfilled").result_rows[0][0]
print(json.dumps({"applied": sorted(applied.values()), "rows": rows}))
"""

# the backfill sleeps 0.5 s a row: longer than the 0.6 s lease, so only renewal keeps it
_MIGRATION = """CREATE TABLE IF NOT EXISTS backfilled (n UInt64) ENGINE = MergeTree ORDER BY n;
INSERT INTO backfilled SELECT number + sleepEachRow(0.5) FROM numbers(3)
SETTINGS max_block_size = 1;
"""


def _race(tmp_path: Path, url: str, locked: bool) -> dict:
    directory = tmp_path / "sql"
    directory.mkdir()
    (directory / "0001_backfill.sql").write_text(_MIGRATION)
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    out = subprocess.run([sys.executable, "-c", _RACE, dsn, str(directory), url,
                          "1" if locked else "0"],
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
