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
    environments:            # named profiles: `mlops --env staging ...` or MLOPS_ENV=staging
      staging:
        tracking_uri: http://127.0.0.1:5000
        prefect_api_url: http://127.0.0.1:4201/api

A profile's keys are the file's own, laid over it (section by section) when the profile is
picked; ``local``, the embedded defaults, needs no entry.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mlops.errors import ConfigError

__all__ = [
    "ALERT_EVENTS",
    "AlertEvent",
    "AlertsConfig",
    "BUILTIN_ESTIMATORS",
    "estimator_class",
    "CandidateConfig",
    "CLASSIFICATION_METRICS",
    "DataConfig",
    "KubernetesConfig",
    "LogsConfig",
    "ModelConfig",
    "MonitoringConfig",
    "OrchestrationConfig",
    "REGRESSION_METRICS",
    "SchedulesConfig",
    "SearchConfig",
    "ServingConfig",
    "Settings",
    "StackConfig",
    "environment_names",
    "load_settings",
]

DEFAULT_CONFIG_FILE = "mlops.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(_Section):
    """Where the data and its contract live.

    ``contract`` is the source of truth enforced at training, scoring, monitoring and
    serving; ``suite`` is the GX suite generated from it (``mlops contract suite``),
    kept beside it for GX users and logged with each training run.
    """

    name: str | None = Field(
        None, description="The dataset's name; default: the training file's name (breast_cancer for the sample)."
    )
    training: Path = Path("data/train.csv")
    current: Path = Path("data/current.csv")
    contract: Path | None = Field(None, description="Default: data/contracts/<name>.yaml.")
    suite: Path | None = Field(None, description="Default: data/expectations/<name>.json.")
    target: str = "target"


# Multi-class: f1, precision and recall are macro averages, roc_auc is one-vs-rest (macro).
CLASSIFICATION_METRICS = (
    "roc_auc", "accuracy", "balanced_accuracy", "f1", "precision", "recall", "log_loss", "average_precision"
)
REGRESSION_METRICS = ("rmse", "mae", "r2")
# The one registry of built-in estimators: task -> name -> (import path, default parameters).
# The first name of a task is its default. Anything else is an import path ``package.module:Class``
# from scikit-learn or from a package the config trusts (``model.trusted_packages``).
BUILTIN_ESTIMATORS: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    "classification": {
        "logistic_regression": ("sklearn.linear_model:LogisticRegression", {"max_iter": 1000}),
        "random_forest": ("sklearn.ensemble:RandomForestClassifier", {"n_estimators": 100}),
    },
    "regression": {
        "ridge": ("sklearn.linear_model:Ridge", {}),
        "random_forest": ("sklearn.ensemble:RandomForestRegressor", {"n_estimators": 100}),
    },
}
# Estimator classes may come from these packages without the config trusting more.
ALWAYS_TRUSTED = ("sklearn",)
_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
# What MLflow, BentoML (tags) and file paths all take: no '/', no '..' path, at most 63 characters.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
# Deeper config is a mistake or an attack (YAML nested thousands deep exhausts the parser's stack).
MAX_CONFIG_DEPTH = 32
MetricName = Literal[
    "roc_auc", "accuracy", "balanced_accuracy", "f1", "precision", "recall", "log_loss", "average_precision",
    "rmse", "mae", "r2",
]


def _check_estimator(value: str) -> str:
    known = sorted({name for names in BUILTIN_ESTIMATORS.values() for name in names})
    if ":" not in value and value not in known:
        raise ValueError(f"unknown estimator '{value}'; use one of {known} or an import path 'module:Class'")
    if ":" in value and not _IMPORT_PATH.match(value):
        raise ValueError(f"estimator '{value}' is not an import path 'package.module:Class'")
    return value


def estimator_class(path: str, trusted: tuple[str, ...] = ()) -> type:
    """The estimator class at ``path`` (``package.module:Class``), imported only from a trusted package.

    Refused (:class:`ConfigError`) before the module is imported when its package is not
    scikit-learn or in ``trusted``; refused after when the name is not an estimator class
    (a subclass of scikit-learn's ``BaseEstimator``, or a class with ``fit`` and ``predict``),
    so a function such as ``os:system`` is never called.
    """
    import importlib

    module_name, _, class_name = path.partition(":")
    package = module_name.split(".")[0]
    if package not in (*ALWAYS_TRUSTED, *trusted):
        raise ConfigError(
            f"Estimator '{path}' comes from '{package}', which the config does not trust. Use a scikit-learn "
            f"estimator, or add '{package}' to model.trusted_packages if its code is yours to run."
        )
    try:
        found = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"Cannot import estimator '{path}': {exc}. Check model.estimator / model.candidates.") from None
    if not _is_estimator_class(found):
        raise ConfigError(
            f"'{path}' is not an estimator class (a scikit-learn BaseEstimator, or a class with fit and predict). "
            "Name an estimator class in model.estimator / model.candidates."
        )
    return found


