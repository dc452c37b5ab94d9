"""The structure ARCHITECTURE.md states, measured from the code: the import direction (with its named
exceptions), no import circles, and the size limits (no product file over 600 lines, no function over 80).

Every import counts for the direction, module level or inside a function: a lazy import is still a
dependency. Circles are what Python would meet at import time (module-level imports); a lazy import
inside one app for late binding (a registry's choices, a factory picking a backend, a Celery task
queued by the code it runs) is allowed, and must follow the direction like any other.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Each layer imports only from layers before it (same layer: allowed, but never in a circle).
LAYERS = {
    "iops.lib": 0,
    "metrics": 1,
    "alerts": 2,
    "insights": 3,
    "pipeline": 4,
    "ingest": 5,
    "dashboard": 6,
    "simulator": 6,
    "iops": 7,
}
# The exceptions ARCHITECTURE.md names, module → module, with why there.
EXCEPTIONS = {
    ("pipeline.batch", "ingest.models"),
    ("alerts.messages", "insights.models"),
}
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80


def _layer(module: str) -> str | None:
    if module == "iops.lib" or module.startswith("iops.lib."):
        return "iops.lib"
    top = module.split(".")[0]
    return top if top in LAYERS else None


def _product_files() -> dict[str, Path]:
    files = {}
    for top in ("iops", "metrics", "alerts", "insights", "pipeline", "ingest", "dashboard", "simulator"):
        for path in (ROOT / top).rglob("*.py"):
            parts = path.relative_to(ROOT).parts
            if "tests" in parts or "migrations" in parts:
                continue
            module = ".".join(parts)[:-3].removesuffix(".__init__")
            files[module] = path
    return files


def _imports(path: Path, module: str, *, top_level_only: bool = False) -> set[str]:
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    nodes = _top_level(tree) if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + [base]
                ).strip(".")
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _top_level(tree: ast.Module):
    """Statements run at import time: the module body and its if/try blocks, not function bodies."""
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        yield node
        if isinstance(node, ast.If | ast.Try):
            pending.extend(node.body + node.orelse + getattr(node, "finalbody", []))
            for handler in getattr(node, "handlers", []):
                pending.extend(handler.body)


def _graph(*, top_level_only: bool = False) -> dict[str, set[str]]:
    files = _product_files()
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in files.items():
        for name in _imports(path, module, top_level_only=top_level_only):
            # resolve to the longest product module the name starts with
            target = name
            while target and target not in files:
                target = target.rpartition(".")[0]
            # a module's own packages are initialised before it whatever it imports: not an edge
            if target and target != module and not module.startswith(f"{target}."):
                graph[module].add(target)
    return graph


def test_imports_follow_the_stated_direction():
    against = sorted(
        (src, dst)
        for src, targets in _graph().items()
        for dst in targets
        if (a := _layer(src)) and (b := _layer(dst)) and LAYERS[a] < LAYERS[b]
    )
    unnamed = [edge for edge in against if edge not in EXCEPTIONS]
    assert unnamed == [], "imports against the direction in ARCHITECTURE.md (name them there or fix them)"
    assert len(EXCEPTIONS) <= 2
    architecture = (ROOT / "ARCHITECTURE.md").read_text()
    for src, dst in EXCEPTIONS:
        assert src.split(".")[0] in architecture and dst in architecture


def test_no_import_circles():
    graph = _graph(top_level_only=True)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
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
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    assert circles == []


def test_no_product_file_or_function_is_too_long():
    too_long = []
    for module, path in _product_files().items():
        source = path.read_text()
        if source.count("\n") > MAX_FILE_LINES:
            too_long.append(f"{module}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{module}.{node.name}: {length} lines")
    assert too_long == []
