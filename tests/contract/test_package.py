"""The package's shape: Great Expectations loaded only when used, a declared public API, and modules layered without a cycle."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys

import pytest

import mlops.contract

from .frames import REPO

PACKAGE = REPO / "mlops" / "contract"
# Each module imports only those before it, so the dependency graph has no cycle.
LAYERS = ("results", "spec", "draft", "suite", "gx", "checks", "report", "validate")


def _imported(tree: ast.Module) -> list[tuple[ast.stmt, str]]:
    """Every import statement with the module it names."""
    found: list[tuple[ast.stmt, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node, node.module or ""))
    return found


def _module_level(tree: ast.Module) -> set[int]:
    """The statements at module level, those under a top-level ``if TYPE_CHECKING:`` included."""
    nodes = list(tree.body) + [child for node in tree.body if isinstance(node, ast.If) for child in node.body]
    return {id(node) for node in nodes}


def test_modules__are_the_layers_and_each_declares_all():
    assert {path.stem for path in PACKAGE.glob("*.py")} == {"__init__", *LAYERS}
    for name in LAYERS:
        module = importlib.import_module(f"mlops.contract.{name}")
        assert module.__all__ and all(hasattr(module, public) for public in module.__all__), name


@pytest.mark.parametrize("name", LAYERS)
def test_layering__a_module_imports_only_earlier_layers_and_at_the_top(name: str):
    tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))

    imported = _imported(tree)

    own = [(node, module) for node, module in imported if module.split(".")[0] == "mlops"]
    assert all(id(node) in _module_level(tree) for node, _ in own), "no function-level import of our own modules"
    layers = {module.removeprefix("mlops.contract.") for _, module in own if module.startswith("mlops.contract.")}
    assert layers <= set(LAYERS[: LAYERS.index(name)])
    assert not [module for _, module in imported if module.split(".")[0] in ("flows", "models")]
    assert "mlops.cli" not in {module for _, module in imported}


def test_public_api__every_name_of_all_is_exported():
    assert sorted(mlops.contract.__all__) == sorted(set(mlops.contract.__all__))
    assert all(hasattr(mlops.contract, name) for name in mlops.contract.__all__)


def test_import__great_expectations_only_when_a_suite_is_run_by_it():
    code = "import sys, mlops.contract; print(*[name for name in ('great_expectations',) if name in sys.modules])"

    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)

    assert output.stdout.split() == []