def _is_estimator_class(found: Any) -> bool:
    from sklearn.base import BaseEstimator

    if not isinstance(found, type):
        return False
    fits_and_predicts = callable(getattr(found, "fit", None)) and callable(getattr(found, "predict", None))
    return issubclass(found, BaseEstimator) or fits_and_predicts


class CandidateConfig(_Section):
    """One estimator to try, with the hyperparameter values to search over.

    ``estimator`` is a built-in name (``logistic_regression``, ``random_forest``,
    ``ridge``) or an import path ``package.module:Class`` of a scikit-learn estimator.
    ``space`` maps the estimator's parameter names to the values to try.
    """

    name: str = Field(min_length=1)
    estimator: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict, description="Fixed parameters of the estimator.")
    space: dict[str, list[Any]] = Field(default_factory=dict, description="Parameter name -> values to try.")

    @field_validator("estimator")
    @classmethod
    def _known_estimator(cls, value: str) -> str:
        return _check_estimator(value)


class SearchConfig(_Section):
    """How each candidate's hyperparameter space is searched (scikit-learn's search classes)."""

    kind: Literal["grid", "random"] = "grid"
    n_iter: int = Field(4, ge=1, description="Trials per candidate for kind=random.")
    cv_folds: int = Field(3, ge=2)
    n_jobs: int = Field(1, description="Parallel fits (-1: every core).")


class ModelConfig(_Section):
    """What is trained, how it is split and how candidates are compared.

    With no ``candidates`` the single ``estimator`` is trained with its built-in space.
    ``floors`` are absolute: a minimum for metrics where higher is better
    (``accuracy: 0.9``), a maximum for error metrics (``rmse: 60``).
    """

    name: str = Field("breast-cancer-classifier", description="Default: <dataset>-classifier / -regressor.")
    experiment: str = Field("breast-cancer", description="Default: the dataset's name.")
    task: Literal["classification", "regression"] = Field(
        "classification", description="Default: the data contract's task."
    )
    estimator: str | None = Field(
        None, description="Estimator used when no candidates are given; default: logistic_regression / ridge."
    )
    candidates: tuple[CandidateConfig, ...] = ()
    trusted_packages: tuple[str, ...] = Field(
        (), description="Packages besides scikit-learn whose estimator classes may be named, e.g. [xgboost]."
    )
    search: SearchConfig = SearchConfig()
    seed: int = 42
    test_size: float = Field(0.2, gt=0.0, lt=1.0)
    primary_metric: MetricName | None = Field(None, description="Default: roc_auc (classification), rmse (regression).")
    positive_label: str | int | bool | None = Field(
        None, description="Binary classification: the class f1/precision/recall/roc_auc are about; default: last sorted."
    )
    promotion_margin: float = Field(0.0, ge=0.0, description="How much the challenger must beat the champion by.")
    floors: dict[MetricName, float] = Field(default_factory=dict, description="Absolute limits on holdout metrics.")

    @field_validator("estimator")
    @classmethod
    def _known_estimator(cls, value: str | None) -> str | None:
        return value if value is None else _check_estimator(value)

    @field_validator("name")
    @classmethod
    def _usable_name(cls, value: str) -> str:
        if not _MODEL_NAME.match(value):
            raise ValueError(
                f"model name {value!r} cannot name an MLflow model, a BentoML tag and a folder: use 1-63 letters, "
                "digits, '.', '_' or '-', starting and ending with a letter or digit (no '/', no spaces)"
            )
        return value

    @model_validator(mode="after")
    def _metrics_fit_the_task(self) -> ModelConfig:
        allowed = CLASSIFICATION_METRICS if self.task == "classification" else REGRESSION_METRICS
        wrong = [name for name in (self.primary_metric, *self.floors) if name is not None and name not in allowed]
        if wrong:
            raise ValueError(f"metric(s) {wrong} do not apply to {self.task}; use one of {list(allowed)}")
        builtins = BUILTIN_ESTIMATORS[self.task]
        names = [self.estimator_name, *(candidate.estimator for candidate in self.candidates)]
        if misfit := [name for name in names if ":" not in name and name not in builtins]:
            raise ValueError(
                f"estimator(s) {misfit} are not built in for {self.task}; use {list(builtins)} or 'module:Class'"
            )
        trusted = (*ALWAYS_TRUSTED, *self.trusted_packages)
        if untrusted := [name for name in names if ":" in name and name.split(".")[0].split(":")[0] not in trusted]:
            raise ValueError(
                f"estimator(s) {untrusted} come from packages the config does not trust; use scikit-learn "
                "estimators, or list the package in model.trusted_packages if its code is yours to run"
            )
        for name in {name for name in names if ":" in name}:
            estimator_class(name, self.trusted_packages)  # an estimator class, checked before anything runs
        return self

    @property
    def estimator_name(self) -> str:
        """The single estimator trained when no candidates are given, defaulted per task."""
        return self.estimator or next(iter(BUILTIN_ESTIMATORS[self.task]))

    @property
    def metric(self) -> str:
        """The primary metric, defaulted per task."""
        return self.primary_metric or ("roc_auc" if self.task == "classification" else "rmse")


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
    instances: int = Field(
        1, ge=1, le=16, description="Model servers of the deployed version behind the proxy (2: a killed one loses no request)."
    )
    batch_max_size: int = Field(64, ge=1, description="Most records merged into one model call.")
    access_log: bool = Field(False, description="BentoML's per-request access log (CPU on every request: off by default).")
    batch_max_latency_ms: int = Field(
        1000, ge=1, description="/predict_batched deadline: queued records expected to miss it are answered 503."
    )
    max_records: int = Field(
        10_000, ge=1, description="Most records (or Arrow rows) one request may hold; more get 413 before any is checked."
    )
    max_json_depth: int = Field(
        32, ge=3, le=200, description="Deepest nesting of objects and lists in a JSON body (a record is at depth 3)."
    )
    max_json_values: int = Field(
        2_000_000, ge=1000, description="Most JSON values and keys one body may hold; more get 413 before parsing."
    )
    log_max_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, description="The server log (state/logs/serve-PORT.log) rotates at this size."
    )
    log_backups: int = Field(3, ge=1, description="Rotated server logs kept (serve-PORT.log.1, ...).")


