"""Migration discovery, statement splitting and checksums (no database needed)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adtier.store.migrate import Migration, MigrationError, discover, sql_dir


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
            assert re.match(r"(CREATE|ALTER|DROP|RENAME|INSERT)\b", statement), statement[:80]
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
