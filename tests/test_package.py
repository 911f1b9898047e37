"""The package's shape: light imports, a declared public API, and layering."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("mlflow", "prefect", "bentoml", "evidently", "great_expectations", "sklearn", "pandas")
LIBRARY_MODULES = sorted(p for p in (REPO / "mlops").rglob("*.py") if "templates" not in p.parts)
# Only the command line's start-up must be light (`mlops --help` is instant): its commands import the rest.
LIGHT = ("mlops/cli.py", "mlops/config.py", "mlops/__init__.py")
# Imported by the CLI before the tools' environment (PREFECT_HOME, MLflow's URI, telemetry off) is bound:
# the tools are imported inside the functions that run after it.
BEFORE_BINDING = ("mlops/environment.py", "mlops/project.py", "mlops/logs.py", "mlops/progress.py")
# Seconds and hundreds of MB to import, needed by a few functions: imported where they are used.
IMPORTED_WHERE_USED = ("great_expectations", "evidently", "skops")
# An import that would close a cycle: the watchdog drives deployment, deployment starts the watchdog.
CYCLES = {("mlops/deployment.py", "mlops.watchdog")}
# A module of ours that imports the tools at its top, needed by a function of a module imported before binding:
# load_flow puts the project's flow on the configured task runner (Prefect and Dask), once the tools are bound.
AFTER_BINDING = {("mlops/project.py", "mlops.task_runners")}


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _dotted(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def _imported_modules(code: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return result.stdout.split()


# The CLI's start-up, and the swap proxy: on every request's path, restarted by the watchdog within a second.
@pytest.mark.parametrize("modules", ["mlops.cli, mlops.config", "mlops.proxy"])
def test_import__cli_and_proxy_load_no_tool(modules):
    loaded = set(_imported_modules(f"import {modules}, sys; print(*sys.modules)"))
    assert not [name for name in HEAVY if name in loaded]


def _function_level_imports(tree: ast.Module) -> list[tuple[ast.stmt, list[str]]]:
    found: list[tuple[ast.stmt, list[str]]] = []
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(function):
                if isinstance(node, ast.Import):
                    found.append((node, [alias.name for alias in node.names]))
                elif isinstance(node, ast.ImportFrom):
                    found.append((node, [node.module or ""]))
    return found


def _lazy_allowed(path: Path, module: str) -> bool:
    top = module.split(".")[0]
    if top in IMPORTED_WHERE_USED or (_rel(path), module) in CYCLES | AFTER_BINDING:
        return True
    return _rel(path) in BEFORE_BINDING and top not in sys.stdlib_module_names and top != "mlops"


@pytest.mark.parametrize("path", [p for p in LIBRARY_MODULES if _rel(p) not in LIGHT], ids=_rel)
def test_imports__library_modules_import_at_the_top(path):
    tree = ast.parse(path.read_text())
    lazy = [f"line {node.lineno}: {module}" for node, modules in _function_level_imports(tree) for module in modules
            if not _lazy_allowed(path, module)]  # fmt: skip
    assert lazy == [], "import these at the top of the module"


@pytest.mark.parametrize("path", LIBRARY_MODULES, ids=_rel)
def test_layering__library_never_imports_flows_or_models(path):
    tree = ast.parse(path.read_text())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [name for name in imported if name.split(".")[0] in {"flows", "models"}]


@pytest.mark.parametrize("path", LIBRARY_MODULES, ids=_rel)
def test_public_api__every_module_declares_all(path):
    if path.name == "__init__.py":
        return
    import importlib

    module = importlib.import_module(_dotted(path))
    assert module.__all__
    assert all(hasattr(module, name) for name in module.__all__)


def test_evidently_imports_with_the_locked_pandas():
    """evidently 0.7.23 breaks on pandas 3: the lock pins pandas below 3."""
    import evidently
    import pandas

    assert int(pandas.__version__.split(".")[0]) < 3
    assert evidently.__version__