# A Kubernetes quantity as requests and limits take it: 500m, 1, 1.5, 512Mi, 1G.
_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"
_QUANTITY_UNITS = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


def _quantity(value: str) -> float:
    """``500m`` -> 0.5, ``1Ki`` -> 1024.0: enough to compare a request with its limit."""
    number = value.rstrip("mkMGTi")
    return float(number) * _QUANTITY_UNITS.get(value[len(number):], 1.0)


class KubernetesConfig(_Section):
    """What ``mlops k8s render`` writes for a cluster (docs/cluster.md): where, how many, how big.

    Checked here, not by the cluster: an HPA whose minimum exceeds its maximum, or a
    request above its limit, would be refused at ``kubectl apply``, far from the config.
    """

    namespace: str = Field("mlops", pattern=_DNS_LABEL, description="The namespace every object is rendered in (create it first).")
    replicas: int = Field(2, ge=1, description="Pods the Deployment starts with; the autoscaler moves it between min and max.")
    min_replicas: int = Field(2, ge=1, description="The autoscaler's floor (2: a drained node leaves one pod serving).")
    max_replicas: int = Field(5, ge=1, description="The autoscaler's ceiling.")
    cpu_target_percent: int = Field(70, ge=1, le=100, description="Average CPU use, as a share of the request, the autoscaler aims at.")
    cpu_request: str = Field("500m", pattern=_QUANTITY, description="CPU each pod is guaranteed (the autoscaler's 100%).")
    cpu_limit: str = Field("1", pattern=_QUANTITY, description="CPU each pod may use at most (throttled above).")
    memory_request: str = Field("512Mi", pattern=_QUANTITY, description="Memory each pod is guaranteed.")
    memory_limit: str = Field("1Gi", pattern=_QUANTITY, description="Memory each pod may use at most (killed above).")
    secret_name: str | None = Field(
        None, pattern=_DNS_LABEL, description="The Secret holding the API key; default: <model name>-api-key."
    )
    secret_key: str = Field("api-key", pattern=r"^[-._a-zA-Z0-9]+$", description="The key of that Secret holding the API key.")
    image: str | None = Field(None, min_length=1, description="The image to run; default: the packaged Bento's name:version.")
    max_unavailable: int | None = Field(
        None, ge=1, description="The disruption budget's maxUnavailable; default: minAvailable 1."
    )

    @model_validator(mode="after")
    def _consistent(self) -> KubernetesConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        if not self.min_replicas <= self.replicas <= self.max_replicas:
            raise ValueError(f"replicas ({self.replicas}) is outside min_replicas..max_replicas ({self.min_replicas}..{self.max_replicas})")
        for name, request, limit in (("cpu", self.cpu_request, self.cpu_limit), ("memory", self.memory_request, self.memory_limit)):
            if _quantity(request) > _quantity(limit):
                raise ValueError(f"{name}_request ({request}) is above {name}_limit ({limit})")
        return self


