"""Migration discovery, statement splitting, checksums and the cluster rewrite (no database
needed; the rewrite's output is parsed by ClickHouse itself, chdb in a subprocess)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adtier.store.cluster import (
    DEDUP_WINDOW_SECONDS,
    ClusterRewriteError,
    cluster_statement,
    validate_cluster,
)
from adtier.store.migrate import (
    Migration,
    MigrationError,
    discover,
    ledger_statement,
    planned_statements,
    sql_dir,
)


def write(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


# ---- discover --------------------------------------------------------------------------------


def test_discover_orders_by_number_and_reads_text(tmp_path: Path) -> None:
    write(tmp_path, {"0002_second.sql": "SELECT 2", "0001_first_one.sql": "SELECT 1",
                     "0010_tenth.sql": "SELECT 10", "README.md": "not a migration",
                     "0003_notes.txt": "ignored"})
    found = discover(tmp_path)
    assert [(m.version, m.name, m.text) for m in found] == [
        (1, "first_one", "SELECT 1"), (2, "second", "SELECT 2"), (10, "tenth", "SELECT 10")]


def test_discover_empty_directory(tmp_path: Path) -> None:
    assert discover(tmp_path) == []


@pytest.mark.parametrize(
    "name", ["1_short.sql", "00001_long.sql", "0001-dash.sql", "0001_Upper.sql", "0001_.sql",
             "0001_with space.sql", "abcd_name.sql", "0001_name.SQL.sql", "0001_name.sql.sql"])
def test_discover_rejects_badly_named_files(tmp_path: Path, name: str) -> None:
    write(tmp_path, {"0001_good.sql": "SELECT 1", name: "SELECT 2"})
    with pytest.raises(MigrationError, match=re.escape(name)):
        discover(tmp_path)


def test_discover_rejects_duplicate_numbers(tmp_path: Path) -> None:
    write(tmp_path, {"0001_a.sql": "SELECT 1", "0001_b.sql": "SELECT 2"})
    with pytest.raises(MigrationError, match="duplicate migration numbers"):
        discover(tmp_path)


# ---- statements ------------------------------------------------------------------------------


def test_statements_drop_comment_lines_and_split_on_semicolons() -> None:
    text = """-- header comment; with a semicolon
CREATE TABLE a
(
    -- an indented comment line
    x UInt8
);

  -- another; comment
