"""The package's structure: no import cycle, collectives only in engine/dist.py, the layering of tasks."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

SRC = REPO / "src"
PKG = SRC / "balvit"


def modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """balvit modules imported anywhere in the file (module level and inside functions)."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                root = base[:len(base) - node.level + 1]
                mod = ".".join(root + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t.startswith("balvit") and t != name:
                found.add(t)
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_package_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 40 and "balvit.engine.trainer" in graph["balvit.cli"]  # the graph is read
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_tasks_never_import_the_trainer_and_models_never_import_tasks_or_engine():
    graph = import_graph()
    for name, deps in graph.items():
        if name.startswith("balvit.tasks"):
            assert not {d for d in deps if d in ("balvit.engine.trainer", "balvit.engine.pretrained")}, name
        if name.startswith(("balvit.models", "balvit.data", "balvit.config")):
            assert not {d for d in deps if d.startswith(("balvit.tasks", "balvit.engine"))}, (name, deps)


COLLECTIVES = {"all_reduce", "all_gather", "all_gather_object", "all_gather_into_tensor", "broadcast",
               "broadcast_object_list", "reduce", "reduce_scatter", "all_to_all", "gather", "scatter",
               "gather_object", "scatter_object_list", "all_reduce_coalesced"}


def test_collectives_are_called_in_engine_dist_only():
    """Statically: no module but engine/dist.py calls a torch.distributed collective (or imports
    torch.distributed at all, DDP's wrapper aside)."""
    offenders = []
    for name, path in modules().items():
        if name == "balvit.engine.dist":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr in COLLECTIVES and isinstance(node.value, ast.Attribute)
                    and node.value.attr == "distributed"):
                offenders.append(f"{name}: torch.distributed.{node.attr}")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mod = getattr(node, "module", None) or ""
                names = [a.name for a in node.names]
                if mod == "torch.distributed" or "torch.distributed" in names or (mod == "torch" and "distributed" in names):
                    offenders.append(f"{name}: imports torch.distributed")
    assert offenders == []