class MonitoringConfig(_Section):
    """When drift counts as drift and what it triggers."""

    drift_share_threshold: float = Field(0.3, ge=0.0, le=1.0)
    retrain_on_drift: bool = True
    min_rows: int = Field(30, ge=1, description="Smallest window that may trigger a retrain.")
    quality_metric: Literal["accuracy", "balanced_accuracy", "f1", "rmse", "mae", "r2"] | None = Field(
        None, description="Default: accuracy (classification), rmse (regression)."
    )
    quality_floor: float | None = Field(None, description="Retrain when quality on labeled rows falls past it.")
    cooldown_minutes: float = Field(60.0, ge=0, description="Minimum time between two automatic retrains.")
    max_retrains_per_day: int = Field(3, ge=0)
    window_rows: int | None = Field(10_000, ge=1, description="Newest logged predictions checked (None: all).")
    window_minutes: float | None = Field(None, gt=0, description="Only predictions logged in the last N minutes.")
    labels: Path | None = Field(
        None, description="A ground-truth file (request_id, label[, record]) instead of the label store."
    )
    retrain_data: str = Field(
        "reference+labeled",
        pattern=r"^(reference|reference\+labeled|[A-Za-z_][\w.]*:[A-Za-z_]\w*)$",
        description="reference, reference+labeled, or module:function(settings, labeled) returning a CSV path.",
    )
    retrain_without_labels: bool = Field(
        False, description="Retrain on drift with no labeled window rows (it would reproduce the champion)."
    )
    labeled_rows: int | None = Field(
        None, ge=1, description="Newest labeled window rows a reference+labeled retrain uses (None: all)."
    )
    labeled_share: float = Field(
        1.0, gt=0.0, le=1.0, description="Newest share of those rows a reference+labeled retrain uses (1: all)."
    )
    labeled_weight: float = Field(
        1.0, gt=0.0, description="Weight of a labeled window row against a training row in a retrain (3: counts triple)."
    )
    auto_promote: bool = Field(
        True, description="A retrain that passes the gate is champion and deployed; false: it waits for `mlops promote`."
    )
    recent_eval_share: float = Field(
        0.3, ge=0.0, lt=1.0, description="Newest share of the labeled rows held out to judge a retrain, never trained on."
    )


class SchedulesConfig(_Section):
    """When the scheduled flows run (``mlops schedule``)."""

    training_cron: str = Field("0 3 * * *", description="Cron (UTC) of the scheduled retraining.")
    monitoring_interval_minutes: float = Field(60.0, gt=0, description="Minutes between monitoring runs.")
    prefect_port: int = Field(4200, ge=1, le=65535, description="Port of the local Prefect server schedules start.")
    work_pool: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
        description="A Prefect work pool of the configured server: `mlops schedule` registers the deployments there for "
        "its workers (`mlops stack up` starts one) and returns, instead of serving them from its own process.",
    )


class OrchestrationConfig(_Section):
    """Where a flow's tasks run: Prefect's thread pool in the flow's process, or a Dask cluster.

    With ``dask``, each candidate's search is a task run of its own on a Dask worker
    (``prefect-dask``): ``dask_address`` is a running scheduler's; without one a local
    cluster of ``dask_workers`` processes on 127.0.0.1 lives as long as the flow run.
    """

    task_runner: Literal["threads", "dask"] = Field(
        "threads", description="threads: Prefect's ThreadPoolTaskRunner in the flow's process; dask: prefect-dask's DaskTaskRunner."
    )
    dask_address: str | None = Field(
        None,
        pattern=r"^(tcp|tls)://[^\s/:]+:[0-9]{1,5}$",
        description="A running Dask scheduler, e.g. tcp://scheduler:8786; default: a local cluster started for each flow run.",
    )
    dask_workers: int = Field(2, ge=1, description="Worker processes of the local cluster.")
    dask_threads_per_worker: int = Field(1, ge=1, description="Threads of each local worker.")


