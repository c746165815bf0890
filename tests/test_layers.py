"""The shape of the code: layers import downward only, no import cycles, SQL text only in the SQL
layer. Read from the source with `ast` (module-level and function-level imports alike), so a
lazy import inside a function cannot hide an upward dependency or a cycle."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "radiusd"

# Foundation modules: importable by every layer, themselves importing only foundation and core.
FOUNDATION = {"radiusd", "radiusd.config", "radiusd.errors", "radiusd.models", "radiusd.db",
              "radiusd.logging_setup", "radiusd.metrics", "radiusd.plain", "radiusd.secrets_at_rest",
              # pure SQL text (no imports): the DDL radiusd.db runs beyond the models' tables
              "radiusd.store.sql.postgresql.ddl", "radiusd.store.sql.sqlite.ddl"}
# core <- store <- pipeline <- {edge, admin, bench} <- {cli, commands, web}: a module may import
# its own layer and those below.
LAYERS = {
    "radiusd.core": 0,
    "radiusd.store": 1,
    "radiusd.pipeline": 2,
    "radiusd.radius": 3, "radiusd.admin": 3, "radiusd.bench": 3,
    "radiusd.cli": 4, "radiusd.cli_output": 4, "radiusd.__main__": 4, "radiusd.commands": 4, "radiusd.web": 4,
}
LAYER_NAMES = {0: "core", 1: "store", 2: "pipeline", 3: "edge/admin/bench", 4: "CLI/web"}
SQL_LAYER = PACKAGE / "store" / "sql"
# SQL text allowed outside the SQL layer, by file and the name of the assignment or function
# holding it — all in the foundation, which cannot import the store:
FOUNDATION_SQL = {
    # DDL that is part of the schema the models define, run on the table's "after_create" event
    ("radiusd/models.py", "CDR_DEFAULT_PARTITION"),
    # how the engine factory sets up every SQLite connection (pragmas, BEGIN IMMEDIATE)
    ("radiusd/db.py", "_sqlite_pragmas"), ("radiusd/db.py", "_sqlite_begin"),
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The radiusd module an import refers to (a name inside a module: that module)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the submodule when there is one
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name) if name.startswith("radiusd") else None
            if target is not None and target != module:
                out.add(target)
    return out


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _layer(module: str) -> int | str | None:
    if module in FOUNDATION:
        return "foundation"
    for prefix, layer in sorted(LAYERS.items(), key=lambda kv: -len(kv[0])):
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return None


def test_every_module_has_a_layer():
    unknown = sorted(m for m in MODULES if _layer(m) is None)
    assert not unknown, f"modules in no layer (add them to LAYERS or FOUNDATION in {__file__}): {unknown}"


def _upward(graph) -> list[str]:
    bad = []
    for module, targets in graph.items():
        mine = _layer(module)
        for target in sorted(targets):
            theirs = _layer(target)
            if theirs == "foundation" or mine is None or theirs is None:
                continue
            if mine == "foundation":
                if theirs != 0:
                    bad.append(f"{module} (foundation) imports {target} ({LAYER_NAMES[theirs]})")
            elif theirs > mine:
                bad.append(f"{module} ({LAYER_NAMES[mine]}) imports {target} ({LAYER_NAMES[theirs]})")
    return bad


def test_no_import_goes_up_a_layer():
    bad = _upward(GRAPH)
    assert not bad, "imports from a lower layer to a higher one:\n" + "\n".join(bad)


def _cycles(graph) -> list[list[str]]:
    # Tarjan's strongly connected components: any component of two or more modules is a cycle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def test_the_import_graph_has_no_cycle():
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


# SQL statements, not prose: a keyword followed by what only a statement has after it.
SQL = re.compile(
    r"""\b(?:
        SELECT\b[\s\S]*?\bFROM\s+[a-z_(]
      | INSERT\s+INTO\s+\w+\s*(?:\(|SELECT\b|VALUES\b|DEFAULT\b)
      | UPDATE\s+\w+(?:\s+AS\s+\w+)?\s+SET\s+\w
      | DELETE\s+FROM\s+\w
      | CREATE\s+(?:UNIQUE\s+)?(?:TABLE|INDEX|SEQUENCE|VIEW|SCHEMA|DATABASE)\b
      | ALTER\s+(?:TABLE|INDEX|SEQUENCE)\s+\w
      | DROP\s+(?:TABLE|INDEX|SEQUENCE)\s+\w
      | PREPARE\s+\w+\s*(?:\(|AS\b)
      | EXECUTE\s+\w+\s*\(
      | LOCK\s+TABLE\s+\w
      | SET\s+LOCAL\s+\w
      | SELECT\s+(?:setval|nextval|to_regclass|count|id|\*|\d)\b
      | PRAGMA\s+\w+
      | (?-i:BEGIN\s+(?:IMMEDIATE|EXCLUSIVE|DEFERRED|TRANSACTION|ISOLATION)\b)
      | (?-i:(?:SHOW|VACUUM|TRUNCATE|ANALYZE)\s+\w+\s*$)
      | ON\s+CONFLICT\s*(?:\(|DO\b|ON\s+CONSTRAINT\b)
    )""",
    re.IGNORECASE | re.VERBOSE,
)


def _docstrings(tree) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _string_literals(tree):
    """(line, text) of every string literal but docstrings; an f-string's parts joined, each
    placeholder as `x`, and implicitly concatenated literals as one."""
    skip = _docstrings(tree)
    inside_fstring = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "x" for v in node.values)
            inside_fstring.update(id(v) for v in node.values)
            yield node.lineno, text, node
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
                and id(node) not in inside_fstring):
            yield node.lineno, node.value, node


def test_sql_text_lives_only_in_the_sql_layer():
    found = []
    for module, path in MODULES.items():
        if path.is_relative_to(SQL_LAYER):
            continue
        tree = ast.parse(path.read_text(), str(path))
        allowed = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                names = [getattr(t, "id", None) for t in node.targets]
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = [node.name]
            else:
                continue
            if any((str(path.relative_to(ROOT)), name) in FOUNDATION_SQL for name in names):
                allowed.update(id(inner) for inner in ast.walk(node))
        for line, text, node in _string_literals(tree):
            if id(node) in allowed:
                continue
            match = SQL.search(text)
            if match:
                found.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0)[:60]!r}")
    assert not found, "SQL text outside radiusd/store/sql/:\n" + "\n".join(sorted(found))


def test_the_checks_themselves_catch_what_they_look_for():
    """Each check flags a known bad case and lets known prose through (a check that cannot fail
    is a defect)."""
    assert SQL.search("SELECT id FROM clients WHERE id = ANY($1)")
    assert SQL.search("INSERT INTO cdrs (id) VALUES (1)")
    assert SQL.search("UPDATE active_calls AS a SET state = 'x'")
    assert SQL.search("PREPARE radiusd_x (int[]) AS SELECT 1")
    assert SQL.search("EXECUTE radiusd_x (%s)")
    assert SQL.search("SET LOCAL synchronous_commit TO off")
    assert SQL.search("PRAGMA journal_mode=WAL") and SQL.search("BEGIN IMMEDIATE")
    assert SQL.search("SHOW synchronous_commit")
    for prose in ("show the calls", "begin transaction", "Begin immediately", "on conflict the later one wins",
                  "select a client by name", "Select the rate table to update", "delete the account",
                  "create this month's partitions", "update the balance", "insert a row"):
        assert not SQL.search(prose), prose
    tree = ast.parse('def f():\n    """SELECT id FROM clients, in a docstring"""\n    return f"SELECT {x} FROM t"\n')
    assert [line for line, text, _ in _string_literals(tree) if SQL.search(text)] == [3]
    assert not SQL.search("INSERT INTO x: an explicit column list is required")
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _upward({"radiusd.store.capacity": {"radiusd.admin.audit", "radiusd.core.keys"},
                    "radiusd.models": {"radiusd.store.sql"}, "radiusd.cli": {"radiusd.store.capacity"}}) == [
        "radiusd.store.capacity (store) imports radiusd.admin.audit (edge/admin/bench)",
        "radiusd.models (foundation) imports radiusd.store.sql (store)"]
    probe = ROOT / "radiusd" / "store" / "capacity.py"
    assert "radiusd.core.keys" in _imports("radiusd.store.capacity", probe)   # a module-level import
    assert _layer("radiusd.models") == "foundation" and _layer("radiusd.commands.calls") == 4
