"""The shape of the code base: `ptq` imports in one direction (no cycle in its import graph, computed from the
source), and nothing edits the module search path (`ptq` is an installed package)."""
from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ptq"

def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the `ptq` modules it imports, at module level or inside a function (both run, sooner or later).
    `from a import b` points at the module a.b when there is one, else at a."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else base
                               for alias in node.names)
        resolved = set()
        for target in targets:
            while target and target not in paths:
                target = target.rpartition(".")[0]
            if target and target != name:
                resolved.add(target)
        graph[name] = resolved
    return graph


def cycle_edges(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Edges inside a strongly connected component (Tarjan): exactly the edges that lie on some cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    component: dict[str, int] = {}

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component[w] = index[v]
                if w == v:
                    break

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return {(v, w) for v in graph for w in graph[v] if component[v] == component[w]}


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert cycle_edges(graph) == {("a", "b"), ("b", "c"), ("c", "a")}


def test_import_graph_sees_function_level_imports():
    graph = import_graph()
    assert "ptq.schema" in graph["ptq.cli"]            # module level
    assert "ptq.app" in graph["ptq.cli"]               # inside run_job


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph with every subpackage of ptq as one node (ptq.quant.stages.repq -> ptq.quant)."""
    def node(module: str) -> str:
        return ".".join(module.split(".")[:2])

    out: dict[str, set[str]] = {}
    for v, ws in graph.items():
        out.setdefault(node(v), set()).update(node(w) for w in ws if node(w) != node(v))
    return out


def test_ptq_import_graph_has_no_cycle():
    graph = import_graph()
    unexpected = sorted(cycle_edges(graph))
    assert not unexpected, f"import cycles between modules of ptq (edges on a cycle): {unexpected}"
    unexpected = sorted(cycle_edges(package_graph(graph)))
    assert not unexpected, f"import cycles between ptq's modules and subpackages (edges on a cycle): {unexpected}"


PATH_EDIT = re.compile(r"\bsys\s*\.\s*path\s*(\.\s*(insert|append|extend)\s*\(|\+=|=(?!=))")


def test_path_edit_pattern_finds_planted_edits():
    module = "sys" + ".path"  # spelt apart so this file holds no edit itself
    for line in (f"{module}.insert(0, str(ROOT))", f"{module}.append('x')", f"{module} += ['x']",
                 f"{module} = ['x']", f"import sys; {module} . insert(0, p)"):
        assert PATH_EDIT.search(line), line
    for line in (f"print({module})", f"if {module} == []:", f"{module}[0]"):
        assert not PATH_EDIT.search(line), line


def test_nothing_edits_sys_path():
    """Scripts, notebooks and tests import `ptq` as the installed package (README: nothing edits the path)."""
    files = subprocess.run(["git", "ls-files", "*.py", "*.ipynb"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    found = [f"{f}:{i}" for f in files if (ROOT / f).is_file()
             for i, line in enumerate((ROOT / f).read_text(errors="replace").splitlines(), 1) if PATH_EDIT.search(line)]
    assert not found, f"sys.path edited in: {found}"
