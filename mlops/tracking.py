"""Track runs and register models in MLflow; the champion gate and its audit trail.

One training run is one parent MLflow run (params, ``holdout_*`` metrics, plots,
split manifest, model card, the model, lineage tags) with one nested child run
per hyperparameter trial. Its model becomes a new version with alias
``challenger``. The gate re-scores the current champion on the same holdout and
moves ``champion`` to the challenger only when it beats the champion by the
configured margin (in the metric's direction: up for accuracy-like metrics,
down for rmse/mae) and meets the absolute floors; the replaced champion keeps
alias ``previous``. The decision and its reasons are written on the version as
tags for both outcomes.

Every alias move (gate, ``mlops promote``, ``mlops rollback``) happens under one
lock, :func:`registry_lock`, and is recorded (who, when, why) as version tags and
in the audit log ``<state_dir>/audit.jsonl`` (:mod:`mlops.audit`).

MLflow is reached through ``MLFLOW_TRACKING_URI`` (set by
:func:`mlops.environment.tool_environment`).

A version is created tagged ``mlops.status=incomplete`` and becomes ``complete`` when the
gate has judged it, before any alias moves to it: a training stopped in between (its
tracking server died) leaves a version nothing promotes or serves, and a run left RUNNING;
:func:`clean_leftovers` (``mlops doctor``, and every training) finds and cleans both. The
first use of a new SQLite store is serialized by :func:`ensure_store`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd
from filelock import FileLock
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from prefect import runtime
from sklearn.metrics import ConfusionMatrixDisplay, PredictionErrorDisplay, RocCurveDisplay
from sklearn.pipeline import Pipeline

from mlops import audit
from mlops.contract import contract_file, contract_files
from mlops.errors import RegistryError
from mlops.locks import LockTimeout, shared_lock
from mlops.metrics import higher_is_better, positive_label
from mlops.training import evaluate

if TYPE_CHECKING:
    from mlops.config import Settings
    from mlops.training import DataSplit, TrainedModel, Trial

__all__ = [
    "AUDIT_FILE",
    "CHALLENGER",
    "CHAMPION",
    "PREVIOUS",
    "EvaluationSet",
    "Leftovers",
    "PromotionDecision",
    "RegisteredVersion",
    "VersionSummary",
    "apply_promotion",
    "champion_version",
    "clean_leftovers",
    "decide_promotion",
    "ensure_experiment",
    "ensure_store",
    "gate_challenger",
    "list_versions",
    "log_and_register",
    "log_model_card",
    "model_card",
    "prefect_tags",
    "promote_version",
    "read_audit",
    "read_model_card",
    "reference_fingerprint",
    "reference_snapshot",
    "registry_lock",
    "rollback",
    "summaries_as_dicts",
    "tag_version",
]

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
TAG_PREFIX = "mlops."
REFERENCE_ROWS = 200_000  # rows of training data kept as the monitoring reference
AUDIT_FILE = "audit.jsonl"  # mlops.audit.AUDIT_FILE: every audited change, alias moves among them
LOCK_FILE = "registry.lock"
LOCK_TIMEOUT_SECONDS = 600.0
STORE_LOCK_FILE = "mlflow-store.lock"
MODEL_CARD = "model_card.md"  # the training run's card artifact
# A version is created ``incomplete`` and becomes ``complete`` once the gate has judged it:
# a training stopped in between (the tracking server died) leaves it out of gates, aliases
# and deployment, and :func:`clean_leftovers` finds it.
STATUS_TAG = TAG_PREFIX + "status"
INCOMPLETE, COMPLETE = "incomplete", "complete"
NOTE_TAG = "mlflow.note.content"  # the run's description in the MLflow UI
GATE_HEADING = "Gate:"
# How a training's trigger (tag ``mlops.trigger``) reads in a run name.
TRIGGER_WORDS = {"manual": "manual", "schedule": "scheduled", "drift": "drift retrain", "quality": "quality retrain"}


@dataclass(frozen=True)
class RegisteredVersion:
    """A model version registered from one training run."""

    name: str
    version: str
    run_id: str
    metrics: dict[str, float]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class PromotionDecision:
    """Whether the challenger replaced the champion, and why (every check, in words)."""

    promoted: bool
    challenger_version: str
    champion_version: str | None
    metric: str
    challenger_score: float
    champion_score: float | None
    reason: str
    forced: bool = False
    margin: float = 0.0
    floors: dict[str, float] = field(default_factory=dict)
    waiting: bool = False
    holdout_rows: int = 0
    recent_rows: int = 0
    recent_challenger_score: float | None = None
    recent_champion_score: float | None = None


@dataclass(frozen=True)
class EvaluationSet:
    """Rows every version is scored on beside the holdout (the recent labeled production rows)."""

    features: pd.DataFrame
    labels: pd.Series


@dataclass(frozen=True)
class VersionSummary:
    """One registered version as ``mlops compare`` shows it."""

    version: str
    aliases: list[str]
    metrics: dict[str, float]
    tags: dict[str, str]
    run_id: str
    created: str


@dataclass(frozen=True)
class Leftovers:
    """What trainings that stopped half-way left behind: version numbers and run ids."""

    versions: list[str] = field(default_factory=list)  # incomplete, their aliases removed
    runs: list[str] = field(default_factory=list)  # left RUNNING by a process that is gone, ended FAILED


# --- Logging a training run ------------------------------------------------------------


def ensure_store(settings: Settings) -> None:
    """Create (and migrate) the default SQLite store once, under a lock.

    Why: MLflow migrates a new SQLite file on first use, and two processes doing it at once
    fail ("duplicate column name"); two first ``mlops train`` on a fresh state folder must
    both work. A marker beside the file makes later calls free.
    """
    uri = settings.mlflow_tracking_uri
    if not uri.startswith("sqlite:///"):
        return
    database = Path(uri.removeprefix("sqlite:///"))
    marker = database.with_name(database.name + ".ready")
    if marker.is_file() and database.is_file():
        return

    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(settings.state_dir / STORE_LOCK_FILE), timeout=LOCK_TIMEOUT_SECONDS):
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)
        marker.touch()


# MLflow 3's UI opens an experiment in its GenAI view unless the experiment says it is model training.
EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
# The UI's own switch between its GenAI and its model-training views, as a URL parameter.
MODEL_TRAINING_VIEW = "workflowType=machine_learning"


def ensure_experiment(settings: Settings) -> str:
    """Return the experiment id, creating it with its artifacts where the settings say."""
    return create_experiment(settings.model.experiment, settings)


def create_experiment(name: str, settings: Settings) -> str:
    """The id of experiment ``name``, created if new (artifacts: :attr:`mlops.config.Settings.experiment_artifact_location`)."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = settings.experiment_artifact_location
    if location is not None and location.startswith("file:"):
        settings.mlflow_artifact_dir.mkdir(parents=True, exist_ok=True)
    return mlflow.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})