# The events a flow can alert on (:func:`mlops.alerts.send_alert`); ``alerts.events`` picks among them.
AlertEvent = Literal[
    "drift_detected", "gate_rejected", "deployment_rolled_back", "flow_failed", "retrain_needs_labels", "challenger_waiting"
]
ALERT_EVENTS: tuple[AlertEvent, ...] = get_args(AlertEvent)


class AlertsConfig(_Section):
    """Where alerts go: a webhook (JSON POST) and/or a Prefect notification block."""

    webhook_url: SecretStr | None = Field(None, description="May hold a token: give it by environment, never logged.")
    prefect_block: str | None = Field(
        None, description="A saved Prefect notification block as 'type-slug/name', e.g. 'slack-webhook/ops'."
    )
    events: tuple[AlertEvent, ...] = Field(ALERT_EVENTS, description="The events that are sent; the others are only logged.")
    timeout_seconds: float = Field(5.0, gt=0)


class LogsConfig(_Section):
    """The commands' log lines on standard error (:mod:`mlops.logs`); Prefect's run pages get every line anyway."""

    format: Literal["auto", "text", "json"] = Field(
        "auto", description="auto: text on a terminal, JSON lines otherwise (CI, containers, cron)."
    )
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = Field(
        None, description="Lowest level shown; default: INFO for JSON, WARNING for text (the progress spinner shows the stage)."
    )


