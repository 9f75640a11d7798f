"""The core is pure: ``replication/`` imports nothing but the standard library and itself.

The same invariant-test idea as Datasette's ``tests/test_docs.py``: the rule lives in a test,
so a stray ``import aiohttp`` fails CI instead of waiting for review.
"""

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "replication"
MODULES = sorted(PACKAGE.glob("*.py"))


def imported_top_level_modules(source: str) -> set[str]:
    """Return the top-level names every import statement in ``source`` pulls in."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # a relative import stays inside the package
                found.add("replication")
            elif node.module:
                found.add(node.module.partition(".")[0])
    return found


def test_the_package_has_modules_to_check():
    assert PACKAGE.is_dir()
    assert {path.name for path in MODULES} >= {"__init__.py", "revtree.py", "winner.py"}


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_a_core_module_imports_only_the_standard_library(path):
    allowed = set(sys.stdlib_module_names) | {"__future__", "replication"}
    outside = imported_top_level_modules(path.read_text(encoding="utf-8")) - allowed
    assert not outside, f"{path.name} imports {sorted(outside)}"


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_a_core_module_does_no_io_and_never_awaits(path):
    io_modules = {"asyncio", "socket", "subprocess", "sqlite3", "http", "urllib", "shutil"}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert not imported_top_level_modules(path.read_text(encoding="utf-8")) & io_modules
    for node in ast.walk(tree):
        assert not isinstance(node, ast.AsyncFunctionDef | ast.Await), path.name
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id != "open", f"{path.name} opens a file"


def test_the_checker_sees_every_kind_of_import():
    source = "import a.b, c\nfrom d.e import f\nfrom . import g\nfrom .h import i\n"
    assert imported_top_level_modules(source) == {"a", "c", "d", "replication"}
