"""Imports go one way: a layer imports only the layers below it, and no modules import each other in a circle.

The layers, lowest first (docs/architecture.md draws them)::

    atomic            one way to write a file
    nn                layers, placements, surgery
    probe             instruments (reads nn's registry)
    engine, data      runs a study into a run directory; offline data sets
    models            the models studies train (built from nn)
    kit               what studies share: ensembles, statistics, claim helpers, tables, plots
    studies, report   the studies; the report of a run directory (neither imports the other)
    cli               the command line

Every ``import`` counts, function-local ones included (a local import hides a circle, it does not break it);
imports under ``if TYPE_CHECKING:`` do not, since they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "normlab"

RANKS = {"atomic": 0, "nn": 1, "probe": 2, "engine": 3, "data": 3, "models": 4, "kit": 5, "studies": 6,
         "report": 6, "cli": 7}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path) -> set[str]:
    """The normlab modules ``path`` imports (``from normlab.x import y`` counts ``normlab.x.y`` when that is a
    module, else ``normlab.x``)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node)
               for child in node.body for n in ast.walk(child)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "normlab")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "normlab":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if _exists(sub) else target)
    found.discard(module)
    return found


def _exists(module: str) -> bool:
    path = SRC.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # normlab itself (the version) is below everything


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_subpackage_has_a_layer():
    tops = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
            if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").is_file()}
    assert tops == set(RANKS), "give each new top-level module a layer in RANKS (and in docs/architecture.md)"


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, targets in graph.items():
        here = _layer(module)
        for target in sorted(targets):
            there = _layer(target)
            if here is None or there is None or there == here:
                continue
            if RANKS[there] >= RANKS[here]:
                wrong.append(f"{module} imports {target} ({here} is layer {RANKS[here]}, {there} is {RANKS[there]})")
    return wrong


def test_no_layer_imports_one_above_it_or_beside_it():
    assert layer_violations(_graph()) == []


@pytest.mark.parametrize("graph, bad", [
    ({"normlab.engine.load": {"normlab.studies"}}, True),  # the engine looking a study up
    ({"normlab.report.build": {"normlab.studies.x"}}, True),  # beside it
    ({"normlab.kit.stats": {"normlab.engine.spec", "normlab.nn"}}, False),
    ({"normlab.cli": {"normlab.report", "normlab.studies"}}, False),
])
def test_the_layer_check_flags_upward_and_sideways_imports(graph, bad):
    assert bool(layer_violations(graph)) == bad


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    # A package's __init__ importing its own modules (to re-export them) while they import a sibling through
    # the package is not a circle of meaning; count only module -> module edges.
    graph = {m: {t for t in ts if not _is_package_init(t)} for m, ts in _graph().items()}
    assert _cycles(graph) == []


def _is_package_init(module: str) -> bool:
    return (SRC.joinpath(*module.split(".")) / "__init__.py").is_file()


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
])
def test_the_cycle_finder_finds_circles(graph, expected):
    assert _cycles(graph) == expected


def test_the_import_reader_sees_local_and_relative_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "normlab" / "kit"
    pkg.mkdir(parents=True)
    (tmp_path / "normlab" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "stats.py").write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nfrom . import stats\n"
        "def f():\n    from normlab.report import build\n"
        "if TYPE_CHECKING:\n    from normlab.cli import app\n")
    monkeypatch.setattr(__import__(__name__), "SRC", tmp_path)
    assert imports_of(pkg / "a.py") == {"normlab.kit.stats", "normlab.report"}