CREATE TABLE b (y String);
;
"""
    assert Migration(1, "x", text).statements() == [
        "CREATE TABLE a\n(\n    x UInt8\n)",
        "CREATE TABLE b (y String)",
    ]


@pytest.mark.parametrize("text", ["", "\n\n", "-- only a comment\n", ";;;", "  ;\n -- c\n ; "])
def test_statements_of_nothing(text: str) -> None:
    assert Migration(1, "x", text).statements() == []


def test_statement_without_trailing_semicolon() -> None:
    assert Migration(1, "x", "SELECT 1;\nSELECT 2\n").statements() == ["SELECT 1", "SELECT 2"]


def test_trailing_comment_without_semicolon_is_kept_in_the_statement() -> None:
    text = "CREATE TABLE t\n(\n    source String  -- batch | pixel\n);\n"
    assert Migration(1, "x", text).statements() == [
        "CREATE TABLE t\n(\n    source String  -- batch | pixel\n)"]


def test_semicolon_inside_a_trailing_comment_does_not_split() -> None:
    text = "CREATE TABLE t\n(\n    value Int8  -- -1 down; 1 up\n);\n"
    assert Migration(1, "x", text).statements() == [
        "CREATE TABLE t\n(\n    value Int8  -- -1 down; 1 up\n)"]


@given(st.lists(st.from_regex(r"[A-Z][A-Za-z0-9 ()_,]{0,30}", fullmatch=True)
                .map(str.strip).filter(bool), max_size=6))
def test_statements_round_trip_joined_text(parts: list[str]) -> None:
    text = "-- generated\n" + ";\n".join(parts) + ";\n"
    assert Migration(1, "x", text).statements() == parts


# ---- checksum --------------------------------------------------------------------------------


def test_checksum_is_sha256_of_the_text() -> None:
    text = "CREATE TABLE t (x UInt8);\n"
    assert Migration(1, "x", text).checksum == hashlib.sha256(text.encode()).hexdigest()


def test_checksum_ignores_version_and_name() -> None:
    assert Migration(1, "a", "SELECT 1").checksum == Migration(7, "b", "SELECT 1").checksum


@given(st.text(), st.text())
def test_checksum_changes_with_the_text(a: str, b: str) -> None:
    assert (Migration(1, "x", a).checksum == Migration(1, "x", b).checksum) == (a == b)


def test_checksum_changes_for_a_comment_only_edit(tmp_path: Path) -> None:
    write(tmp_path, {"0001_a.sql": "CREATE TABLE t (x UInt8);\n"})
    before = discover(tmp_path)[0]
    write(tmp_path, {"0001_a.sql": "-- note\nCREATE TABLE t (x UInt8);\n"})
    after = discover(tmp_path)[0]
    assert before.statements() == after.statements()
    assert before.checksum != after.checksum


# ---- the shipped migrations ------------------------------------------------------------------


def test_shipped_sql_dir_is_numbered_without_gaps() -> None:
    directory = sql_dir()
    assert directory.is_dir()
    migrations = discover()
    assert migrations, "no migrations shipped"
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert [m.version for m in discover(directory)] == [m.version for m in migrations]
    assert len({m.checksum for m in migrations}) == len(migrations)


def test_shipped_migrations_parse_into_ddl_statements() -> None:
    for migration in discover():
        statements = migration.statements()
        assert statements, migration.name
        for statement in statements:
            assert re.match(r"(CREATE|ALTER|DROP|RENAME|INSERT|TRUNCATE)\b", statement), statement[:80]
            # a statement split in two would leave unbalanced parentheses behind
            assert statement.count("(") == statement.count(")"), statement[:80]


def test_shipped_migrations_create_the_tables_the_app_writes() -> None:
    created = {
        m.group(1)
        for migration in discover()
        for statement in migration.statements()
        if (m := re.match(r"CREATE TABLE IF NOT EXISTS (\w+)", statement))
    }
    assert {"ad_events", "content_events", "rejected_events", "ingest_batches",
            "api_keys"} <= created


# ---- cluster mode (ON CLUSTER, Replicated engines) -------------------------------------------
# Every statement of every migration file that exists, whoever added it, goes through the
# rewrite; the real ClickHouse parser (formatQuery, in a chdb subprocess: unit tests must not hold
# an in-process chdb engine the integration tests open with another path) checks the results.

CLUSTER = "adtier_c1"
SHIPPED = [pytest.param(statement, id=f"{m.version:04d}_{m.name}#{i}")
           for m in discover() for i, statement in enumerate(m.statements())]
_ENGINE = re.compile(r"ENGINE\s*=\s*(\w*MergeTree)\b(?:\(([^()]*)\))?")
_CREATED = re.compile(r"CREATE\s+(?:TABLE|MATERIALIZED\s+VIEW|VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)")

_FORMAT_SCRIPT = """
import json, sys
import clickhouse_connect
client = clickhouse_connect.get_client(dsn="chdb://:memory:")
out = []
for q in json.load(sys.stdin):
    try:
        out.append(["ok", client.query("SELECT formatQuery({q:String})", parameters={"q": q}).result_rows[0][0]])
    except Exception as err:
        out.append(["error", str(err).splitlines()[0]])
json.dump(out, sys.stdout)
"""


@pytest.fixture(scope="module")
def formatted():
    """query -> ClickHouse's own formatting of it (raises if ClickHouse cannot parse it)."""
    import json
    import subprocess
    import sys

    cache: dict[str, list[str]] = {}

    def run(queries: list[str]) -> list[str]:
        todo = [q for q in dict.fromkeys(queries) if q not in cache]
        if todo:
            done = subprocess.run([sys.executable, "-c", _FORMAT_SCRIPT], input=json.dumps(todo),
                                  capture_output=True, text=True, timeout=120, check=True)
            cache.update(zip(todo, json.loads(done.stdout), strict=True))
        for q in queries:
            status, text = cache[q]
            assert status == "ok", f"ClickHouse cannot parse:\n{q}\n{text}"
        return [cache[q][1] for q in queries]

    return run


