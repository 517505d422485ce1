"""Rewrite single-node migration statements to run ``ON CLUSTER`` with replicated engines.

The migration files in ``sql/`` are written for one node (chdb or one server). With
``ADTIER_CLICKHOUSE_CLUSTER`` set, the runner passes every statement through
:func:`cluster_statement` first. The layout is **one shard, N replicas**: every MergeTree-family
table becomes its ``Replicated*`` twin (engine arguments kept, Keeper path and replica name put
first), every DDL statement gets ``ON CLUSTER <name>``, and table names do not change, so the
application's queries, inserts, lightweight deletes and ``FINAL`` reads run unchanged on any
replica. A cluster with more than one shard is refused by the runner: that layout needs
``Distributed`` tables over ``<name>_local`` tables, which this rewriter does not produce
(see docs/operations.md, "On a ClickHouse cluster").

How each statement kind is handled:

* ``CREATE TABLE | VIEW | MATERIALIZED VIEW | DICTIONARY | DATABASE | FUNCTION`` -- ``ON CLUSTER``
  after the name; a MergeTree-family ``ENGINE`` (of a table, or of a materialized view's inner
  table) becomes ``Replicated<Engine>('/clickhouse/tables/{shard}/{database}/<name>',
  '{replica}', <original args>)``, and ``non_replicated_deduplication_window`` becomes
  ``replicated_deduplication_window`` with the same value (the insert dedup window the
  flusher's tokens rely on), followed by ``replicated_deduplication_window_seconds`` (30 days:
  ClickHouse's own default, 3,600 s in 26.x, would drop dedup records after an hour). A ``CREATE TABLE`` without an explicit engine, or with an engine
  that keeps its data on one node (Memory, Log, ...), is refused: it would silently not be
  replicated. Engines that hold no data of their own (Null, Distributed, Merge, Dictionary)
  are kept.
* ``ALTER TABLE``, ``DROP``, ``TRUNCATE``, ``RENAME``, ``EXCHANGE`` -- ``ON CLUSTER``. For a
  Replicated table the server runs an ``ALTER ... ON CLUSTER`` once per shard and replicates it
  through Keeper; for views and databases it must run on every node, hence ``ON CLUSTER``
  everywhere.
* ``DELETE FROM`` (lightweight delete), ``INSERT``, ``OPTIMIZE``, ``SELECT`` -- unchanged. They
  act on Replicated tables, whose mutations, inserts and merges are replicated through Keeper:
  run once, on one replica, they reach all of them (``lightweight_deletes_sync`` defaults to
  waiting for every replica). With one shard, "once" covers every row.
* ``CREATE MATERIALIZED VIEW ... POPULATE`` and ``CREATE TABLE ... AS SELECT`` are refused:
  every replica would run the fill into the same replicated table. Create, then backfill with
  ``INSERT ... SELECT`` (it runs once).
* Anything else (``SYSTEM``, ``SET``, ``CREATE USER``, temporary tables ...) is refused with a
  message, so a new kind of statement in ``sql/`` is a visible decision, not a silent
  single-node change on a cluster.

The rewrite is a function of the statement text only (deterministic), so a migration's checksum
stays the checksum of its file. It is idempotent: a statement already carrying ``ON CLUSTER``
or a ``Replicated*`` engine is left as it is.

Parsing: a small tokenizer (strings, quoted identifiers, comments, parentheses) and the known
statement shapes; edits are splices at token positions, so everything else, comments included,
stays byte for byte. The unit tests run every statement of every migration file through the
real ClickHouse parser (``formatQuery`` in chdb) before and after the rewrite.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "CLUSTER_NAME",
    "ClusterRewriteError",
    "cluster_statement",
    "replicated_engine",
    "validate_cluster",
    "zookeeper_path",
]

# A cluster name goes into DDL as an identifier: letters, digits and underscores only.
CLUSTER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_FAMILY = re.compile(
    r"^(Replacing|Summing|Aggregating|Collapsing|VersionedCollapsing|Graphite|Coalescing)?"
    r"MergeTree$")
# Engines that keep no data of their own: the same definition on every node is correct.
_STATELESS_ENGINES = {"Null", "Distributed", "Merge", "Dictionary", "View", "MaterializedView"}


class ClusterRewriteError(ValueError):
    pass


def validate_cluster(name: str) -> str:
    """The cluster name, if it is a plain identifier (it is placed in DDL, never bound)."""
    if not CLUSTER_NAME.fullmatch(name):
        raise ClusterRewriteError(
            f"cluster name {name!r}: expected letters, digits and underscores "
            "(starting with a letter or underscore, at most 64 characters)")
    return name


def zookeeper_path(table: str) -> str:
    return f"/clickhouse/tables/{{shard}}/{{database}}/{table}"


def replicated_engine(engine: str, args: str, table: str) -> str:
    """``ReplacingMergeTree`` + ``version`` -> ``ReplicatedReplacingMergeTree(path, replica, version)``."""
    if not _FAMILY.fullmatch(engine):
        raise ClusterRewriteError(f"{engine} is not a MergeTree-family engine")
    if not _PLAIN_NAME.fullmatch(table):
        raise ClusterRewriteError(f"table name {table!r}: a replicated table needs a plain name "
                                  "(it goes into its Keeper path)")
    head = f"'{zookeeper_path(table)}', '{{replica}}'"
    args = args.strip()
    return f"Replicated{engine}({head}{', ' + args if args else ''})"


# ---- tokens ------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
      (?P<ws>\s+)
    | (?P<comment>--[^\n]*|/\*.*?\*/)
    | (?P<string>'(?:[^'\\]|\\.|'')*')
    | (?P<quoted>`(?:[^`\\]|\\.|``)*`|"(?:[^"\\]|\\.|"")*")
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<number>[0-9][A-Za-z0-9_.]*)
    | (?P<punct>[^'"`])
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class _Tok:
    kind: str   # word | quoted | string | number | punct
    text: str
    start: int
    end: int
    depth: int  # parenthesis depth before this token

    def kw(self, *words: str) -> bool:
        return self.kind == "word" and self.text.upper() in words


def _tokens(sql: str) -> list[_Tok]:
    out: list[_Tok] = []
    depth = 0
    pos = 0
    while pos < len(sql):
        m = _TOKEN.match(sql, pos)
        if m is None or m.end() == pos:  # an unterminated quote or comment
            raise ClusterRewriteError(f"cannot tokenize the statement near: {sql[pos:pos + 40]!r}")
        kind = m.lastgroup or "punct"
        text = m.group()
        if kind not in ("ws", "comment"):
            if text == ")":
                depth -= 1
            out.append(_Tok(kind, text, m.start(), m.end(), depth))
            if text == "(":
                depth += 1
        pos = m.end()
    if depth != 0:
        raise ClusterRewriteError("unbalanced parentheses in the statement")
    return out


def _unquote(tok: _Tok) -> str:
    if tok.kind == "quoted":
        return tok.text[1:-1]
    return tok.text


class _Edit:
    """Splices at character positions, applied back to front."""

    def __init__(self, sql: str):
        self.sql = sql
        self.edits: list[tuple[int, int, str]] = []

    def insert(self, at: int, text: str) -> None:
        self.edits.append((at, at, text))

    def replace(self, start: int, end: int, text: str) -> None:
        self.edits.append((start, end, text))

    def result(self) -> str:
        sql = self.sql
        for start, end, text in sorted(self.edits, key=lambda e: (e[0], e[1]), reverse=True):
            sql = sql[:start] + text + sql[end:]
        return sql


def _name_end(toks: list[_Tok], i: int) -> tuple[int, str]:
    """Parse ``[db.]name`` at ``toks[i]``: (index after it, the object name without db)."""
    if i >= len(toks) or toks[i].kind not in ("word", "quoted"):
        raise ClusterRewriteError("expected an object name")
    name = _unquote(toks[i])
    i += 1
    if i + 1 < len(toks) and toks[i].text == "." and toks[i + 1].kind in ("word", "quoted"):
        name = _unquote(toks[i + 1])
        i += 2
    return i, name


def _has_on_cluster(toks: list[_Tok], i: int) -> bool:
    return i + 1 < len(toks) and toks[i].kw("ON") and toks[i + 1].kw("CLUSTER")


def _skip(toks: list[_Tok], i: int, *words: str) -> int:
    """Skip a keyword sequence (``IF NOT EXISTS``) if it is there."""
    if i + len(words) <= len(toks) and all(toks[i + k].kw(w) for k, w in enumerate(words)):
        return i + len(words)
    return i


def _on_cluster_after_name(toks: list[_Tok], i: int, edit: _Edit, cluster: str) -> tuple[int, str]:
    end, name = _name_end(toks, i)
    if not _has_on_cluster(toks, end):
        edit.insert(toks[end - 1].end, f" ON CLUSTER {cluster}")
    return end, name


# ---- statements --------------------------------------------------------------------------------

_PASS_THROUGH = {"DELETE", "INSERT", "OPTIMIZE", "SELECT", "WITH"}


def cluster_statement(statement: str, cluster: str) -> str:
    """The statement as it runs on ``cluster`` (see the module docstring)."""
    validate_cluster(cluster)
    toks = _tokens(statement)
    if not toks:
        return statement
    first = toks[0].text.upper() if toks[0].kind == "word" else toks[0].text
    if first in _PASS_THROUGH:
        return statement
    edit = _Edit(statement)
    if first == "CREATE":
        _create(toks, edit, cluster)
    elif first == "ALTER":
        if not (len(toks) > 1 and toks[1].kw("TABLE")):
            raise ClusterRewriteError(f"ALTER {toks[1].text if len(toks) > 1 else ''}: only "
                                      "ALTER TABLE is supported in cluster mode")
        end, _ = _on_cluster_after_name(toks, 2, edit, cluster)
        _dedup_window_setting(toks[end:], edit)  # ALTER TABLE t MODIFY SETTING ...
    elif first == "DROP":
        i = 1
        if i < len(toks) and toks[i].kw("TEMPORARY"):
            raise ClusterRewriteError("temporary tables are per session, not per cluster")
        if not (i < len(toks) and toks[i].kw("TABLE", "VIEW", "DICTIONARY", "DATABASE", "FUNCTION")):
            raise ClusterRewriteError("DROP: expected TABLE, VIEW, DICTIONARY, DATABASE or FUNCTION")
        i = _skip(toks, i + 1, "IF", "EXISTS")
        _on_cluster_after_name(toks, i, edit, cluster)
    elif first == "TRUNCATE":
        i = _skip(toks, 1, "TABLE")
        i = _skip(toks, i, "IF", "EXISTS")
        _on_cluster_after_name(toks, i, edit, cluster)
    elif first in ("RENAME", "EXCHANGE"):
        # RENAME TABLE a TO b[, c TO d] ON CLUSTER x / EXCHANGE TABLES a AND b ON CLUSTER x
        if not any(_has_on_cluster(toks, k) for k in range(len(toks))):
            edit.insert(toks[-1].end, f" ON CLUSTER {cluster}")
    else:
        raise ClusterRewriteError(
            f"{first}: no cluster form for this kind of statement; extend "
            "adtier.store.cluster (and its tests) before shipping it in sql/")
    return edit.result()


def _create(toks: list[_Tok], edit: _Edit, cluster: str) -> None:
    i = 1
    i = _skip(toks, i, "OR", "REPLACE")
    if i < len(toks) and toks[i].kw("TEMPORARY"):
        raise ClusterRewriteError("temporary tables are per session, not per cluster")
    if _skip(toks, i, "MATERIALIZED", "VIEW") != i:
        kind, i = "MATERIALIZED VIEW", i + 2
    elif i < len(toks) and toks[i].kw("TABLE", "VIEW", "DICTIONARY", "DATABASE", "FUNCTION"):
        kind, i = toks[i].text.upper(), i + 1
    else:
        what = toks[i].text if i < len(toks) else ""
        raise ClusterRewriteError(f"CREATE {what}: no cluster form for this kind of object")
    i = _skip(toks, i, "IF", "NOT", "EXISTS")
    end, name = _on_cluster_after_name(toks, i, edit, cluster)
    if kind not in ("TABLE", "MATERIALIZED VIEW"):
        return
    # The storage part ends where a top-level `AS SELECT` / `AS WITH` / `AS (` begins.
    stop = len(toks)
    for k in range(end, len(toks) - 1):
        if toks[k].depth == 0 and toks[k].kw("AS") and (
                toks[k + 1].kw("SELECT", "WITH") or toks[k + 1].text == "("):
            stop = k
            break
    if kind == "TABLE" and stop < len(toks):
        raise ClusterRewriteError(
            f"CREATE TABLE {name} ... AS SELECT would fill the table on every replica; create "
            "it, then INSERT ... SELECT (which runs once)")
    has_to = any(t.depth == 0 and t.kw("TO") for t in toks[end:stop])
    if kind == "MATERIALIZED VIEW" and any(t.depth == 0 and t.kw("POPULATE") for t in toks[end:stop]):
        raise ClusterRewriteError(
            f"{name}: POPULATE would run on every replica and insert the backfill once per "
            "replica into the replicated table; create the view, then backfill with "
            "INSERT ... SELECT (which runs once)")
    engine_at = next((k for k in range(end, stop) if toks[k].depth == 0 and toks[k].kw("ENGINE")),
                     None)
    if engine_at is None:
        if kind == "MATERIALIZED VIEW" and has_to:
            return  # writes into a table created (replicated) by its own statement
        if kind == "TABLE" and any(t.depth == 0 and t.kw("AS") for t in toks[end:stop]):
            raise ClusterRewriteError(
                f"CREATE TABLE {name} AS <table> copies that table's engine (and Keeper path); "
                "name the engine explicitly for cluster mode")
        raise ClusterRewriteError(
            f"{kind} {name} has no ENGINE clause: the server default engine would not be "
            "replicated; name a MergeTree-family engine")
    k = engine_at + 1
    if k < stop and toks[k].text == "=":
        k += 1
    if k >= stop or toks[k].kind != "word":
        raise ClusterRewriteError(f"{name}: expected an engine name after ENGINE")
    engine_tok = toks[k]
    engine = engine_tok.text
    args_end = engine_tok.end
    args = ""
    if k + 1 < stop and toks[k + 1].text == "(":
        close = next(j for j in range(k + 2, len(toks))
                     if toks[j].text == ")" and toks[j].depth == toks[k + 1].depth)
        args = edit.sql[toks[k + 1].end:toks[close].start]
        args_end = toks[close].end
    if engine.startswith("Replicated") or engine in _STATELESS_ENGINES:
        pass  # already replicated, or holds no data of its own
    elif _FAMILY.fullmatch(engine):
        edit.replace(engine_tok.start, args_end, replicated_engine(engine, args, name))
    else:
        raise ClusterRewriteError(
            f"{name}: ENGINE {engine} keeps its data on one node; use a MergeTree-family "
            "engine (it becomes Replicated on a cluster)")
    _dedup_window_setting(toks[k:stop], edit)


# Replicated tables also forget their insert-dedup records after this many seconds, however
# few blocks came since (ClickHouse 26.x defaults it to 3,600 s): a flush plan redone more than
# an hour later would be stored twice. A non-replicated table's window is a number of blocks
# only, so the replicated one is given a time bound far past any plan's redo (30 days): the
# number of blocks is again what bounds it, the same window on one node and on a cluster.
DEDUP_WINDOW_SECONDS = 30 * 86_400


def _dedup_window_setting(toks: list[_Tok], edit: _Edit) -> None:
    """The single-node insert dedup window, as the replicated one (same number of blocks, and
    a time bound that does not cut it short)."""
    for i, t in enumerate(toks):
        if t.depth == 0 and t.kind == "word" and t.text.lower() == "non_replicated_deduplication_window":
            edit.replace(t.start, t.end, "replicated_deduplication_window")
            if i + 2 < len(toks) and toks[i + 1].text == "=":
                edit.insert(toks[i + 2].end,
                            f", replicated_deduplication_window_seconds = {DEDUP_WINDOW_SECONDS}")
