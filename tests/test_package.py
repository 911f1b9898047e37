"""The package's shape: light imports, a declared public API, and layering."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("mlflow", "prefect", "bentoml", "evidently", "great_expectations", "sklearn", "pandas")
LIBRARY_MODULES = sorted(p for p in (REPO / "mlops").glob("*.py") if p.name != "cli.py")


def _imported_modules(code: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return result.stdout.split()


# Prefect task and flow definitions: importing them is importing Prefect.
PREFECT_DEFINITIONS = {"tasks", "schedules"}


def test_import__cli_and_library_stay_light():
    modules = " ".join(f"mlops.{p.stem}" for p in LIBRARY_MODULES if p.stem not in {"__init__", *PREFECT_DEFINITIONS})
    code = f"import mlops.cli, {modules.replace(' ', ', ')}, sys; print(*sys.modules)"
    loaded = set(_imported_modules(code))
    assert not [name for name in HEAVY if name in loaded]


@pytest.mark.parametrize("path", LIBRARY_MODULES, ids=lambda p: p.name)
def test_layering__library_never_imports_flows_or_models(path):
    tree = ast.parse(path.read_text())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [name for name in imported if name.split(".")[0] in {"flows", "models"}]


@pytest.mark.parametrize("path", LIBRARY_MODULES, ids=lambda p: p.name)
def test_public_api__every_module_declares_all(path):
    if path.name == "__init__.py":
        return
    import importlib

    module = importlib.import_module(f"mlops.{path.stem}")
    assert module.__all__
    assert all(hasattr(module, name) for name in module.__all__)


def test_evidently_imports_with_the_locked_pandas():
    """evidently 0.7.23 breaks on pandas 3: the lock pins pandas below 3."""
    import evidently
    import pandas

    assert int(pandas.__version__.split(".")[0]) < 3
    assert evidently.__version__