def log_and_register(
    trained: TrainedModel,
    split: DataSplit,
    frame: pd.DataFrame,
    settings: Settings,
    *,
    data_path: Path,
    tags: dict[str, str],
    trials: Sequence[Trial] = (),
    manifest: pd.DataFrame | None = None,
    reports: Sequence[Path] = (),
) -> RegisteredVersion:
    """Log one training run (trials as nested child runs) and register its model as ``challenger``.

    ``reports`` (e.g. the validation HTML) are logged under ``validation/``.
    """
    ensure_store(settings)
    clean_leftovers(settings)
    experiment_id = ensure_experiment(settings)
    run_tags = _run_tags({"task": settings.model.task, "contract_version": _contract_version(settings), **tags})
    candidate, trigger = str(trained.params.get("estimator", "")), tags.get("trigger", "")
    description = _run_description(data_path, frame, trigger, candidate, trained.metrics, settings.model.metric)
    run_tags |= {TAG_PREFIX + "trial": "false", NOTE_TAG: description}
    run_name = _run_name("train", candidate, trigger)  # renamed with its version once registered
    with warnings.catch_warnings(), mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=run_tags) as run:
        # Hints about integer outputs and ambiguous local sources say nothing actionable here.
        warnings.simplefilter("ignore", UserWarning)
        mlflow.log_params(trained.params)
        mlflow.log_metrics({f"holdout_{name}": value for name, value in trained.metrics.items()})
        mlflow.log_metrics(trained.cv_metrics)
        _log_trials(trials, settings.model.metric, experiment_id, run_tags)
        _log_data(frame, split, settings, data_path, manifest)
        for report in reports:
            mlflow.log_artifact(str(report), artifact_path="validation")
        _log_plots(trained.pipeline, split, settings)
        version = _log_model(trained.pipeline, split, settings, run.info.run_id, description)
    client = mlflow.MlflowClient()
    client.set_tag(run.info.run_id, "mlflow.runName", _run_name(f"train v{version}", candidate, trigger))
    client.set_registered_model_alias(settings.model.name, CHALLENGER, version)
    return RegisteredVersion(settings.model.name, version, run.info.run_id, dict(trained.metrics))


def _run_name(head: str, candidate: str, trigger: str) -> str:
    """``train v3 · logistic_regression · drift retrain``: what the run is, readable in the runs list."""
    return " · ".join(part for part in (head, candidate, TRIGGER_WORDS.get(trigger, trigger)) if part)


def _run_description(
    data_path: Path, frame: pd.DataFrame, trigger: str, candidate: str, metrics: dict[str, float], metric: str
) -> str:
    """The run's (and its version's) description: on which data, why, and what won."""
    lines = [f"Trained on `{data_path}` ({len(frame)} rows)."]
    if trigger:
        lines.append(f"Trigger: {TRIGGER_WORDS.get(trigger, trigger)}.")
    if metric in metrics:
        lines.append(f"Best candidate: {candidate} (holdout {metric} {metrics[metric]:.4f}).")
    return "\n".join(lines)


def tag_version(registered: RegisteredVersion, tags: dict[str, str]) -> None:
    """Set ``mlops.<key>`` tags on a registered version (e.g. its lineage)."""
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(registered.name, registered.version, TAG_PREFIX + key, str(value))