def _undo(formatted_sql: str) -> str:
    """Take the cluster parts back out of ClickHouse's formatting of a rewritten statement."""
    sql = formatted_sql.replace(f" ON CLUSTER {CLUSTER}", "")
    sql = re.sub(r"Replicated(\w*MergeTree)\('/clickhouse/tables/\{shard\}/\{database\}/\w+', "
                 r"'\{replica\}'(?:, )?", r"\1(", sql)
    sql = re.sub(r", replicated_deduplication_window_seconds = \d+", "", sql)
    return sql.replace("replicated_deduplication_window", "non_replicated_deduplication_window")


def _norm(formatted_sql: str) -> str:
    return re.sub(r"(\w*MergeTree)\(\)", r"\1", formatted_sql)  # MergeTree == MergeTree()


def test_shipped_migrations_are_covered() -> None:
    assert len(SHIPPED) == sum(len(m.statements()) for m in discover()) >= 16


@pytest.mark.parametrize("statement", SHIPPED)
def test_every_shipped_statement_rewrites_for_a_cluster(statement: str) -> None:
    out = cluster_statement(statement, CLUSTER)
    kind = statement.split(None, 1)[0].upper()
    if kind in ("INSERT", "DELETE", "OPTIMIZE", "SELECT"):
        assert out == statement  # replicated through Keeper: run once (see adtier.store.cluster)
        return
    assert out.count(f"ON CLUSTER {CLUSTER}") == 1, out[:200]
    created = _CREATED.match(statement)
    engine = _ENGINE.search(statement)
    if created and engine:
        name, (family, args) = created[1], engine.groups()
        head = f"'/clickhouse/tables/{{shard}}/{{database}}/{name}', '{{replica}}'"
        want = f"Replicated{family}({head}{', ' + args.strip() if args and args.strip() else ''})"
        assert want in out, out
        assert len(re.findall(r"\bENGINE\b", out)) == len(re.findall(r"\bENGINE\b", statement))
    elif kind == "CREATE" and " MATERIALIZED VIEW " in f" {statement} ":
        assert re.search(r"\bTO\s+\w+", statement), "a view without TO needs an inner engine"
    assert not re.search(r"\bENGINE\s*=\s*(?!Replicated)\w*MergeTree", out), out
    assert "non_replicated_deduplication_window" not in out
    windows = statement.count("non_replicated_deduplication_window")
    assert out.count("replicated_deduplication_window =") == windows
    # ...and its time bound, which would otherwise expire dedup records after an hour
    assert out.count(f"replicated_deduplication_window_seconds = {DEDUP_WINDOW_SECONDS}") == windows


@pytest.mark.parametrize("statement", SHIPPED)
def test_cluster_rewrite_is_idempotent(statement: str) -> None:
    once = cluster_statement(statement, CLUSTER)
    assert cluster_statement(once, CLUSTER) == once


def test_single_node_statements_are_unchanged() -> None:
    for migration in discover():
        assert migration.cluster_statements("") == migration.statements()
    assert ledger_statement("") == ledger_statement()
    assert "ON CLUSTER" not in ledger_statement() and "Replicated" not in ledger_statement()


def test_clickhouse_parses_every_rewritten_statement_and_only_the_cluster_parts_changed(
        formatted) -> None:
    originals = [p.values[0] for p in SHIPPED]
    rewritten = [cluster_statement(s, CLUSTER) for s in originals]
    before, after = formatted(originals), formatted(rewritten)
    for original, orig_fmt, new_fmt in zip(originals, before, after, strict=True):
        if original.split(None, 1)[0].upper() not in ("INSERT", "DELETE", "OPTIMIZE", "SELECT"):
            assert f"ON CLUSTER {CLUSTER}" in new_fmt
        assert _norm(_undo(new_fmt)) == _norm(orig_fmt), new_fmt


def test_the_ledger_is_replicated_on_a_cluster(formatted) -> None:
    ledger = ledger_statement(CLUSTER)
    assert "schema_migrations ON CLUSTER adtier_c1" in ledger
    assert ("ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/schema_migrations',"
            " '{replica}') ORDER BY version") in ledger
    formatted([ledger])


