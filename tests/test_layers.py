"""The package's layers point one way (docs/DEVELOPING.md, "Layers").

Every module's imports are read with `ast` (those under `if TYPE_CHECKING:` and inside
functions included: a type-only or deferred import is still a dependency), and two
things fail the suite: a module importing from a layer above its own, and an import
circle between modules, whatever their layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "streamctl"

# Bottom first. A module may import from its own layer and the layers below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("core",),
    ("contracts", "functions", "filters", "mappings", "destinations", "channels"),
    ("config",),
    ("store", "bus"),
    ("monitoring",),
    ("sources",),
    ("pipeline",),
    ("delivery",),
    ("server", "console", "testing", "sync_tests"),
    ("cli", "__main__"),
)
LAYER_OF = {top: rank for rank, names in enumerate(LAYERS) for top in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(path: Path) -> str:
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imported_modules(text: str, package: str, known: set[str]) -> set[str]:
    """The streamctl modules a module of `package` with this source imports (a name
    imported from a package counts as its submodule when there is one, and as the
    package itself otherwise)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            names = {f"{module}.{alias.name}" for alias in node.names}
            found.update(names)
            if not names <= known:  # `from package import submodule` needs no more
                found.add(module)
    return {name for name in found if name in known}


def import_graph() -> dict[str, set[str]]:
    paths = [p for p in PACKAGE.rglob("*.py") if "scaffold" not in p.parts]
    known = {module_name(p) for p in paths}
    return {
        module_name(p): imported_modules(p.read_text(), package_of(p), known) - {module_name(p)}
        for p in paths
    }


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return -1  # the package's own __init__: imports nothing
    return LAYER_OF[parts[1]]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
        for module, targets in graph.items()
        for target in targets
        if layer(target) > layer(module)
    )


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_every_package_has_a_layer() -> None:
    tops = {name.split(".")[1] for name in import_graph() if "." in name}
    assert tops <= set(LAYER_OF), f"add to LAYERS (and docs/DEVELOPING.md): {tops - set(LAYER_OF)}"


def test_no_module_imports_from_a_layer_above() -> None:
    assert upward_imports(import_graph()) == []


def test_no_import_circle_between_modules() -> None:
    assert circles(import_graph()) == []


@pytest.mark.parametrize(
    ("graph", "upward", "circular"),
    [
        ({"streamctl.core.a": {"streamctl.cli.b"}, "streamctl.cli.b": set()}, 1, 0),
        (
            {
                "streamctl.store.a": {"streamctl.store.b"},
                "streamctl.store.b": {"streamctl.store.a"},
            },
            0,
            1,
        ),
        ({"streamctl.cli.a": {"streamctl.core.b"}, "streamctl.core.b": set()}, 0, 0),
    ],
)
def test_the_checks_catch_what_they_look_for(
    graph: dict[str, set[str]], upward: int, circular: int
) -> None:
    assert len(upward_imports(graph)) == upward
    assert len(circles(graph)) == circular


def test_type_checking_and_deferred_imports_count() -> None:
    text = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from streamctl.store.db import Store\n"
        "def later():\n    from ..cli import main\n"
    )
    known = {"streamctl.store.db", "streamctl.cli", "streamctl.cli.main"}
    assert imported_modules(text, "streamctl.core", known) == {
        "streamctl.store.db",
        "streamctl.cli.main",
    }