def reference_fingerprint(name: str, alias: str = CHAMPION) -> str | None:
    """The data fingerprint of the run behind ``alias`` (what its reference snapshot was)."""
    version = _version_by_alias(name, alias)
    if version is None:
        return None
    client = mlflow.MlflowClient()
    run_id = client.get_model_version(name, version).run_id
    return client.get_run(run_id).data.tags.get(TAG_PREFIX + "data_fingerprint") if run_id else None


def reference_snapshot(name: str, alias: str = CHAMPION) -> pd.DataFrame | None:
    """The training data snapshot logged with the run of the version behind ``alias``, if any."""
    version = _version_by_alias(name, alias)
    if version is None:
        return None
    run_id = mlflow.MlflowClient().get_model_version(name, version).run_id
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path="data/reference.parquet", dst_path=folder
            )
        except (MlflowException, OSError):
            return None  # a version logged before snapshots existed
        return pd.read_parquet(path)


def _log_trials(trials: Sequence[Trial], metric: str, experiment_id: str, tags: dict[str, str]) -> None:
    """One nested child run per trial, so the MLflow UI groups them under the parent."""
    tags = {key: value for key, value in tags.items() if key != NOTE_TAG} | {TAG_PREFIX + "trial": "true"}
    for number, trial in enumerate(trials, start=1):
        name = f"trial {number} · {trial.candidate}"
        with mlflow.start_run(experiment_id=experiment_id, run_name=name, nested=True, tags=tags):
            params = trial.run_params or {
                "estimator": trial.candidate, **{f"model.{key.removeprefix('model__')}": value for key, value in trial.params.items()}
            }
            mlflow.log_params(params)
            mlflow.log_metrics({f"cv_{metric}": trial.cv_score, f"cv_{metric}_std": trial.cv_std})


# The store's words for a row another writer inserted first (PostgreSQL, MySQL, SQLite).
_INSERTED_MEANWHILE = ("UniqueViolation", "duplicate key value", "Duplicate entry", "UNIQUE constraint failed")


def _log_input(dataset: Any, attempts: int = 3) -> None:
    """``mlflow.log_input``, again when a concurrent training inserted the same dataset first.

    MLflow's SQL store checks for the dataset, then inserts it: two trainings of the same
    file on one server race there, and the loser's insert breaks the unique key. On the
    retry the dataset exists and is only linked to the run.
    """
    for attempt in range(1, attempts + 1):
        try:
            mlflow.log_input(dataset, context="training")
            return
        except MlflowException as exc:
            if attempt == attempts or not any(words in str(exc) for words in _INSERTED_MEANWHILE):
                raise
            time.sleep(0.2 * attempt)


def _log_data(frame, split: DataSplit, settings: Settings, data_path: Path, manifest) -> None:
    """The dataset as a run input, the suite, and the split manifest (which row went where)."""
    # mlflow.data exports from_pandas lazily, out of mypy's sight
    dataset = mlflow.data.from_pandas(frame, source=str(data_path), targets=settings.data.target, name="train")  # type: ignore[attr-defined]
    _log_input(dataset)
    for path in contract_files(settings):
        mlflow.log_artifact(str(path), artifact_path="contract")
    # The snapshot monitoring compares the served traffic with (bounded for large data).
    snapshot = frame if len(frame) <= REFERENCE_ROWS else frame.sample(n=REFERENCE_ROWS, random_state=0)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "reference.parquet"
        snapshot.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path="data")
    if manifest is not None:
        mlflow.log_text(manifest.to_csv(index=False), "split/manifest.csv")
    summary = {"method": "row-content hash", "seed": settings.model.seed, "test_size": settings.model.test_size,
               "train_rows": len(split.x_train), "holdout_rows": len(split.x_holdout)}
    mlflow.log_dict(summary, "split/summary.json")


def _log_plots(pipeline: Pipeline, split: DataSplit, settings: Settings) -> None:
    """Confusion matrix (and ROC curve when binary) for a classifier, residuals for a regressor."""
    x, y = split.x_holdout, split.y_holdout
    if settings.model.task == "regression":
        figure = Figure(figsize=(5, 4))
        PredictionErrorDisplay.from_estimator(pipeline, x, y, kind="residual_vs_predicted", ax=figure.subplots())
        mlflow.log_figure(figure, "plots/residuals.png")
        return

    classes = list(pipeline.classes_)
    figure = Figure(figsize=(5 + 0.3 * len(classes), 4 + 0.3 * len(classes)))
    ConfusionMatrixDisplay.from_estimator(pipeline, x, y, ax=figure.subplots(), xticks_rotation="vertical")
    mlflow.log_figure(figure, "plots/confusion_matrix.png")
    if len(classes) == 2:
        figure = Figure(figsize=(5, 4))
        positive = positive_label(classes, settings.model.positive_label)
        RocCurveDisplay.from_estimator(pipeline, x, y, pos_label=positive, ax=figure.subplots())
        mlflow.log_figure(figure, "plots/roc_curve.png")


