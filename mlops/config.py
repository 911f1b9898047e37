"""Config as code: one optional YAML file, overridable by environment variables.

Precedence, highest first: ``MLOPS_*`` environment variables (nested keys joined
by ``__``, e.g. ``MLOPS_MONITORING__DRIFT_SHARE_THRESHOLD=0.4``), the YAML file
(``mlops.yaml`` in the working directory, or ``--config`` / ``MLOPS_CONFIG``),
then the defaults below. Relative paths are resolved against the config file's
folder (or the working directory when there is no file).

Example ``mlops.yaml``::

    state_dir: .mlops
    data:
      training: data/train.csv
    monitoring:
      drift_share_threshold: 0.3
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mlops.errors import ConfigError

__all__ = [
    "DataConfig",
    "ModelConfig",
    "MonitoringConfig",
    "ServingConfig",
    "Settings",
    "load_settings",
]

DEFAULT_CONFIG_FILE = "mlops.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(_Section):
    """Where the data and its expectation suite live."""

    training: Path = Path("data/train.csv")
    current: Path = Path("data/current.csv")
    suite: Path = Path("data/expectations/breast_cancer.json")
    target: str = "target"


class ModelConfig(_Section):
    """What is trained, how it is split and how candidates are compared."""

    name: str = "breast-cancer-classifier"
    experiment: str = "breast-cancer"
    estimator: Literal["logistic_regression", "random_forest"] = "logistic_regression"
    seed: int = 42
    test_size: float = Field(0.2, gt=0.0, lt=1.0)
    primary_metric: Literal["roc_auc", "accuracy", "f1"] = "roc_auc"
    promotion_margin: float = Field(0.0, ge=0.0, description="How much the challenger must beat the champion by.")


class ServingConfig(_Section):
    """Where the prediction endpoint listens."""

    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    alias: str = "champion"
    startup_timeout_seconds: float = Field(120.0, gt=0)
    api_key_env: str = Field("MLOPS_API_KEY", description="Name of the variable holding the API key.")
    max_request_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="Larger request bodies get 413.")
    smoke_rows: int = Field(20, ge=1, description="Reference rows the smoke test sends before traffic moves.")
    smoke_timeout_seconds: float = Field(30.0, gt=0, description="Time limit of the smoke test.")
    drain_timeout_seconds: float = Field(30.0, gt=0, description="How long a replaced version may finish requests.")


class MonitoringConfig(_Section):
    """When drift counts as drift and what it triggers."""

    drift_share_threshold: float = Field(0.3, ge=0.0, le=1.0)
    retrain_on_drift: bool = True
    min_rows: int = Field(30, ge=1)


class Settings(BaseSettings):
    """The whole configuration; frozen so a run cannot change it half-way."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix="MLOPS_",
        env_nested_delimiter="__",
        env_ignore_empty=True,
    )

    state_dir: Path = Path(".mlops")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI; default: SQLite under state_dir.")
    prefect_api_url: str | None = Field(None, description="Prefect server; default: an ephemeral one.")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    serving: ServingConfig = ServingConfig()
    monitoring: MonitoringConfig = MonitoringConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment beats the file, which arrives as init kwargs.
        return env_settings, init_settings

    # Resolved locations, so no caller joins paths by hand.
    @property
    def mlflow_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{self.state_dir / 'mlflow.db'}"

    @property
    def mlflow_artifact_dir(self) -> Path:
        return self.state_dir / "mlartifacts"

    @property
    def prefect_home(self) -> Path:
        return self.state_dir / "prefect"

    @property
    def bentoml_home(self) -> Path:
        return self.state_dir / "bentoml"

    @property
    def predictions_dir(self) -> Path:
        return self.state_dir / "predictions"

    @property
    def reports_dir(self) -> Path:
        return self.state_dir / "reports"


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> Settings:
    """Load the config file (if any), apply the environment and resolve paths.

    ``config_path`` defaults to ``$MLOPS_CONFIG``, then ``./mlops.yaml`` if it exists.
    ``state_dir`` (the ``--state-dir`` option) beats both file and environment.
    """
    path = _find_config_file(config_path)
    values = _read_yaml(path) if path else {}
    values.update(overrides)
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        source = f"config file {path}" if path else "configuration"
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"Invalid {source}: {problems}. Fix the value or remove it to use the default.") from None
    base = path.parent if path else Path.cwd()
    updates: dict[str, Any] = {"state_dir": _resolve(base, Path(state_dir) if state_dir else settings.state_dir)}
    updates["data"] = settings.data.model_copy(
        update={name: _resolve(base, getattr(settings.data, name)) for name in ("training", "current", "suite")}
    )
    return settings.model_copy(update=updates)


def _find_config_file(config_path: str | os.PathLike[str] | None) -> Path | None:
    explicit = config_path or os.environ.get("MLOPS_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist. Create it or drop --config / MLOPS_CONFIG.")
        return path.resolve()
    default = Path.cwd() / DEFAULT_CONFIG_FILE
    return default if default.is_file() else None


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Config file {path} is not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of settings, not {type(loaded).__name__}.")
    return loaded


def _resolve(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else (base / path).resolve()
