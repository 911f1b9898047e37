"""Shared fixtures: every test gets its own state folder (MLflow store, Prefect home,
BentoML home, prediction logs) under ``tmp_path``; the repository's sample data is
used read-only."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from mlops.config import Settings, load_settings
from mlops.environment import TELEMETRY_OFF, tool_environment

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"

# Telemetry off, and the tools' homes out of the user's home directory, before any
# tool is imported by a test module (Prefect reads PREFECT_HOME once, at import).
os.environ.update(TELEMETRY_OFF)
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="mlops-tests-"))
os.environ["PREFECT_HOME"] = str(_SESSION_HOME / "prefect")
os.environ["BENTOML_HOME"] = str(_SESSION_HOME / "bentoml")


@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated MLflow SQLite store: copying it saves each test ~5 s of migrations."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_db_template: Path) -> Settings:
    """Default settings with the state folder under ``tmp_path`` and the bundled data."""
    monkeypatch.chdir(REPO)
    settings = load_settings(state_dir=tmp_path / "state")
    settings.state_dir.mkdir(parents=True)
    shutil.copy(mlflow_db_template, settings.state_dir / "mlflow.db")
    return settings


@pytest.fixture
def tool_env(settings: Settings):
    """The tools bound to the test's state folder for the duration of the test."""
    with tool_environment(settings) as variables:
        yield variables


@pytest.fixture
def receiver():
    """A webhook receiver on 127.0.0.1: yields (url, the JSON bodies it was sent)."""
    from servers import webhook_receiver

    with webhook_receiver() as hook:
        yield hook


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory, mlflow_db_template: Path):
    """A real ``mlflow server`` on 127.0.0.1 over its own SQLite store (it can be killed and started again)."""
    from servers import TrackingServer

    server = TrackingServer(tmp_path_factory.mktemp("tracking-server"), mlflow_db_template)
    server.start()
    yield server
    server.kill()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fuzz_long: the long fuzzing run; runs only when selected (-m fuzz_long)")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups into the node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``fuzz_long`` tests unless the marker expression names them: minutes the suite's budget lacks.

    The tests of a module that share a module-scoped fixture (a trained model, a running
    deployment, the demo's state) run in one test process (``--dist loadgroup``): the fixture
    is built once, not once in each process that drew one of them.
    """
    for item in items:
        if item.get_closest_marker("xdist_group") is None and _uses_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    items.sort(key=_start_order)  # stable: a module's own order is kept
    if "fuzz_long" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="the long fuzzing run: select it with -m fuzz_long")
    for item in items:
        if "fuzz_long" in item.keywords:
            item.add_marker(skip)


# The longest work first (``--no-loadscope-reorder`` keeps this order): the test processes
# then end together instead of one running the slowest chain alone at the end. From the
# CI log's slowest durations (`make test` prints them); a group counts as its whole module.
SLOW_FIRST = (
    "tests/test_stack.py",
    "tests/test_continuous_training.py",
    "tests/test_cli.py::test_demo__the_retrained_model",
    "tests/test_user_views.py",
    "tests/test_scaffold.py::test_init__make_demo_and_make_test",
    "tests/test_real_data.py::test_bring_your_own_data__the_whole_loop",
    "tests/test_benchmarks.py::test_benchmark__quick_run_writes_its_table",
    "tests/test_secrets.py",
    "tests/test_tracking_faults.py",
    "tests/test_schedules.py::test_schedule__serves_deployments",
    "tests/test_supervision.py",
    "tests/test_shadow.py",
    "tests/test_deployment.py",
    "tests/test_fuzz.py",
    "tests/test_cli.py::test_demo__sigterm",
    "tests/test_serving.py",
    "tests/test_labels_endpoint.py",
)


def _start_order(item: pytest.Item) -> int:
    return next((rank for rank, prefix in enumerate(SLOW_FIRST) if item.nodeid.startswith(prefix)), len(SLOW_FIRST))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail a grouped test when ``--dist loadgroup`` ignored its group (pytest-dev/pytest-xdist#1386):
    the tests that rely on their module's shared state would otherwise fail far from the cause."""
    if item.config.getoption("loadgroup", default=False) and item.get_closest_marker("xdist_group") and "@" not in item.nodeid:
        pytest.fail("xdist did not apply this test's group: check the pytest and pytest-xdist pins", pytrace=False)


def _uses_module_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    return info is not None and any(defs and defs[-1].scope == "module" for defs in info.name2fixturedefs.values())


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)