def _log_model(pipeline: Pipeline, split: DataSplit, settings: Settings, run_id: str, description: str) -> str:
    """Log the model and register it as a new version, described and tagged ``incomplete`` from its creation.

    Registered through the client rather than ``log_model(registered_model_name=...)``: that path
    prints "Registered model … already exists" and "Created version …" to stderr on every training;
    here the same news goes to our logger.
    """
    example = _input_example(split.x_holdout)
    info = mlflow.sklearn.log_model(
        pipeline,
        name="model",
        signature=infer_signature(example, pipeline.predict(example)),
        input_example=example,
        serialization_format="skops",
        skops_trusted_types=_trusted_types(pipeline),
        pip_requirements=_pip_requirements(),
    )
    client, name = mlflow.MlflowClient(), settings.model.name
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in {"RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"}:
            raise
    version = client.create_model_version(
        name, info.model_uri, run_id, tags={STATUS_TAG: INCOMPLETE}, description=description,
        model_id=info.model_id,  # a tracking server checks the source against it (SQLite does not)
    )
    _logger().info(
        "Registered version %s of model '%s' from run %s", version.version, name, run_id,
        extra={"model_version": str(version.version)},
    )  # fmt: skip
    return str(version.version)


def _logger() -> logging.Logger:
    return logging.getLogger(__name__)


def _input_example(features: pd.DataFrame) -> pd.DataFrame:
    """Three complete rows where there are (MLflow infers column types from them)."""
    complete = features.dropna()
    example = (complete if len(complete) >= 3 else features).head(3)
    if example.isna().any().any():  # a column with nulls in every row: fill so a type can be inferred
        example = example.apply(lambda column: column.fillna(features[column.name].dropna().iloc[0])
                                if features[column.name].notna().any() else column)
    return example


def model_card(
    registered: RegisteredVersion, decision: PromotionDecision, settings: Settings, facts: dict[str, Any]
) -> str:
    """A short markdown card: data, metrics, gate decision, limitations."""
    metrics = "\n".join(f"| {name} | {value:.4f} |" for name, value in registered.metrics.items())
    data = "\n".join(f"- {key}: {value}" for key, value in facts.items())
    verdict = "promoted to champion" if decision.promoted else "kept as challenger"
    return f"""# {registered.name} v{registered.version}

Task: {settings.model.task}; target `{settings.data.target}`; run `{registered.run_id}`.

## Data
{data}

## Holdout metrics
| metric | value |
|---|---|
{metrics}

## Gate decision
**{verdict}**: {decision.reason}

## Limitations
- Scored on one hash-based holdout of the training file; no calibration or fairness analysis.
- Valid only for data that passes the expectation suite `{contract_file(settings.data.suite).name}`.
- The holdout is small, so differences below the promotion margin ({settings.model.promotion_margin:g}) are noise.
"""


def log_model_card(registered: RegisteredVersion, card: str) -> None:
    """Attach the card to the training run (written after the gate, so it can state the decision)."""
    mlflow.MlflowClient().log_text(registered.run_id, card, MODEL_CARD)


def read_model_card(name: str, version: str) -> str | None:
    """Version ``version``'s card, through the tracking server (no shared disk); None without one."""
    client = mlflow.MlflowClient()
    try:
        run_id = client.get_model_version(name, str(version)).run_id
    except MlflowException as exc:
        raise RegistryError(f"{name} has no version {version}: check it with `mlops compare`.") from exc
    if run_id is None or MODEL_CARD not in {artifact.path for artifact in client.list_artifacts(run_id)}:
        return None
    return mlflow.artifacts.load_text(f"runs:/{run_id}/{MODEL_CARD}")


# --- The gate --------------------------------------------------------------------------


def champion_version(name: str) -> str | None:
    """The version behind alias ``champion``, or None when there is none yet."""
    return _version_by_alias(name, CHAMPION)


@contextmanager
def registry_lock(settings: Settings) -> Iterator[None]:
    """Serialize read-champion → compare → move across threads, processes and machines.

    Where the processes that share the registry can all see it (:func:`mlops.locks.shared_lock`):
    the Prefect server's concurrency limit, the PostgreSQL store's advisory lock, or a file
    lock under the state folder when the registry is this machine's.
    """
    try:
        with shared_lock(settings, f"registry-{settings.model.name}", settings.state_dir / LOCK_FILE, LOCK_TIMEOUT_SECONDS):
            yield
    except LockTimeout as exc:
        raise RegistryError(
            f"The registry lock ({exc.where}) was held for over {LOCK_TIMEOUT_SECONDS:g} s. "
            "Another training flow, `mlops promote` or `mlops rollback` is still moving aliases; retry when it ends."
        ) from None