# Statement shapes beyond the shipped files: what a future migration is likely to contain.
SHAPES = [
    ("ALTER TABLE ad_events ADD COLUMN IF NOT EXISTS app_version String DEFAULT ''",
     ("ALTER TABLE ad_events ON CLUSTER adtier_c1 ADD COLUMN IF NOT EXISTS app_version String "
     "DEFAULT ''")),
    ("ALTER TABLE db1.ad_events MODIFY SETTING non_replicated_deduplication_window = 500",
     ("ALTER TABLE db1.ad_events ON CLUSTER adtier_c1 MODIFY SETTING "
     "replicated_deduplication_window = 500, replicated_deduplication_window_seconds = 2592000")),
    ("ALTER TABLE `ad events` DELETE WHERE ts < '2020-01-01'",
     "ALTER TABLE `ad events` ON CLUSTER adtier_c1 DELETE WHERE ts < '2020-01-01'"),
    ("ALTER TABLE profile_ad_daily_mv MODIFY QUERY SELECT 1 AS x",
     "ALTER TABLE profile_ad_daily_mv ON CLUSTER adtier_c1 MODIFY QUERY SELECT 1 AS x"),
    ("DROP TABLE IF EXISTS old_table SYNC", "DROP TABLE IF EXISTS old_table ON CLUSTER adtier_c1 SYNC"),
    ("DROP VIEW some_mv", "DROP VIEW some_mv ON CLUSTER adtier_c1"),
    ("TRUNCATE TABLE IF EXISTS t", "TRUNCATE TABLE IF EXISTS t ON CLUSTER adtier_c1"),
    ("TRUNCATE t", "TRUNCATE t ON CLUSTER adtier_c1"),
    ("RENAME TABLE a TO b, c TO d", "RENAME TABLE a TO b, c TO d ON CLUSTER adtier_c1"),
    ("EXCHANGE TABLES a AND b", "EXCHANGE TABLES a AND b ON CLUSTER adtier_c1"),
    ("CREATE VIEW IF NOT EXISTS v AS SELECT 'ENGINE = MergeTree' AS s",
     "CREATE VIEW IF NOT EXISTS v ON CLUSTER adtier_c1 AS SELECT 'ENGINE = MergeTree' AS s"),
    ("CREATE TABLE t (x UInt8, s String DEFAULT 'ENGINE = MergeTree') ENGINE = MergeTree() ORDER BY x",
     ("CREATE TABLE t ON CLUSTER adtier_c1 (x UInt8, s String DEFAULT 'ENGINE = MergeTree') ENGINE = "
     "ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/t', '{replica}') ORDER BY x")),
    ("CREATE TABLE t (k UInt8, v UInt64, d UInt8) ENGINE = ReplacingMergeTree(v, d) ORDER BY k",
     ("CREATE TABLE t ON CLUSTER adtier_c1 (k UInt8, v UInt64, d UInt8) ENGINE = "
     "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/t', '{replica}', v, d) "
     "ORDER BY k")),
    ("CREATE TABLE t (k UInt8, s Int8, v UInt64) ENGINE=VersionedCollapsingMergeTree(s, v) ORDER BY k",
     ("CREATE TABLE t ON CLUSTER adtier_c1 (k UInt8, s Int8, v UInt64) ENGINE="
     "ReplicatedVersionedCollapsingMergeTree('/clickhouse/tables/{shard}/{database}/t', '{replica}', "
     "s, v) ORDER BY k")),
    ("CREATE TABLE t (k UInt8, a UInt64, b UInt64) ENGINE = SummingMergeTree((a, b)) ORDER BY k",
     ("CREATE TABLE t ON CLUSTER adtier_c1 (k UInt8, a UInt64, b UInt64) ENGINE = "
     "ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/{database}/t', '{replica}', (a, b)) "
     "ORDER BY k")),
    (("CREATE MATERIALIZED VIEW IF NOT EXISTS db1.mv\nENGINE = AggregatingMergeTree -- inner\n"
     "ORDER BY k AS SELECT k, uniqState(p) AS u FROM events GROUP BY k"),
     ("CREATE MATERIALIZED VIEW IF NOT EXISTS db1.mv ON CLUSTER adtier_c1\nENGINE = "
     "ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/{database}/mv', '{replica}') -- inner\n"
     "ORDER BY k AS SELECT k, uniqState(p) AS u FROM events GROUP BY k")),
    ("CREATE MATERIALIZED VIEW mv TO target AS SELECT * FROM src WHERE engine = 'MergeTree'",
     ("CREATE MATERIALIZED VIEW mv ON CLUSTER adtier_c1 TO target AS SELECT * FROM src WHERE "
     "engine = 'MergeTree'")),
    ("CREATE TABLE src_null (x UInt8) ENGINE = Null",
     "CREATE TABLE src_null ON CLUSTER adtier_c1 (x UInt8) ENGINE = Null"),
    (("CREATE TABLE IF NOT EXISTS t_dist AS t ENGINE = Distributed(adtier_c1, currentDatabase(), t, "
     "rand())"),
     ("CREATE TABLE IF NOT EXISTS t_dist ON CLUSTER adtier_c1 AS t ENGINE = Distributed(adtier_c1, "
     "currentDatabase(), t, rand())")),
    ("CREATE OR REPLACE VIEW v AS SELECT 1", "CREATE OR REPLACE VIEW v ON CLUSTER adtier_c1 AS SELECT 1"),
    ("CREATE DATABASE IF NOT EXISTS adtier", "CREATE DATABASE IF NOT EXISTS adtier ON CLUSTER adtier_c1"),
    ("CREATE FUNCTION daypart AS (h) -> if(h < 6, 'late_night', 'day')",
     "CREATE FUNCTION daypart ON CLUSTER adtier_c1 AS (h) -> if(h < 6, 'late_night', 'day')"),
    ("DELETE FROM ad_events WHERE profile_id = 'p'", "DELETE FROM ad_events WHERE profile_id = 'p'"),
    ("INSERT INTO t SELECT * FROM ad_events", "INSERT INTO t SELECT * FROM ad_events"),
    ("OPTIMIZE TABLE t FINAL", "OPTIMIZE TABLE t FINAL"),
]