class StackConfig(_Section):
    """The server stack ``mlops stack up`` runs on 127.0.0.1, its data under ``<state_dir>/stack``.

    PostgreSQL (Debian's packages), an ``mlflow server`` on it serving artifacts over HTTP, a
    Prefect server on it and a process worker on the work pool: point a profile at the two
    servers (``tracking_uri: http://127.0.0.1:5000``, ``prefect_api_url: http://127.0.0.1:4201/api``).
    """

    postgres_port: int = Field(5433, ge=1, le=65535, description="PostgreSQL's port (5432 is left to a system server).")
    mlflow_port: int = Field(5000, ge=1, le=65535, description="The MLflow tracking server's port.")
    prefect_port: int = Field(4201, ge=1, le=65535, description="The Prefect server's port (4200 is `mlops schedule`'s local one).")
    work_pool: str = Field("mlops", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", description="The process work pool the worker serves.")
    postgres_bin: Path | None = Field(
        None, description="Folder holding initdb and postgres; default: the newest /usr/lib/postgresql/*/bin, else PATH."
    )
    startup_timeout_seconds: float = Field(180.0, gt=0, description="How long each server may take to answer.")

    def profile(self) -> dict[str, Any]:
        """The settings of a profile that uses this stack (``environments: {staging: ...}``)."""
        return {
            "tracking_uri": f"http://127.0.0.1:{self.mlflow_port}",
            "prefect_api_url": f"http://127.0.0.1:{self.prefect_port}/api",
            "schedules": {"work_pool": self.work_pool},
        }


_ENTRY_POINT = r"^[^:]+\.py:[A-Za-z_][A-Za-z0-9_]*$"


class ProjectConfig(_Section):
    """The project's own code, as ``file.py:name`` relative to the project folder (Prefect's entrypoint form).

    A default entry point whose file the project does not have is the framework's own
    (the reference project's file, shipped in :mod:`mlops` as a template).
    """

    root: Path = Field(Path("."), description="The project folder (default: the config file's folder).")
    training: str = Field("flows/training.py:training_flow", pattern=_ENTRY_POINT, description="The training flow.")
    monitoring: str = Field("flows/monitoring.py:monitoring_flow", pattern=_ENTRY_POINT, description="The monitoring flow.")
    scoring: str = Field("flows/scoring.py:scoring_flow", pattern=_ENTRY_POINT, description="The batch scoring flow.")
    service: str = Field("models/service.py:Predictor", pattern=_ENTRY_POINT, description="The BentoML service.")


class Settings(BaseSettings):
    """The whole configuration; frozen so a run cannot change it half-way."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix="MLOPS_",
        env_nested_delimiter="__",
        env_ignore_empty=True,
    )

    environment: str = Field("local", description="The profile in use (set by --env / MLOPS_ENV, not in the file).")
    state_dir: Path = Path(".mlops")
    tracking_uri: SecretStr | None = Field(
        None, description="MLflow tracking URI (may hold a password); default: SQLite under state_dir."
    )
    artifact_location: str | None = Field(
        None,
        description="Where new experiments keep artifacts (a URI: s3://..., file:///...); default: the tracking server's "
        "(served over HTTP by `mlflow server --serve-artifacts`), or mlartifacts under state_dir for a local store.",
    )
    prefect_api_url: str | None = Field(None, description="Prefect server; default: an ephemeral one.")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    serving: ServingConfig = ServingConfig()
    kubernetes: KubernetesConfig = KubernetesConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    schedules: SchedulesConfig = SchedulesConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()
    alerts: AlertsConfig = AlertsConfig()
    logs: LogsConfig = LogsConfig()
    project: ProjectConfig = ProjectConfig()
    stack: StackConfig = StackConfig()

    @model_validator(mode="after")
    def _retrain_data_is_trusted(self) -> Settings:
        """A ``module:function`` retrain source is code the config runs: only from a package it trusts."""
        module = self.monitoring.retrain_data.partition(":")[0]
        if ":" in self.monitoring.retrain_data and module.split(".")[0] not in self.model.trusted_packages:
            raise ValueError(
                f"monitoring.retrain_data '{self.monitoring.retrain_data}' runs code from '{module.split('.')[0]}', "
                "which the config does not trust; list the package in model.trusted_packages if its code is yours "
                "to run, or use reference / reference+labeled"
            )
        return self

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
        if self.tracking_uri is not None:
            uri = self.tracking_uri.get_secret_value()
            # SQLAlchemy's plain postgresql:// means psycopg2; the lock ships psycopg (3).
            return "postgresql+psycopg://" + uri.removeprefix("postgresql://") if uri.startswith("postgresql://") else uri
        return f"sqlite:///{self.state_dir / 'mlflow.db'}"

    @property
    def tracking_uri_shown(self) -> str:
        """The tracking URI as it may be printed: the local default, or a configured server, credentials hidden."""
        return self.mlflow_tracking_uri if self.tracking_uri is None else "configured tracking server (hidden)"

    @property
    def mlflow_artifact_dir(self) -> Path:
        return self.state_dir / "mlartifacts"

    @property
    def experiment_artifact_location(self) -> str | None:
        """The artifact location a new experiment is created with; None leaves it to the tracking server."""
        if self.artifact_location is not None:
            return self.artifact_location
        if self.mlflow_tracking_uri.startswith(("http://", "https://")):
            return None
        return self.mlflow_artifact_dir.resolve().as_uri()  # MLflow's own default would be ./mlruns in the CWD

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
    def labels_dir(self) -> Path:
        return self.state_dir / "labels"

    @property
    def reports_dir(self) -> Path:
        return self.state_dir / "reports"


LOCAL_ENVIRONMENT = "local"


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    project: str | os.PathLike[str] | None = None,
    environment: str | None = None,
    **overrides: Any,
) -> Settings:
    """Load the config file (if any) with its profile, apply the environment and resolve paths.

    ``config_path`` defaults to ``$MLOPS_CONFIG``, then ``mlops.yaml`` in ``project``
    (the ``--project`` option; default: the working directory or the nearest folder above
    it with an ``mlops.yaml``) if it exists. Relative
    paths in the file are the project folder's. ``environment`` (``--env``, default
    ``$MLOPS_ENV``, then ``local``) picks a profile of the file's ``environments``.
    ``state_dir`` (the ``--state-dir`` option) beats file, profile and environment.
    """
    folder = Path(project).resolve() if project is not None else _project_folder(Path.cwd())
    if project is not None and not folder.is_dir():
        raise ConfigError(f"Project folder {project} does not exist. Give a folder with mlops.yaml (mlops init DIR makes one).")
    path = _find_config_file(config_path, folder)
    name = environment or os.environ.get("MLOPS_ENV") or LOCAL_ENVIRONMENT
    file_values = _read_yaml(path) if path else {}
    named = _environments(file_values, path)
    profile, profile_names = _profile(named, name, path), set(named)
    values = _merged(_merged(file_values, profile), overrides) | {"environment": name}
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        source = (f"config file {path}" if path else "configuration") + (f" (profile '{name}')" if name in profile_names else "")
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"Invalid {source}: {problems}. Fix the value or remove it to use the default.") from None
    base = path.parent if path else folder
    updates: dict[str, Any] = {
        "project": settings.project.model_copy(update={"root": _resolve(base, settings.project.root)}),
        # --state-dir is the user's own: relative to where they are, not to the config file.
        "state_dir": _resolve(Path.cwd(), Path(state_dir)) if state_dir else _resolve(base, settings.state_dir)
    }
    _check_state_dir(updates["state_dir"])
    updates["data"] = _resolved_data(settings.data, base)
    updates["model"] = _model_for_data(settings.model, updates["data"])
    updates["monitoring"] = _monitoring_for_task(settings.monitoring, updates["model"].task, base)
    return settings.model_copy(update=updates)


def environment_names(config_path: str | os.PathLike[str] | None = None, project: str | os.PathLike[str] | None = None) -> list[str]:
    """The profiles a project can run in: ``local`` and those of its file's ``environments``."""
    folder = Path(project).resolve() if project is not None else _project_folder(Path.cwd())
    path = _find_config_file(config_path, folder)
    named = _environments(_read_yaml(path) if path else {}, path)
    return [LOCAL_ENVIRONMENT, *(key for key in named if key != LOCAL_ENVIRONMENT)]