def decide_promotion(
    challenger: RegisteredVersion, split: DataSplit, settings: Settings, recent: EvaluationSet | None = None
) -> PromotionDecision:
    """Check the floors, then score the champion (and, with ``recent``, both versions) on the same sets and compare.

    The rule: without recent rows, the challenger must beat the champion on the original
    holdout by more than ``model.promotion_margin``. With a recent evaluation set (the
    newest labeled production rows, never trained on), it must beat the champion **on the
    recent set** by the margin, and its holdout metrics must still pass ``model.floors``:
    a champion good on old data and bad on recent data loses.
    """
    current = champion_version(challenger.name)
    champion_metrics = None
    if current is not None and current != challenger.version:
        champion_metrics = _rescore(challenger.name, current, split, settings)
    decision = _judge(challenger.version, challenger.metrics, current, champion_metrics, settings)
    decision = replace(decision, holdout_rows=len(split.x_holdout))
    if recent is None or not len(recent.features) or current == challenger.version:
        return decision
    mine = _score(challenger.name, challenger.version, recent.features, recent.labels, settings)
    theirs = _score(challenger.name, current, recent.features, recent.labels, settings) if champion_metrics is not None and current else None
    rows = len(recent.features)
    if not _finite(mine.get(decision.metric)) or (theirs is not None and not _finite(theirs.get(decision.metric))):
        note = f"{decision.metric} cannot be computed on the {rows} recent rows (one class?): judged on the holdout"
        return replace(decision, reason=f"{decision.reason}; {note}", recent_rows=rows)
    failures = _floor_failures(challenger.metrics, _floors(settings))
    return _judge_recent(decision, mine, theirs, rows, failures)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _judge_recent(
    decision: PromotionDecision, mine: dict[str, float], theirs: dict[str, float] | None, rows: int, failures: list[str]
) -> PromotionDecision:
    """The decision on the recent set; the holdout comparison stays in the reason, the floors still apply."""
    metric, margin = decision.metric, decision.margin
    score, champion_score = mine.get(metric, float("nan")), (theirs or {}).get(metric)
    if champion_score is None:
        beats, line = True, f"recent {metric} {score:.4f} on {rows} rows (no champion to compare)"
    else:
        gain = score - champion_score if higher_is_better(metric) else champion_score - score
        beats = gain > margin
        line = (f"recent {metric} {score:.4f} {'beats' if beats else 'does not beat'} champion "
                f"v{decision.champion_version}'s {champion_score:.4f} on the same {rows} recent rows by more "
                f"than the margin {margin:g}")
    holdout = [reason for reason in decision.reason.split("; ") if reason not in failures]
    reason = "; ".join([line, *(f"(holdout: {text})" for text in holdout), *failures])
    return replace(decision, promoted=beats and not failures, reason=reason, recent_rows=rows,
                   recent_challenger_score=score, recent_champion_score=champion_score)


def _judge(
    version: str,
    metrics: dict[str, float],
    current: str | None,
    champion_metrics: dict[str, float] | None,
    settings: Settings,
) -> PromotionDecision:
    """Margin against the champion (in the metric's direction) and the floors, as one decision."""
    metric, margin = settings.model.metric, settings.model.promotion_margin
    score = metrics[metric]
    failures = _floor_failures(metrics, _floors(settings))
    champion_score = champion_metrics[metric] if champion_metrics is not None else None
    if current == version:
        reasons, beats = [f"v{version} is already the champion"], False
    elif champion_score is None:
        reasons, beats = ["no champion yet"], True
    else:
        gain = score - champion_score if higher_is_better(metric) else champion_score - score
        beats = gain > margin
        reasons = [
            f"{metric} {score:.4f} {'beats' if beats else 'does not beat'} champion v{current}'s {champion_score:.4f}"
            f" on the same holdout by more than the margin {margin:g}"
        ]
    promoted = beats and not failures
    reason = "; ".join(reasons + failures)
    floors = _floors(settings)
    return PromotionDecision(promoted, version, current, metric, score, champion_score, reason, False, margin, floors)


def _floors(settings: Settings) -> dict[str, float]:
    return {str(name): limit for name, limit in settings.model.floors.items()}


def _floor_failures(metrics: dict[str, float], floors: dict[str, float]) -> list[str]:
    failures = []
    for name, limit in floors.items():
        if name not in metrics:
            failures.append(f"{name} could not be computed on this holdout (floor {limit:g})")
            continue
        value = metrics[name]
        if higher_is_better(name) and value < limit:
            failures.append(f"{name} {value:.4f} is below the floor {limit:g}")
        elif not higher_is_better(name) and value > limit:
            failures.append(f"{name} {value:.4f} is above the ceiling {limit:g}")
    return failures


def _rescore(name: str, version: str, split: DataSplit, settings: Settings) -> dict[str, float]:
    """A registered version's metrics on this holdout; a version that cannot score it cannot be compared."""
    return _score(name, version, split.x_holdout, split.y_holdout, settings)


def _score(name: str, version: str, features: pd.DataFrame, labels: pd.Series, settings: Settings) -> dict[str, float]:
    """A registered version's metrics on ``features`` and ``labels``."""
    model = mlflow.sklearn.load_model(f"models:/{name}/{version}")
    try:
        return evaluate(model, features, labels, settings.model.task, settings.model.positive_label)
    except (ValueError, KeyError, AttributeError) as exc:
        raise RegistryError(
            f"Version {version} of '{name}' cannot be scored on this holdout ({exc}). "
            "Its features or task differ: use a new model name, or `mlops promote VERSION --force`."
        ) from None