@pytest.mark.parametrize(("statement", "want"), SHAPES, ids=[s[:40] for s, _ in SHAPES])
def test_statement_shapes(statement: str, want: str) -> None:
    assert cluster_statement(statement, CLUSTER) == want
    assert cluster_statement(want, CLUSTER) == want  # idempotent


def test_statement_shapes_parse_in_clickhouse_and_only_the_cluster_parts_changed(
        formatted) -> None:
    before = formatted([statement for statement, _ in SHAPES])
    after = formatted([want for _, want in SHAPES])
    for orig_fmt, new_fmt in zip(before, after, strict=True):
        assert _norm(_undo(new_fmt)) == _norm(orig_fmt), new_fmt


@pytest.mark.parametrize(
    ("statement", "error"),
    [("CREATE TABLE t (x UInt8) ORDER BY x", "no ENGINE clause"),
     ("CREATE MATERIALIZED VIEW mv AS SELECT 1", "no ENGINE clause"),
     ("CREATE TABLE t2 AS t", "copies that table's engine"),
     ("CREATE TABLE t (x UInt8) ENGINE = Memory", "keeps its data on one node"),
     ("CREATE TABLE t (x UInt8) ENGINE = Log", "keeps its data on one node"),
     ("CREATE MATERIALIZED VIEW mv ENGINE = SummingMergeTree ORDER BY k POPULATE AS "
      "SELECT k, count() AS n FROM events GROUP BY k", "POPULATE would run on every replica"),
     ("CREATE TABLE t ENGINE = MergeTree ORDER BY k AS SELECT 1 AS k", "AS SELECT would fill"),
     ("CREATE TEMPORARY TABLE t (x UInt8)", "temporary tables"),
     ("DROP TEMPORARY TABLE t", "temporary tables"),
     ("CREATE USER u", "no cluster form"),
     ("ALTER USER u", "only ALTER TABLE"),
     ("SYSTEM RELOAD DICTIONARIES", "no cluster form"),
     ("SET max_threads = 1", "no cluster form"),
     ("CREATE TABLE `a'b` (x UInt8) ENGINE = MergeTree ORDER BY x", "plain name"),
     ("CREATE TABLE t (x UInt8) ENGINE = MergeTree ORDER BY (x", "unbalanced"),
     ("CREATE TABLE t (s String DEFAULT 'oops) ENGINE = MergeTree", "tokenize")])
