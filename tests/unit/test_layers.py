"""The package map of docs/architecture.md, enforced over the source's imports (``ast``).

Every ``import adtier...`` in ``src/adtier`` counts, lazy ones inside functions included (a
lazy import is still a dependency); only ``if TYPE_CHECKING:`` blocks are skipped. A module may
import its own layer or a lower one. The few upward imports that remain are listed in
``KNOWN_UPWARD`` with the reason; a new one fails here, and so does an entry that is no longer
needed (so the list only shrinks).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "adtier"

# The HTTP edge inside the capability packages: modules that bind routes to the app state.
HTTP_EDGE = {"adtier.catalog.routes", "adtier.features.routes", "adtier.ingest.routes",
             "adtier.ingest.pixel", "adtier.ingest.vast_xml", "adtier.measure.routes",
             "adtier.privacy.http", "adtier.segments.routes"}

# Highest first. A package or top-level module name, or "http" for HTTP_EDGE.
LAYERS: list[tuple[str, set[str]]] = [
    ("entry", {"app", "lifespans", "cli", "__main__", "console", "simulate", "ops",
               "key_routes"}),
    ("http", {"http", "state", "errors", "runtime"}),
    ("measure", {"measure"}),
    ("features", {"features"}),
    ("segments", {"segments"}),
    ("catalog", {"catalog"}),
    ("ingest", {"ingest"}),
    ("privacy", {"privacy"}),
    ("base", {"adtier", "lazy", "store", "audit", "auth", "api_error", "settings", "logs", "events",
              "countries", "request_ids", "metrics", "streams", "embedded_valkey"}),
]

# (importer, imported) -> why it is still there. Remove an entry when its import goes.
KNOWN_UPWARD: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    name = ".".join(parts)
    return name.removesuffix(".__init__")


def _is_module(name: str) -> bool:
    return (SRC / f"{name}.py").exists() or (SRC / name).is_dir()


def _unit(module: str) -> str:
    if module in HTTP_EDGE:
        return "http"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "adtier"


def _rank() -> dict[str, int]:
    rank = {}
    for depth, (_, units) in enumerate(LAYERS):
        for unit in units:
            rank[unit] = len(LAYERS) - depth
    return rank


def _imports(tree: ast.AST) -> list[str]:
    """Absolute adtier imports, outside ``if TYPE_CHECKING:`` blocks."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.extend(a.name for a in child.names if a.name.startswith("adtier"))
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module \
                    and child.module.startswith("adtier"):
                if child.module == "adtier":  # from adtier import audit, __version__
                    found.extend(f"adtier.{a.name}" if _is_module(a.name) else "adtier"
                                 for a in child.names)
                else:
                    found.append(child.module)
            visit(child)

    visit(tree)
    return found


def import_edges() -> set[tuple[str, str]]:
    edges = set()
    for path in SRC.rglob("*.py"):
        module = _module_name(path)
        for imported in _imports(ast.parse(path.read_text(), str(path))):
            edges.add((module, imported))
    return edges


def upward_imports() -> set[tuple[str, str]]:
    rank = _rank()
    return {(a, b) for a, b in import_edges()
            if rank[_unit(a)] < rank[_unit(b)]}


def test_every_module_has_a_layer() -> None:
    rank = _rank()
    units = {_unit(_module_name(p)) for p in SRC.rglob("*.py")}
    assert units - rank.keys() == set(), "add the new package or module to LAYERS"


def test_no_new_upward_import() -> None:
    new = upward_imports() - KNOWN_UPWARD.keys()
    assert new == set(), ("an import goes up the layers of docs/architecture.md: invert it "
                          f"(a hook, an event) or move the code down: {sorted(new)}")


def test_known_exceptions_still_exist() -> None:
    gone = KNOWN_UPWARD.keys() - upward_imports()
    assert gone == set(), f"remove these from KNOWN_UPWARD, they are fixed: {sorted(gone)}"


def test_the_check_sees_an_upward_import() -> None:
    # the scanner itself: a lazy upward import inside a function is found
    tree = ast.parse("def f():\n    from adtier.measure import routes\n")
    assert _imports(tree) == ["adtier.measure"]
    rank = _rank()
    assert rank[_unit("adtier.segments.build")] < rank[_unit("adtier.measure.reach")]


def test_kernels_and_privacy_stay_pure() -> None:
    # the numeric kernels and the privacy maths import nothing above the base layer
    rank = _rank()
    for module in ("adtier.segments.kernels", "adtier.privacy.noise", "adtier.privacy.budget"):
        deps = {b for a, b in import_edges() if a == module}
        above = {b for b in deps if rank[_unit(b)] > rank["privacy"]}
        assert above == set(), f"{module} imports {sorted(above)}"


CAPABILITIES = ("ingest", "catalog", "segments", "features", "measure", "privacy")


def package_cycles() -> list[list[str]]:
    """Cycles between capability packages, counting every module of each (its HTTP edge
    included): ``catalog.routes`` importing ``segments`` while ``segments`` imports ``catalog``
    is a cycle, whatever the layers say."""
    graph: dict[str, set[str]] = {p: set() for p in CAPABILITIES}
    for a, b in import_edges():
        pa, pb = (m.split(".")[1] if "." in m else "" for m in (a, b))
        if pa in graph and pb in graph and pa != pb:
            graph[pa].add(pb)
    cycles = []

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt == path[0]:
                cycles.append(path + [nxt])
            elif nxt not in path and nxt > path[0]:  # each cycle once, from its least name
                walk(nxt, path + [nxt])

    for start in sorted(graph):
        walk(start, [start])
    return cycles


def test_no_cycle_between_capability_packages() -> None:
    # erasure and opt-out reach segments and features through an event (privacy.exclusions),
    # the flusher reaches the feature feed through a hook: no package needs one above it back
    assert package_cycles() == []


def test_the_cycle_check_sees_a_cycle(monkeypatch) -> None:
    # the scanner itself: one made-up edge back from privacy to catalog is a cycle
    edges = import_edges() | {("adtier.privacy.exclusions", "adtier.catalog.store")}
    monkeypatch.setitem(globals(), "import_edges", lambda: edges)
    assert ["catalog", "privacy", "catalog"] in package_cycles()


_SQL = re.compile(r"\b(SELECT|INSERT INTO|ALTER TABLE|DELETE FROM|TRUNCATE TABLE)\b")


def sql_in(source: str) -> list[str]:
    """String literals (f-string parts included) that read as SQL statements."""
    return [node.value[:60] for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and _SQL.search(node.value) and not _is_docstring_like(node.value)]


def _is_docstring_like(text: str) -> bool:
    # prose that names a statement ("answers a SELECT ...") is not a query: a query has FROM,
    # VALUES or a table after it on the same literal
    return not re.search(r"\b(FROM|VALUES|TABLE|INTO)\b", text)


def test_route_modules_hold_no_sql() -> None:
    """A route module asks the query module beside it; the SQL lives there, bound parameters
    and all (docs/architecture.md)."""
    found = {}
    for module in sorted(HTTP_EDGE):
        path = SRC.parent / (module.replace(".", "/") + ".py")
        if hits := sql_in(path.read_text()):
            found[module] = hits
    assert found == {}


def test_the_sql_check_sees_a_query() -> None:
    source = 'def f(c, b):\n    return c.query(f"SELECT count() FROM t WHERE b = {b}")\n'
    assert sql_in(source) and not sql_in('"""Answers a SELECT-free reply."""')