def apply_promotion(decision: PromotionDecision, name: str) -> None:
    """Write the decision on the version as tags; move the aliases if promoted."""
    client = mlflow.MlflowClient()
    tags = {
        "gate.decision": "promoted" if decision.promoted else "waiting" if decision.waiting else "rejected",
        "gate.holdout_rows": str(decision.holdout_rows),
        "gate.recent_rows": str(decision.recent_rows),
        "gate.reason": decision.reason,
        "gate.metric": decision.metric,
        "gate.challenger_score": f"{decision.challenger_score:.6f}",
        "gate.champion_version": decision.champion_version or "",
        "gate.margin": f"{decision.margin:g}",
        "gate.floors": json.dumps(decision.floors, sort_keys=True),
    }
    if decision.champion_score is not None:
        tags["gate.champion_score"] = f"{decision.champion_score:.6f}"
    if decision.recent_challenger_score is not None:
        tags["gate.recent_challenger_score"] = f"{decision.recent_challenger_score:.6f}"
    if decision.recent_champion_score is not None:
        tags["gate.recent_champion_score"] = f"{decision.recent_champion_score:.6f}"
    for key, value in tags.items():
        client.set_model_version_tag(name, decision.challenger_version, TAG_PREFIX + key, value)
    _describe_decision(client, name, decision)
    client.set_model_version_tag(name, decision.challenger_version, STATUS_TAG, COMPLETE)  # before any alias
    if decision.promoted:
        _move_aliases(name, decision.challenger_version, decision.champion_version)


def _describe_decision(client: MlflowClient, name: str, decision: PromotionDecision) -> None:
    """The gate's verdict appended to the version's description and its run's note (replaced if judged again)."""
    verdict = "promoted to champion" if decision.promoted else "waits for approval" if decision.waiting else "rejected"
    line = f"{GATE_HEADING} {verdict}: {decision.reason}."
    version = client.get_model_version(name, decision.challenger_version)
    client.update_model_version(name, decision.challenger_version, description=_with_gate(version.description, line))
    if version.run_id:
        note = client.get_run(version.run_id).data.tags.get(NOTE_TAG, "")
        client.set_tag(version.run_id, NOTE_TAG, _with_gate(note, line))


def _with_gate(text: str | None, line: str) -> str:
    kept = [kept for kept in (text or "").splitlines() if not kept.startswith(GATE_HEADING)]
    return "\n".join([*kept, line])


def _move_aliases(name: str, new: str, old: str | None) -> None:
    """``champion`` to ``new``; the replaced champion stays reachable as ``previous``."""
    client = mlflow.MlflowClient()
    if old is not None:
        client.set_registered_model_alias(name, PREVIOUS, old)
    client.set_registered_model_alias(name, CHAMPION, new)


def gate_challenger(
    registered: RegisteredVersion,
    split: DataSplit,
    settings: Settings,
    recent: EvaluationSet | None = None,
    *,
    promote: bool = True,
) -> PromotionDecision:
    """The training flow's gate: decide, tag and move under the registry lock, and record it.

    ``promote=False`` (``monitoring.auto_promote: false``): a challenger that passes is
    tagged ``waiting`` and left for ``mlops promote VERSION`` to approve.
    """
    with registry_lock(settings):
        try:
            decision = decide_promotion(registered, split, settings, recent)
            if decision.promoted and not promote:
                reason = f"{decision.reason}; waits for approval (monitoring.auto_promote is false)"
                decision = replace(decision, promoted=False, waiting=True, reason=reason)
        except RegistryError as exc:
            # The champion cannot be re-scored (e.g. the columns changed): keep it, and say why
            # on the new version rather than leave it untagged.
            current = champion_version(registered.name)
            metric = settings.model.metric
            decision = PromotionDecision(
                False, registered.version, current, metric, registered.metrics.get(metric, float("nan")), None,
                f"cannot compare with champion v{current}: {exc}",
            )
        apply_promotion(decision, registered.name)
        if decision.promoted:
            _record_move(settings, "gate", decision, reason=decision.reason)
    return decision


# --- Moves by hand ---------------------------------------------------------------------


def promote_version(
    settings: Settings, version: str, split: DataSplit, *, force: bool = False, reason: str = ""
) -> PromotionDecision:
    """Make ``version`` the champion if it passes the gate's checks on ``split`` (or ``force``)."""
    name = settings.model.name
    _require_version(name, version)
    with registry_lock(settings):
        current = champion_version(name)
        decision = _waiting_decision(settings, version, current)
        if decision is None:
            decision = _manual_decision(settings, version, current, split, compare=True, force=force)
        return _move(settings, "promote", decision, force=force, reason=reason)


def _waiting_decision(settings: Settings, version: str, current: str | None) -> PromotionDecision | None:
    """A version the gate passed but left waiting (``mlops.gate.decision=waiting``), approved as the gate judged it."""
    tags = mlflow.MlflowClient().get_model_version(settings.model.name, version).tags
    if tags.get(TAG_PREFIX + "gate.decision") != "waiting" or tags.get(TAG_PREFIX + "gate.champion_version", "") != (current or ""):
        return None  # not waiting, or the champion it was judged against has changed: judge again
    score = float(tags.get(TAG_PREFIX + "gate.challenger_score", "nan"))
    reason = f"approved: {tags.get(TAG_PREFIX + 'gate.reason', '')}"
    return PromotionDecision(True, version, current, settings.model.metric, score, None, reason)


