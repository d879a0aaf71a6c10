"""The package's layers: imports run one way, down, with no cycles; the library speaks no CLI."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import eoir

SOURCE = Path(eoir.__file__).parent

# top to bottom; a module may import only from a lower layer or from its own subpackage
LAYERS = [
    ["eoir", "eoir.__main__"],
    ["eoir.cli"],
    ["eoir.demo"],
    ["eoir.training"],
    ["eoir.registration", "eoir.synth"],
    ["eoir.io", "eoir.nn", "eoir.losses"],
    ["eoir.metrics", "eoir.figure", "eoir.runtime", "eoir.progress"],
    ["eoir.spatial", "eoir.image", "eoir.pretrained"],
    ["eoir.options"],
    ["eoir.errors", "eoir._version"],
]
RANK = {name: len(LAYERS) - i for i, names in enumerate(LAYERS) for name in names}


def _module(path: Path) -> str:
    parts = ["eoir", *path.relative_to(SOURCE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _home(module: str) -> str:
    """The layer entry a module belongs to (its subpackage, or itself)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in RANK:
            return ".".join(parts[:n])
    raise KeyError(f"{module} is in no layer: add it to LAYERS")


def _imports(path: Path) -> set[str]:
    """Every eoir module ``path`` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "eoir":
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "eoir"}
    return found


GRAPH = {_module(p): _imports(p) for p in SOURCE.rglob("*.py")}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_module_imports_one_above_it(module):
    home = _home(module)
    for target in GRAPH[module]:
        other = _home(target)
        if other == home:  # its own subpackage (or itself)
            continue
        assert RANK[other] < RANK[home], f"{module} imports {target}, a layer above or beside it"


def test_no_import_cycles():
    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError(" -> ".join([*path[path.index(module) :], module]))
        for target in GRAPH.get(module, ()):
            if target != module:
                visit(target, [*path, module])

    for module in GRAPH:
        if module != "eoir":  # the package re-exports the public names of everything below
            visit(module, [])


@pytest.mark.parametrize("path", sorted(SOURCE.rglob("*.py")), ids=lambda p: p.name)
def test_the_library_names_no_command_line_flags_in_its_messages(path):
    """Only ``cli.py`` words errors with flags (``--device``); the library names its
    arguments and values, and the command line translates (``eoir.cli.one_line``)."""
    if path.name == "cli.py":
        return
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and node.exc is not None:
            text = ast.unparse(node.exc)
            assert not re.search(r"--[a-z]", text), f"{path.name}: {text}"


def test_every_folder_of_modules_is_a_package():
    """A folder without ``__init__.py`` imports from a checkout but is left out of the wheel."""
    for folder in {p.parent for p in SOURCE.rglob("*.py")}:
        assert (folder / "__init__.py").is_file(), f"{folder} has no __init__.py"
