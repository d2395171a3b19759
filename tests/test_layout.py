"""The tree is the architecture (DESIGN contract 8), checked on the import graph.

Each subpackage is one process's job or what they share: the controller (rank 0) never
imports pickle, cloudpickle, the serializer, an engine's or a client's code; engines
never import the controller's or a client's; clients never import the controller's or
an engine's; ``protocol/`` imports none of them.  And no module imports itself back
through others (no import circles), lazily or not.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import pympec

ROOT = Path(pympec.__file__).parent


def module_name(path: Path) -> str:
    parts = ["pympec", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def imports(name: str) -> set[str]:
    """What module ``name`` imports, anywhere in its body: pympec modules by full name,
    others by their top-level name."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):   # what only a type checker reads is no import
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] if not alias.name.startswith("pympec")
                         else alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            if not target.startswith("pympec"):
                found.add(target.split(".")[0])
                continue
            submodules = [f"{target}.{a.name}" for a in node.names
                          if f"{target}.{a.name}" in MODULES]
            found.update(submodules or [target])
            if len(submodules) < len(node.names):
                found.add(target)
    return found - {"__future__"}


GRAPH = {name: imports(name) for name in MODULES}


def closure(start: str) -> set[str]:
    """Every module the modules under ``start`` import, directly or not."""
    todo = [m for m in MODULES if (m == start or m.startswith(start + "."))
            and not m.endswith(".__main__")]   # python -m pympec.engine runs every rank
    seen = set(todo)
    while todo:
        for target in GRAPH.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                if target in GRAPH:
                    todo.append(target)
    return seen


def under(names: set[str], *packages: str) -> list[str]:
    return sorted(n for n in names for p in packages if n == p or n.startswith(p + "."))


@pytest.mark.parametrize("package, forbidden", [
    ("pympec.controller", ["pickle", "cloudpickle", "pympec.protocol.serialize",
                           "pympec.engine", "pympec.client"]),
    ("pympec.engine", ["pympec.controller", "pympec.client", "pympec.cluster"]),
    ("pympec.client", ["pympec.controller", "pympec.engine"]),
    ("pympec.protocol", ["pympec.controller", "pympec.engine", "pympec.client",
                         "pympec.cluster"]),
])
def test_import_rules(package, forbidden):
    broken = under(closure(package), *forbidden)
    assert not broken, f"{package} imports, directly or not: {broken}"


def test_no_import_circles():
    """Tarjan's strongly connected components of the pympec import graph are all single."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in GRAPH:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for name in GRAPH:
        if name not in index:
            visit(name)
    assert not circles, f"import circles: {circles}"


def test_the_checker_sees_imports():
    """The graph is real: known edges are in it (a checker that sees nothing passes all)."""
    assert "pympec.protocol.wire" in GRAPH["pympec.controller.server"]
    assert "cloudpickle" in GRAPH["pympec.protocol.serialize"]
    assert "pympec.engine.failure" in GRAPH["pympec.engine.loop"]
    assert "pympec.protocol.serialize" in closure("pympec.engine")


def test_rank_zero_loads_no_serializer():
    """At run time too: importing the controller loads neither cloudpickle nor the
    serializer, nor any engine or client module."""
    code = ("import sys, pympec.boot, pympec.controller.server; "
            "print(sorted(m for m in sys.modules if m == 'cloudpickle' or "
            "m.startswith(('pympec.engine', 'pympec.client', 'pympec.protocol.serialize'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"