def rollback(settings: Settings, split: DataSplit, *, force: bool = False, reason: str = "") -> PromotionDecision:
    """Give ``champion`` back to the ``previous`` version; the current one becomes ``previous``.

    A rollback deliberately goes back to an older model, so it skips the margin
    against the champion but still checks the absolute floors (unless ``force``).
    """
    name = settings.model.name
    with registry_lock(settings):
        target, current = _version_by_alias(name, PREVIOUS), champion_version(name)
        if target is None:
            raise RegistryError(f"Model '{name}' has no '{PREVIOUS}' version to roll back to. Promote one by hand.")
        decision = _manual_decision(settings, target, current, split, compare=False, force=force)
        return _move(settings, "rollback", decision, force=force, reason=reason)


def _manual_decision(
    settings: Settings, version: str, current: str | None, split: DataSplit, *, compare: bool, force: bool
) -> PromotionDecision:
    """The gate's checks for a move by hand, both versions re-scored on ``split``."""
    name, metric = settings.model.name, settings.model.metric
    try:
        metrics = _rescore(name, version, split, settings)
        rescore_champion = compare and current is not None and current != version
        champion_metrics = _rescore(name, current, split, settings) if rescore_champion and current else None
    except RegistryError as exc:
        if not force:
            raise
        return PromotionDecision(False, version, current, metric, float("nan"), None, str(exc))
    if compare or current == version:
        return _judge(version, metrics, current, champion_metrics, settings)
    failures = _floor_failures(metrics, _floors(settings))
    reason = "; ".join([f"rollback from v{current} ({metric} {metrics[metric]:.4f} on the holdout)", *failures])
    return PromotionDecision(not failures, version, current, metric, metrics[metric], None, reason)


def _move(settings: Settings, kind: str, decision: PromotionDecision, *, force: bool, reason: str) -> PromotionDecision:
    """Move the aliases if the checks passed (or ``force``); a refused move changes nothing."""
    if decision.champion_version == decision.challenger_version:
        raise RegistryError(f"Version {decision.challenger_version} is already the champion; nothing to move.")
    if force and not decision.promoted:
        decision = replace(decision, promoted=True, forced=True, reason=f"forced over: {decision.reason}")
    if decision.promoted:
        _move_aliases(settings.model.name, decision.challenger_version, decision.champion_version)
        _record_move(settings, kind, decision, reason=reason or decision.reason)
    return decision


def _record_move(settings: Settings, kind: str, decision: PromotionDecision, *, reason: str) -> None:
    """Who, when and why, on the new champion's tags and as one line of the audit log (:mod:`mlops.audit`)."""
    entry = audit.record(
        settings, kind, version=decision.challenger_version, reason=reason,
        champion=decision.challenger_version, previous=decision.champion_version, forced=decision.forced,
    )
    client = mlflow.MlflowClient()
    for key in ("at", "by", "kind", "reason", "forced"):
        tag = f"{TAG_PREFIX}promotion.{key}"
        client.set_model_version_tag(settings.model.name, decision.challenger_version, tag, str(entry[key]))


def read_audit(settings: Settings) -> list[dict[str, Any]]:
    """Every recorded alias move (gate, promote, rollback), oldest first."""
    return audit.read_audit(settings, kinds=("gate", "promote", "rollback"))[::-1]


def _require_version(name: str, version: str) -> None:
    try:
        found = mlflow.MlflowClient().get_model_version(name, version)
    except MlflowException:
        raise RegistryError(
            f"Model '{name}' has no version '{version}'. See `mlops compare` for the versions."
        ) from None
    if found.tags.get(STATUS_TAG) == INCOMPLETE:
        raise RegistryError(
            f"Version {version} of '{name}' is incomplete: its training stopped before the gate judged it. "
            "Train again (`mlops train`); `mlops doctor` lists and cleans such versions."
        )


# --- Comparing versions ----------------------------------------------------------------


def list_versions(name: str) -> list[VersionSummary]:
    """Every registered version, newest first, with its run's holdout metrics and all tags."""
    client = mlflow.MlflowClient()
    try:
        aliases = client.get_registered_model(name).aliases  # version search results carry no aliases
    except MlflowException:
        raise RegistryError(f"No registered model '{name}'. Run `mlops train` first.") from None
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version), reverse=True)
    return [_summary(client, v, sorted(a for a, n in aliases.items() if str(n) == str(v.version))) for v in versions]


