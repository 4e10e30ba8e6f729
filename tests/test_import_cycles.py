"""The package's import graph has no cycle: every import of a vitdeploy module counts, at module level, under
TYPE_CHECKING or inside a function, so each module can be read (and imported) after the ones it uses."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

import vitdeploy

PACKAGE = Path(vitdeploy.__file__).parent


def module_names() -> dict[str, Path]:
    """Module name -> file, for every module of the package (a package by its __init__.py)."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imported_modules(source: str, name: str, is_package: bool, modules: set[str]) -> set[str]:
    """The vitdeploy modules that module `name` imports anywhere in `source`: `from a.b import c` is module a.b.c
    if there is one, else a.b."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imported_modules(path.read_text(), name, path.name == "__init__.py", set(modules))
            for name, path in modules.items()}


def test_every_kind_of_import_is_seen():
    """A TYPE_CHECKING import, a function's import, a relative one and a submodule by `from` all count."""
    modules = {"vitdeploy", "vitdeploy.a", "vitdeploy.b", "vitdeploy.c", "vitdeploy.sub", "vitdeploy.sub.d"}
    source = ("from typing import TYPE_CHECKING\nimport numpy\nif TYPE_CHECKING:\n    from vitdeploy.a import A\n"
              "def f():\n    import vitdeploy.b.thing\nfrom .sub import d\nfrom vitdeploy import c, __version__\n")
    assert imported_modules(source, "vitdeploy.e", False, modules) == {
        "vitdeploy", "vitdeploy.a", "vitdeploy.b", "vitdeploy.sub.d", "vitdeploy.c"}
    graph = {"vitdeploy.a": {"vitdeploy.b"}, "vitdeploy.b": {"vitdeploy.a"}}
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(graph).prepare()


def test_no_import_cycles():
    graph = import_graph()
    assert "vitdeploy.engine" in graph["vitdeploy.runners"]  # the graph holds the package's imports
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        pytest.fail(f"import cycle: {' -> '.join(error.args[1])}")
