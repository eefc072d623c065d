"""The import structure: no import circle between the package's modules, and no import from a lower layer to a
higher one (stages never import the pipeline, the report, the flows or the CLI). Read from the source with ``ast``,
function-local imports included, so a circle cannot hide inside a function."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "fer_pipeline"
#: Top layers, highest first; everything else in the package is a stage or a helper below them. The entry points
#: (``python -m fer_pipeline``, the CLI, the Python API) compose the flow, the report and the pipeline.
LAYERS = ["fer_pipeline.__main__", "fer_pipeline.cli", "fer_pipeline.live_run", "fer_pipeline.api",
          "fer_pipeline.flows", "fer_pipeline.report", "fer_pipeline.pipeline"]


def _modules() -> dict[str, Path]:
    mods = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        parts = list(f.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    for f in sorted((REPO / "flows").glob("*.py")):  # installed as fer_pipeline.flows (pyproject package-dir)
        mods["fer_pipeline.flows" if f.stem == "__init__" else f"fer_pipeline.flows.{f.stem}"] = f
    return mods


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of ``known`` that ``name`` imports (a ``from pkg import sub`` counts as importing ``pkg.sub``)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[:len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, set(mods)) for m, p in mods.items()}


def _layer(mod: str) -> int:
    """0 for the highest layer, len(LAYERS) for stages."""
    for i, top in enumerate(LAYERS):
        if mod == top or mod.startswith(top + "."):
            return i
    return len(LAYERS)


def test_no_import_circle():
    graph = _graph()
    index, low, stack, on, circles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert circles == []


def test_no_import_from_a_lower_layer_to_a_higher_one():
    wrong = [(m, t) for m, targets in _graph().items() for t in targets if _layer(t) < _layer(m)]
    assert wrong == []


def test_the_check_sees_the_imports():  # guards the checks above against reading nothing
    graph = _graph()
    assert "fer_pipeline.store" in graph["fer_pipeline.pipeline"]
    assert "fer_pipeline.pipeline" in graph["fer_pipeline.flows.analyze"]
    assert "fer_pipeline.flows.analyze" in graph["fer_pipeline.cli"]
    assert _layer("fer_pipeline.pipeline") < _layer("fer_pipeline.store")
