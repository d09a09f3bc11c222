"""The package's layout: data flows one way through its files (no import circle), and no class does two jobs."""

from __future__ import annotations

import ast

from conftest import REPO

PACKAGE = REPO / "lit_linear"


def package_imports(path) -> set[str]:
    """The modules of the package that ``path`` imports, anywhere in it (``TYPE_CHECKING`` blocks included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lit_linear"):
            names = [node.module] if node.module != "lit_linear" else [f"lit_linear.{a.name}" for a in node.names]
            found.update(names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("lit_linear."))
    return {name for name in found if (PACKAGE / f"{name.split('.')[1]}.py").is_file()}


def test_no_file_of_the_package_imports_one_that_imports_it_back():
    graph = {f"lit_linear.{p.stem}": package_imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(name):] + [name]))
        if name in done:
            return
        for imported in sorted(graph.get(name, ())):
            visit(imported, path + [name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_no_class_of_the_package_runs_past_300_lines():
    long = [f"{p.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for p in PACKAGE.glob("*.py") for node in ast.walk(ast.parse(p.read_text()))
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 300]  # fmt: skip
    assert not long, f"a class past 300 lines does two jobs: {long}"