def _environments(file_values: dict[str, Any], path: Path | None) -> dict[str, dict[str, Any]]:
    """The file's ``environments`` mapping (taken out of ``file_values``), each a mapping of settings."""
    if "environment" in file_values:
        raise ConfigError(f"{path} sets 'environment': the profile is picked with --env / MLOPS_ENV, among those under 'environments:'.")
    named = file_values.pop("environments", None) or {}
    if not isinstance(named, dict) or not all(isinstance(value, dict) or value is None for value in named.values()):
        raise ConfigError(
            f"'environments' in {path} must map each profile name to its settings, e.g. environments: {{staging: {{tracking_uri: ...}}}}."
        )
    for key, value in named.items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", str(key)):
            raise ConfigError(f"Profile name '{key}' in {path}: use letters, digits, '-' and '_'.")
        if value and {"environments", "environment"} & set(value):
            raise ConfigError(f"Profile '{key}' in {path} sets 'environments' or 'environment': a profile holds settings only.")
    return {str(key): value or {} for key, value in named.items()}


def _profile(named: dict[str, dict[str, Any]], name: str, path: Path | None) -> dict[str, Any]:
    if name in named:
        return named[name]
    if name == LOCAL_ENVIRONMENT:
        return {}
    known = ", ".join([LOCAL_ENVIRONMENT, *named]) if named else LOCAL_ENVIRONMENT
    where = f"{path}" if path else "the built-in defaults (no mlops.yaml)"
    raise ConfigError(
        f"No profile '{name}' in {where}; the profiles are: {known}. "
        "Pick one with --env / MLOPS_ENV, or add it under 'environments:' in mlops.yaml."
    )


SAMPLE_DATASET = "breast_cancer"


def dataset_name(training: Path) -> str:
    """A dataset's name from its file: ``Bank Marketing (v2).csv`` -> ``bank_marketing_v2``."""
    import re

    name = re.sub(r"[^0-9a-zA-Z]+", "_", training.stem).strip("_").lower()
    return name or "dataset"


def _resolved_data(data: DataConfig, base: Path) -> DataConfig:
    """Absolute paths; the contract and suite named after the dataset unless given."""
    given = data.model_fields_set
    name = data.name or (dataset_name(data.training) if "training" in given else SAMPLE_DATASET)
    contract = data.contract or Path("data/contracts") / f"{name}.yaml"
    suite = data.suite or Path("data/expectations") / f"{name}.json"
    paths = {"training": data.training, "current": data.current, "contract": contract, "suite": suite}
    resolved = data.model_copy(update={"name": name, **{key: _resolve(base, value) for key, value in paths.items()}})
    return _as_given(resolved, given)


def _as_given(section: Any, given: set[str]) -> Any:
    """``section`` remembering which fields the user set (defaults filled in here don't count)."""
    return type(section).model_construct(_fields_set=set(given), **dict(section))


