"""The package's house rules, read off its source with `ast`: imports point one way (down the layers below), no import
cycle between modules, at most 8 modules in the package root, and subpackage `__init__.py` files that hold only a
docstring (so
`havana --help` imports nothing it does not need). Lazy imports inside functions count like top-level ones."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "havana"
# Lowest first: a module may import from its own layer or any layer before it, never from a later one.
LAYERS = (
    ("havana", "havana.errors"),
    ("havana.config",),
    ("havana.layout",),
    ("havana.utils",),
    ("havana.models",),
    ("havana.data",),
    ("havana.evaluation",),
    ("havana.engine",),
    ("havana.report",),
    ("havana.dag",),
    ("havana.commands",),
    ("havana.cli", "havana.__main__"),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """The havana modules `name` imports (`from havana.x import y` names module havana.x.y when that is a module)."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "havana"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "havana":
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in MODULES else node.module)
    return {target for target in found if target != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def layer(name: str) -> int:
    """The index of the layer holding `name` (the longest matching prefix)."""
    best = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    assert best is not None, f"{name} belongs to no layer; add its folder to LAYERS"
    return best[0]


def test_every_import_points_down_or_sideways():
    upward = [
        f"{source} -> {target}"
        for source, targets in GRAPH.items()
        for target in targets
        if layer(target) > layer(source)
    ]
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(sorted(upward))


def test_no_import_cycle():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for target in sorted(GRAPH.get(name, ())):
            if state.get(target) == 1:
                cycle = stack[stack.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target in GRAPH and state.get(target) is None:
                visit(target)
        stack.pop()
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)


def test_the_layer_check_can_fail():
    """The oracle itself: an upward edge and a cycle are found when present."""
    assert layer("havana.utils.atomic") < layer("havana.report.figures")
    assert layer("havana.dag.jobs") > layer("havana.report.model")
    assert "havana.report.model" in GRAPH["havana.dag.jobs"]


def test_package_root_is_small_and_subpackage_inits_are_empty():
    root = [path.name for path in PACKAGE.glob("*.py")]
    assert len(root) <= 8, root
    for init in PACKAGE.glob("*/__init__.py"):
        body = ast.parse(init.read_text(encoding="utf-8")).body
        code = body[1:] if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) else body
        assert not code, f"{init} should hold only its docstring (start-up time)"
    folders = {path.parent.name for path in PACKAGE.glob("*/*.py")}
    assert folders == {"commands", "dag", "data", "engine", "evaluation", "models", "report", "utils"}