def _summary(client: MlflowClient, version: ModelVersion, aliases: list[str]) -> VersionSummary:
    metrics: dict[str, float] = {}
    run_tags: dict[str, str] = {}
    if version.run_id:  # a version registered from a path, not a run, has neither
        run = client.get_run(version.run_id)
        metrics = {k.removeprefix("holdout_"): value for k, value in run.data.metrics.items() if k.startswith("holdout_")}
        run_tags = {key: value for key, value in run.data.tags.items() if key.startswith(TAG_PREFIX)}
    created = datetime.fromtimestamp(version.creation_timestamp / 1000, UTC).isoformat(timespec="seconds")
    return VersionSummary(str(version.version), aliases, metrics, run_tags | dict(version.tags), version.run_id or "", created)


def summaries_as_dicts(summaries: Sequence[VersionSummary]) -> list[dict[str, Any]]:
    """JSON-ready form for ``mlops compare --json``."""
    return [asdict(summary) for summary in summaries]


# --- Leftovers of stopped trainings ----------------------------------------------------


def clean_leftovers(settings: Settings, *, dry_run: bool = False) -> Leftovers:
    """Find (and, unless ``dry_run``, clean) what trainings stopped half-way left in the registry.

    A run still RUNNING whose process (``mlops.pid`` on ``mlops.host``) is gone is ended
    FAILED; a version still ``mlops.status=incomplete`` whose training process is gone loses
    its aliases, so nothing serves or gates it. Runs and versions of a training still going
    (here or on another host) are left alone. ``mlops doctor`` shows it; ``mlops train`` runs it.
    """
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(settings.model.experiment)
    running = [] if experiment is None else client.search_runs(
        [experiment.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
    )
    dead_runs = [run.info.run_id for run in running if _process_gone(run.data.tags)]
    versions: list[Any] = []
    aliases: dict[str, Any] = {}
    try:
        versions = list(client.search_model_versions(f"name='{settings.model.name}'"))
        aliases = client.get_registered_model(settings.model.name).aliases
    except MlflowException:  # nothing registered yet
        pass
    leftovers = []
    for version in versions:
        if version.tags.get(STATUS_TAG) != INCOMPLETE:
            continue
        try:
            run = client.get_run(version.run_id or "")
        except MlflowException:
            leftovers.append(str(version.version))
            continue
        if run.info.run_id in dead_runs or _process_gone(run.data.tags):
            leftovers.append(str(version.version))
    if not dry_run:
        for run_id in dead_runs:
            client.set_terminated(run_id, "FAILED")
        for alias, number in aliases.items():
            if str(number) in leftovers:
                client.delete_registered_model_alias(settings.model.name, alias)
    return Leftovers(sorted(leftovers, key=int), dead_runs)


def _process_gone(tags: dict[str, str]) -> bool:
    """Whether the process that tagged a run (``mlops.pid`` on ``mlops.host``) has ended, as far as this host can tell."""
    pid, host = tags.get(TAG_PREFIX + "pid"), tags.get(TAG_PREFIX + "host")
    if pid is None or host != socket.gethostname():
        return False  # not ours, or another machine's: it may still be running
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


# --- Helpers ---------------------------------------------------------------------------


def _version_by_alias(name: str, alias: str) -> str | None:
    client = mlflow.MlflowClient()
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            return None
        raise RegistryError(f"Could not read alias '{alias}' of model '{name}': {exc.message}") from None


def _contract_version(settings: Settings) -> str:
    """The expectation suite's content hash, until a data contract carries its own version."""
    suite = contract_file(settings.data.suite)
    return hashlib.sha256(suite.read_bytes()).hexdigest()[:12] if suite.is_file() else ""


def _run_tags(tags: dict[str, str]) -> dict[str, str]:
    commit = _git_commit()
    base = {TAG_PREFIX + "git_commit": commit} if commit else {}
    # Which process runs it: a run left RUNNING by a process that is gone is ended by clean_leftovers.
    base |= {TAG_PREFIX + "pid": str(os.getpid()), TAG_PREFIX + "host": socket.gethostname()}
    return base | prefect_tags() | {TAG_PREFIX + key: str(value) for key, value in tags.items()}


def prefect_tags() -> dict[str, str]:
    """``prefect.flow_run_id`` and ``prefect.flow_run_url`` of the Prefect flow run this runs in; none outside one.

    Why: from an MLflow run, one click back to the flow run's logs. Prefect is not imported
    here when nothing imported it yet: then there is no flow run to name.
    """
    if "prefect" not in sys.modules:
        return {}

    flow_run_id = runtime.flow_run.id
    if not flow_run_id:
        return {}
    tags = {"prefect.flow_run_id": str(flow_run_id)}
    url = str(runtime.flow_run.ui_url or "")
    return tags | ({"prefect.flow_run_url": url} if url.startswith(("http://", "https://")) else {})


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _trusted_types(pipeline: Pipeline) -> list[str]:
    # We built this pipeline ourselves, so the types skops flags are ours to trust.
    # Imported here: skops.io imports every scikit-learn module to list its trusted types
    # (seconds per process), a cost only the commands that log a model should pay.
    import skops.io

    return skops.io.get_untrusted_types(data=skops.io.dumps(pipeline))


def _pip_requirements() -> list[str]:
    # Given explicitly: inferring them costs ~7 s per logged model.

    return [f"{package}=={metadata.version(package)}" for package in ("scikit-learn", "skops", "numpy", "pandas", "scipy")]
