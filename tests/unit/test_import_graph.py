"""The import graph of cdefs/, fastpath/ and control/, read from the source with ``ast``.

The layers are cdefs <- fastpath <- control (docs/architecture.md): a module imports only from its own
package and the ones below.  lint-imports (`make lint`) checks the same contract; this test needs no tool
and also catches import cycles, which load order hides until a refactoring moves one import.

Every import counts, a function-level one too (it runs on the first call, and a cycle through it breaks
there), except under ``if TYPE_CHECKING:``, which never runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cdefs", "fastpath", "control")
LAYER = {"cdefs": 0, "fastpath": 1, "control": 2}     # a package imports only packages of a lower or equal rank


def _modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every .py of the three packages."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: all of them but the bodies of ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def walk(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                walk(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            walk(child)

    walk(tree)
    return found


def _imported_names(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The dotted names module imports: a module where one exists (``from pkg import sub`` is pkg.sub when
    pkg/sub.py is there), else the name as written, so that an import of a missing control module still
    shows as one."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
            continue
        base = node.module or ""
        if node.level:
            # relative: level 1 is the module's own package (the module itself for an __init__.py)
            anchor = module.split(".")
            drop = node.level - 1 if is_pkg else node.level
            anchor = anchor[:len(anchor) - drop] if drop else anchor
            base = ".".join(anchor + ([base] if base else []))
        for a in node.names:
            sub = f"{base}.{a.name}"
            out.add(sub if sub in known else base)
    return out


def _graph() -> dict[str, set[str]]:
    """Module -> the names it imports that start with one of our packages (modules or not)."""
    known = _modules()
    return {m: {n for n in _imported_names(m, p, known) if n.split(".")[0] in PACKAGES} for m, p in known.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> ... -> a) per strongly connected component of more than one module (Tarjan)."""
    edges = {m: sorted(t for t in targets if t in graph and t != m) for m, targets in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[list[str]] = []

    def visit(v: str) -> None:
        # iterative: a deep import chain must not hit the recursion limit
        work = [(v, iter(edges[v]))]
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        while work:
            node, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(edges[w])))
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    if len(comp) > 1:
                        comps.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [_one_cycle(comp, edges) for comp in sorted(comps)]


def _one_cycle(comp: list[str], edges: dict[str, list[str]]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside the component."""
    inside, start = set(comp), comp[0]
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in edges[v]:
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w in inside and w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {comp}")


def _layer_violations(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} imports {t}" for m, targets in graph.items() for t in targets
                  if LAYER[t.split(".")[0]] > LAYER[m.split(".")[0]])


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The reader itself: function-level and relative imports count, TYPE_CHECKING ones do not, and a
    from-import of a submodule is an edge to that submodule."""
    graph = _graph()
    assert "fastpath.plan" in graph["fastpath.daemon"]
    assert "fastpath.io.afpacket" in graph["fastpath.daemon"]          # imported inside Fastpath._setup
    assert "control.bench_dpdk_control" in graph["control.cli"]   # from control import <module>, in a function
    src = tmp_path / "pkg"
    (src / "sub").mkdir(parents=True)
    (src / "__init__.py").write_text("from . import a\n")
    (src / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import b\n"
                              "else:\n    import pkg.sub\ndef f():\n    from .sub import c, name\n")
    (src / "b.py").write_text("")
    (src / "sub" / "__init__.py").write_text("from .. import b\n")
    (src / "sub" / "c.py").write_text("")
    known = {"pkg": src / "__init__.py", "pkg.a": src / "a.py", "pkg.b": src / "b.py",
             "pkg.sub": src / "sub" / "__init__.py", "pkg.sub.c": src / "sub" / "c.py"}
    assert _imported_names("pkg", known["pkg"], known) == {"pkg.a"}
    assert _imported_names("pkg.a", known["pkg.a"], known) == {"typing", "pkg.sub", "pkg.sub.c"}
    assert _imported_names("pkg.sub", known["pkg.sub"], known) == {"pkg.b"}
    assert _cycles({"a": {"b"}, "b": {"c", "a"}, "c": {"a"}, "d": {"d"}}) == [["a", "b", "a"]]


def test_no_layer_imports_upwards() -> None:
    """fastpath and cdefs import nothing from control, and cdefs nothing from fastpath."""
    assert _layer_violations(_graph()) == []


def test_no_import_cycles() -> None:
    cycles = _cycles(_graph())
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
