"""The import graph of server/ keeps the layers of DESIGN.md section 2.

    cli -> app -> api, http -> loop, monitor, executor, feedback, notify -> store -> db

An arrow means "may import". Nothing imports a layer above its own, and there are no import circles,
so a newcomer can read a package knowing only what is below it. errors, config, logging_setup and
metrics (the in-process Prometheus registry) are leaves everyone may use. Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SERVER = ROOT / "server"

# Lower number = lower layer. A module may import its own layer (no circles) or any lower one.
LAYERS = {
    "__init__": 0, "periodic": 0, "errors": 0, "config": 0, "logging_setup": 0, "metrics": 0,
    "db": 1,
    "store": 2,
    "loop": 3, "monitor": 3, "executor": 3, "feedback": 3, "notify": 3,
    "api": 4, "http": 4,
    "app": 5,
    "cli": 6,
}
PREFIXES = {"closedloop.server": "server", "closedloop.dsl": "dsl", "closedloop": "clients"}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(SERVER).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["server", *parts])


def _imported_names(path: pathlib.Path):
    me = _module_name(path).split(".")
    package = me if path.name == "__init__.py" else me[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:
                    yield from (f"{module}.{alias.name}" for alias in node.names)
                else:
                    yield module
                    # `from . import x` style submodules of a package
                    yield from (f"{module}.{alias.name}" for alias in node.names)
            elif node.module:
                yield node.module
                yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in SERVER.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for imported in _imported_names(path):
            for prefix, local in PREFIXES.items():
                if imported == prefix or imported.startswith(prefix + "."):
                    imported = local + imported[len(prefix):]
                    break
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and imported.startswith("server."):
                deps.add(imported)
        graph[name] = deps
    return graph


def _package(module: str) -> str:
    """server.loop.ingest -> loop; server.app -> app; the package root `server` is its own leaf."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(module: str) -> int:
    top = _package(module)
    if top not in LAYERS:
        raise AssertionError(f"{module}: server/{top} has no layer; add it to LAYERS in {__file__}")
    return LAYERS[top]


def test_no_module_imports_a_layer_above_its_own():
    graph = _graph()
    upward = sorted(
        f"{module} imports {dep}"
        for module, deps in graph.items()
        for dep in deps
        if _layer(dep) > _layer(module)
    )
    assert upward == []


def test_store_is_reached_only_from_above_and_imports_only_db():
    graph = _graph()
    bad = sorted(f"{m} imports {d}" for m, d_ in graph.items() if _package(m) == "store"
                 for d in d_ if _package(d) not in ("store", "db", "errors", "config", "periodic"))
    assert bad == []


def test_no_import_circles():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = 0

    # Tarjan's strongly connected components, iteratively (the graph is small but recursion is not needed).
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    circles.append(sorted(component))
    assert circles == []


def test_the_check_sees_a_circle_and_an_upward_import(tmp_path, monkeypatch):
    """The checks above would pass vacuously if the graph came out empty: build a tiny tree that breaks
    both rules and see them fail."""
    fake = tmp_path / "server"
    (fake / "store").mkdir(parents=True)
    (fake / "loop").mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "store" / "__init__.py").write_text("")
    (fake / "loop" / "__init__.py").write_text("")
    (fake / "store" / "a.py").write_text("from ..loop import b\n")
    (fake / "loop" / "b.py").write_text("def f():\n    from ..store import a\n")
    monkeypatch.setattr(sys.modules[__name__], "SERVER", fake)
    graph = _graph()
    assert "server.loop.b" in graph["server.store.a"]
    assert "server.store.a" in graph["server.loop.b"]
    with pytest.raises(AssertionError):
        test_no_module_imports_a_layer_above_its_own()
    with pytest.raises(AssertionError):
        test_no_import_circles()
