"""A config never runs code it should not and never ends in a traceback: through the real CLI,
each bad config is exit 2 with a message naming the problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlops.config import estimator_class
from mlops.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
MLOPS = Path(sys.executable).parent / "mlops"


def run_mlops(project: Path, config: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``mlops --project PROJECT ARGS`` with ``config`` as its mlops.yaml, on the bundled sample."""
    data = REPO / "data"
    text = f"data:\n  training: {data / 'train.csv'}\n  contract: {data / 'contracts' / 'breast_cancer.yaml'}\n" + config
    (project / "mlops.yaml").write_text(text, encoding="utf-8")
    return subprocess.run(
        [str(MLOPS), "--project", str(project), *args], capture_output=True, text=True, timeout=300, cwd=project
    )


def assert_config_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_train__untrusted_import_path_is_refused_and_never_runs(tmp_path: Path):
    marker = tmp_path / "ran"
    config = (
        "model:\n  candidates:\n    - name: shell\n      estimator: os:system\n"
        f"      params: {{command: 'touch {marker}'}}\n"
    )

    result = run_mlops(tmp_path, config, "train")

    assert_config_error(result, "os:system", "does not trust", "model.trusted_packages")
    assert not marker.exists(), "the configured command ran"


def test_train__trusted_package_still_needs_an_estimator_class(tmp_path: Path):
    marker = tmp_path / "ran"
    config = (
        "model:\n  trusted_packages: [os]\n  candidates:\n    - name: shell\n      estimator: os:system\n"
        f"      params: {{command: 'touch {marker}'}}\n"
    )

    result = run_mlops(tmp_path, config, "train")

    assert_config_error(result, "'os:system' is not an estimator class")
    assert not marker.exists(), "the configured command ran"


def test_monitor__untrusted_retrain_data_function_is_refused_when_the_config_loads(tmp_path: Path):
    result = run_mlops(tmp_path, "monitoring:\n  retrain_data: os:system\n", "monitor")

    assert_config_error(result, "monitoring.retrain_data", "does not trust", "model.trusted_packages")


def test_estimator_class__sklearn_and_trusted_packages_only():
    from sklearn.tree import DecisionTreeClassifier

    assert estimator_class("sklearn.tree:DecisionTreeClassifier") is DecisionTreeClassifier
    with pytest.raises(ConfigError, match="does not trust"):
        estimator_class("subprocess:Popen")
    with pytest.raises(ConfigError, match="not an estimator class"):
        estimator_class("sklearn.utils:shuffle")


@pytest.mark.parametrize("name", ["../evil", "with space", "x" * 64])
def test_load__model_name_that_cannot_name_a_model_is_refused(tmp_path: Path, name: str):
    result = run_mlops(tmp_path, f"model:\n  name: '{name}'\n", "train")

    assert_config_error(result, "model.name", "cannot name an MLflow model")
    assert not (tmp_path / ".mlops" / "mlflow.db").exists(), "nothing was trained or stored"


def test_load__yaml_nested_thousands_deep_is_a_config_error(tmp_path: Path):
    result = run_mlops(tmp_path, "model:\n  params: " + "[" * 5000 + "]" * 5000 + "\n", "config")

    assert_config_error(result, "nested more than", "levels deep")


def test_load__state_dir_that_cannot_be_created_is_a_config_error(tmp_path: Path):
    result = run_mlops(tmp_path, "state_dir: /proc/nope\n", "compare")

    assert_config_error(result, "state_dir /proc/nope cannot be created", "--state-dir")


def test_load__state_dir_that_is_a_file_is_a_config_error(tmp_path: Path):
    (tmp_path / "state").write_text("not a folder", encoding="utf-8")

    result = run_mlops(tmp_path, "state_dir: state\n", "compare")

    assert_config_error(result, "is a file, not a folder")
