"""The package's layout: sub-packages in a one-way stack, no import circle, small modules, narrow signatures."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

import lit_linear

PACKAGE = REPO / "lit_linear"

# Bottom to top: a module imports only from its own layer or the layers below it.
LAYERS = ("errors", "runs", "maths", "features", "data", "sweep", "callbacks", "training", "cli")

# The classes whose __init__ LightningCLI turns into options: their arguments are the command line's.
CLI_CLASSES = {"LinearClassifierModule", "CIFARDataModule", "FeaturesDataModule", "SweepTensorBoard"}


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (``lit_linear.maths.losses``), ``__init__`` files included."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, names: set[str]) -> set[str]:
    """The package's modules that ``path`` imports, anywhere in it (``TYPE_CHECKING`` blocks included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lit_linear"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("lit_linear"))
    return {name for name in found if name in names}


def layer(name: str) -> str:
    """``errors``, ``maths``, ...: the sub-package (or top-level module) a dotted module name belongs to."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node) :] + [node]
        if node in done:
            return None
        for target in sorted(graph.get(node, ())):
            circle = visit(target, path + [node])
            if circle:
                return circle
        done.add(node)
        return None

    for node in sorted(graph):
        circle = visit(node, [])
        if circle:
            return circle
    return None


def module_graph() -> dict[str, set[str]]:
    names = set(modules())
    # A package's __init__ re-exports its modules: importing the package is not importing a circle back.
    return {name: imports(path, names) - {name} for name, path in modules().items() if path.stem != "__init__"}


def test_every_layer_imports_only_the_layers_below_it():
    upward = []
    for name, targets in module_graph().items():
        for target in targets:
            if target != "lit_linear" and LAYERS.index(layer(target)) > LAYERS.index(layer(name)):
                upward.append(f"{name} -> {target}")
    assert not upward, f"imports that go up the stack {LAYERS}: {upward}"
    assert {layer(name) for name in modules()} - {"__init__"} == set(LAYERS), "a folder that is not a known layer"


def test_no_circle_among_modules_or_among_sub_packages():
    graph = module_graph()
    assert find_circle(graph) is None, f"import circle: {' -> '.join(find_circle(graph))}"
    packages: dict[str, set[str]] = {}
    for name, targets in graph.items():
        packages.setdefault(layer(name), set()).update(layer(t) for t in targets if layer(t) != layer(name))
    assert find_circle(packages) is None, f"sub-package circle: {' -> '.join(find_circle(packages))}"


def test_the_folders_show_the_layers_small_enough_to_read():
    folders = {p.parent for p in PACKAGE.rglob("*.py")}
    sub_packages = [f for f in folders if f.parent == PACKAGE]
    assert len(sub_packages) >= 4
    crowded = {str(f): n for f in folders if (n := len([p for p in f.glob("*.py") if p.stem != "__init__"])) > 12}
    assert not crowded, f"folders of more than 12 modules: {crowded}"
    long = {str(p.relative_to(REPO)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 300}
    assert not long, f"modules past 300 lines (a second job to give its own file?): {long}"


def test_no_function_takes_more_than_six_positional_parameters():
    wide = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        owners = {id(f): c.name for c in ast.walk(tree) if isinstance(c, ast.ClassDef) for f in c.body}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            positional = [a.arg for a in node.args.posonlyargs + node.args.args if a.arg not in ("self", "cls")]
            cli_init = node.name == "__init__" and owners.get(id(node)) in CLI_CLASSES
            if len(positional) > 6 and not cli_init:
                wide.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({len(positional)})")
    assert not wide, f"more than 6 positional parameters (make the rest keyword-only): {wide}"


def test_the_public_names_import_from_the_package():
    for name in lit_linear.__all__:
        assert getattr(lit_linear, name).__name__ == name


def test_the_tests_mirror_the_sub_packages():
    tests = REPO / "tests"
    folders = {p.name for p in tests.iterdir() if p.is_dir() and any(p.glob("test_*.py"))}
    assert folders - {"end_to_end"} <= set(LAYERS), f"test folders that are no layer of the package: {folders}"
    assert not [p.name for p in tests.glob("test_*.py") if p.name != "test_layout.py"], "a test outside its layer"