def _model_for_data(model: ModelConfig, data: DataConfig) -> ModelConfig:
    """The task from the data contract, and names from the dataset, unless the config sets them."""
    given = model.model_fields_set
    contract_task = _contract_task(data.contract)
    if contract_task and "task" in given and model.task != contract_task:
        raise ConfigError(
            f"model.task is '{model.task}' but the data contract {data.contract} says '{contract_task}'. "
            "Remove model.task (the contract decides), or draft the contract again."
        )
    task = model.task if "task" in given or not contract_task else contract_task
    role = "classifier" if task == "classification" else "regressor"
    dataset = (data.name or SAMPLE_DATASET).replace("_", "-")
    defaults = {"task": task, "name": f"{dataset}-{role}", "experiment": dataset}
    values = {key: getattr(model, key) for key in given} | {k: v for k, v in defaults.items() if k not in given}
    try:
        return _as_given(ModelConfig(**values), given)
    except ValidationError as exc:
        problems = "; ".join(f"model.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"Invalid configuration for this dataset's {task} task: {problems}.") from None


def _monitoring_for_task(monitoring: MonitoringConfig, task: str, base: Path) -> MonitoringConfig:
    metric = monitoring.quality_metric or ("accuracy" if task == "classification" else "rmse")
    allowed = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    if metric not in allowed:
        raise ConfigError(
            f"monitoring.quality_metric '{metric}' does not apply to {task}; use one of {list(allowed)}."
        )
    labels = _resolve(base, monitoring.labels) if monitoring.labels is not None else None
    return monitoring.model_copy(update={"quality_metric": metric, "labels": labels})


def _contract_task(path: Path | None) -> str | None:
    """The task a contract file declares, or None when there is no readable one yet."""
    import yaml

    if path is None:
        return None
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    task = loaded.get("task") if isinstance(loaded, dict) else None
    return task if task in ("classification", "regression") else None


def _project_folder(start: Path) -> Path:
    """The nearest folder from ``start`` upwards holding ``mlops.yaml`` (as git finds its repository); else ``start``."""
    for folder in (start, *start.parents):
        if (folder / DEFAULT_CONFIG_FILE).is_file():
            return folder
    return start


def _merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` on top of ``base``, section by section: ``model={"seed": 1}`` keeps the file's other model keys."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = _merged(merged[key], value)
        merged[key] = value
    return merged


def _find_config_file(config_path: str | os.PathLike[str] | None, folder: Path) -> Path | None:
    explicit = config_path or os.environ.get("MLOPS_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist. Create it or drop --config / MLOPS_CONFIG.")
        return path.resolve()
    default = folder / DEFAULT_CONFIG_FILE
    return default if default.is_file() else None


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Config file {path} is not valid YAML: {exc}") from None
    except RecursionError:  # deeper than Python's stack, so deeper than the limit below
        raise _too_deep(path) from None
    except OSError as exc:
        raise ConfigError(f"Config file {path} cannot be read ({exc.strerror}). Check the path and its permissions.") from None
    if _depth(loaded) > MAX_CONFIG_DEPTH:
        raise _too_deep(path)
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of settings, not {type(loaded).__name__}.")
    return loaded


def _too_deep(path: Path) -> ConfigError:
    return ConfigError(
        f"Config file {path} is nested more than {MAX_CONFIG_DEPTH} levels deep. "
        "A config is a few sections of settings: flatten it."
    )


def _depth(value: Any) -> int:
    """How deeply lists and mappings nest in ``value``, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if level + 1 > MAX_CONFIG_DEPTH:
                    return level + 1
                stack.append((child, level + 1))
        deepest = max(deepest, level)
    return deepest if isinstance(value, (dict, list)) else 0


def _check_state_dir(path: Path) -> None:
    """The state folder exists as a writable folder, or can be made: else a :class:`ConfigError` now.

    Checked when the config loads, not when a tool first writes there (a traceback then).
    """
    import tempfile

    hint = "Set state_dir (or --state-dir / MLOPS_STATE_DIR) to a folder you can write."
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"state_dir {path} is a file, not a folder. {hint}")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"state_dir {path} is not writable. {hint}")
        return
    parent = next((folder for folder in path.parents if folder.exists()), None)
    if parent is None or not parent.is_dir():
        raise ConfigError(f"state_dir {path} cannot be created: {parent} is not a folder. {hint}")
    try:  # a real attempt: /proc and read-only mounts refuse even root, which os.access does not tell
        os.rmdir(tempfile.mkdtemp(prefix=".mlops-probe-", dir=parent))
    except OSError as exc:
        raise ConfigError(f"state_dir {path} cannot be created in {parent} ({exc.strerror}). {hint}") from None


def _resolve(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else (base / path).resolve()
