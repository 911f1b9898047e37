from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from mlops.config import load_settings
from mlops.errors import ConfigError


def test_load_settings__defaults_resolve_against_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLOPS_STATE_DIR", raising=False)
    settings = load_settings()
    assert settings.state_dir == tmp_path / ".mlops"
    assert settings.data.training == tmp_path / "data" / "train.csv"
    assert settings.mlflow_tracking_uri == f"sqlite:///{tmp_path / '.mlops' / 'mlflow.db'}"
    assert settings.serving.host == "127.0.0.1"


def test_load_settings__file_values_and_paths_relative_to_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "conf" / "mlops.yaml"
    config.parent.mkdir()
    config.write_text("state_dir: state\ndata:\n  training: d/train.csv\nmonitoring:\n  drift_share_threshold: 0.5\n")
    settings = load_settings(config)
    assert settings.state_dir == config.parent / "state"
    assert settings.data.training == config.parent / "d" / "train.csv"
    assert settings.monitoring.drift_share_threshold == 0.5


def test_load_settings__environment_beats_file(tmp_path, monkeypatch):
    config = tmp_path / "mlops.yaml"
    config.write_text("monitoring:\n  drift_share_threshold: 0.5\nserving:\n  port: 4000\n")
    monkeypatch.setenv("MLOPS_MONITORING__DRIFT_SHARE_THRESHOLD", "0.7")
    settings = load_settings(config)
    assert settings.monitoring.drift_share_threshold == 0.7
    assert settings.serving.port == 4000


def test_load_settings__state_dir_argument_beats_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_STATE_DIR", str(tmp_path / "from-env"))
    assert load_settings(state_dir=tmp_path / "from-option").state_dir == tmp_path / "from-option"
    assert load_settings().state_dir == tmp_path / "from-env"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("serving:\n  port: 99999\n", "serving.port"),
        ("unknown_key: 1\n", "unknown_key"),
        ("monitoring: [1, 2\n", "not valid YAML"),
        ("- a list\n", "must hold a mapping"),
        ("model:\n  estimator: xgboost\n", "model.estimator"),
    ],
)
def test_load_settings__bad_file_is_a_config_error_naming_the_problem(tmp_path, text, expected):
    config = tmp_path / "mlops.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=expected) as raised:
        load_settings(config)
    assert raised.value.exit_code == 2


def test_load_settings__missing_explicit_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_load_settings__settings_are_frozen(tmp_path):
    settings = load_settings(state_dir=tmp_path)
    with pytest.raises(ValidationError):
        settings.state_dir = Path("/elsewhere")  # type: ignore[misc]