def test_statements_without_a_safe_cluster_form_are_refused(statement: str, error: str) -> None:
    with pytest.raises(ClusterRewriteError, match=re.escape(error)):
        cluster_statement(statement, CLUSTER)


def test_a_refused_statement_names_its_migration(tmp_path: Path) -> None:
    write(tmp_path, {"0001_a.sql": "CREATE TABLE t (x UInt8) ENGINE = MergeTree ORDER BY x;\n",
                     "0002_b.sql": "CREATE TABLE m (x UInt8) ENGINE = Memory;\n"})
    assert planned_statements(tmp_path)[1][1] == ["CREATE TABLE m (x UInt8) ENGINE = Memory"]
    with pytest.raises(MigrationError, match=r"0002_b: .*Memory keeps its data on one node"):
        planned_statements(tmp_path, cluster=CLUSTER)


@pytest.mark.parametrize(
    "name", ["", "a-b", "a b", "1abc", "c;DROP TABLE x", "c`", "c'", "x" * 65, "ünï", "c\n", "a.b"])
def test_bad_cluster_names_are_refused(name: str) -> None:
    with pytest.raises(ClusterRewriteError, match="cluster name"):
        validate_cluster(name)
    with pytest.raises(ClusterRewriteError):
        cluster_statement("DROP TABLE t", name)


@given(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,63}", fullmatch=True))
def test_any_identifier_is_a_cluster_name(name: str) -> None:
    assert cluster_statement("DROP TABLE t", name) == f"DROP TABLE t ON CLUSTER {name}"


@given(st.text(max_size=70))
def test_only_identifiers_are_cluster_names(name: str) -> None:
    ok = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name) is not None
    try:
        validate_cluster(name)
    except ClusterRewriteError:
        assert not ok
    else:
        assert ok


def test_checksum_is_the_file_text_in_cluster_mode() -> None:
    for migration, statements in planned_statements(cluster=CLUSTER):
        assert migration.checksum == hashlib.sha256(migration.text.encode()).hexdigest()
        assert statements == migration.cluster_statements(CLUSTER)


def test_cli_migrate_print_is_a_dry_run(capsys, tmp_path: Path, monkeypatch) -> None:
    from adtier.cli import build_parser

    monkeypatch.setenv("ADTIER_DATA_DIR", str(tmp_path / "never-created"))
    monkeypatch.delenv("ADTIER_CLICKHOUSE_CLUSTER", raising=False)
    args = build_parser().parse_args(["migrate", "--print", "--cluster", CLUSTER])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    for migration in discover():
        assert f"-- {migration.version:04d}_{migration.name} (sha256 {migration.checksum})" in out
    assert out.count(f"ON CLUSTER {CLUSTER}") > len(discover())
    assert "ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/schema_migrations'" in out
    assert not (tmp_path / "never-created").exists()  # no store was opened

    args = build_parser().parse_args(["migrate", "--print"])  # single node: the files as they are
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "ON CLUSTER" not in out and "Replicated" not in out

    monkeypatch.setenv("ADTIER_CLICKHOUSE_CLUSTER", CLUSTER)  # the setting, when no flag
    args = build_parser().parse_args(["migrate", "--print"])
    assert args.func(args) == 0
    assert f"ON CLUSTER {CLUSTER}" in capsys.readouterr().out

    args = build_parser().parse_args(["migrate", "--print", "--cluster", "bad-name"])
    assert args.func(args) == 2
    assert "cluster name 'bad-name'" in capsys.readouterr().err


def test_replicated_tables_keep_insert_dedup_records_as_long_as_single_node_ones() -> None:
    create = ("CREATE TABLE IF NOT EXISTS t (id UInt64) ENGINE = MergeTree ORDER BY id "
              "SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1")
    out = cluster_statement(create, CLUSTER)
    assert out.endswith("SETTINGS replicated_deduplication_window = 10000, "
                        "replicated_deduplication_window_seconds = 2592000, ttl_only_drop_parts = 1")
    assert DEDUP_WINDOW_SECONDS >= 7 * 86_400  # far past ClickHouse 26's 3,600 s default
