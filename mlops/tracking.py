"""Track runs and register models in MLflow; the champion gate.

Every training run logs params, holdout metrics, the model (with signature and
input example), the training data as a run input and lineage tags. The new
version gets alias ``challenger``; ``champion`` moves to it only when it beats
the current champion, re-scored on the same holdout, by the configured margin.
The champion it replaces keeps alias ``previous``.

MLflow is reached through ``MLFLOW_TRACKING_URI`` (set by
:func:`mlops.environment.tool_environment`).
"""

from __future__ import annotations

import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.errors import RegistryError

if TYPE_CHECKING:
    import pandas as pd

    from mlops.config import Settings
    from mlops.training import DataSplit, TrainedModel

__all__ = [
    "CHAMPION",
    "CHALLENGER",
    "PREVIOUS",
    "PromotionDecision",
    "RegisteredVersion",
    "apply_promotion",
    "champion_version",
    "decide_promotion",
    "ensure_experiment",
    "log_and_register",
]

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
TAG_PREFIX = "mlops."


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
    """Whether the challenger replaced the champion, and why."""

    promoted: bool
    challenger_version: str
    champion_version: str | None
    metric: str
    challenger_score: float
    champion_score: float | None
    reason: str


def ensure_experiment(settings: Settings) -> str:
    """Return the experiment id, creating it with artifacts under the state folder."""
    import mlflow

    experiment = mlflow.get_experiment_by_name(settings.model.experiment)
    if experiment is not None:
        return experiment.experiment_id
    settings.mlflow_artifact_dir.mkdir(parents=True, exist_ok=True)
    return mlflow.create_experiment(
        settings.model.experiment, artifact_location=settings.mlflow_artifact_dir.resolve().as_uri()
    )


def log_and_register(
    trained: TrainedModel,
    split: DataSplit,
    frame: pd.DataFrame,
    settings: Settings,
    *,
    data_path: Path,
    tags: dict[str, str],
) -> RegisteredVersion:
    """Log one training run and register its model as a new version (alias ``challenger``)."""
    import mlflow
    from mlflow.models import infer_signature

    experiment_id = ensure_experiment(settings)
    example = split.x_holdout.head(3)
    with warnings.catch_warnings(), mlflow.start_run(experiment_id=experiment_id, tags=_run_tags(tags)) as run:
        # Hints about integer outputs and ambiguous local sources say nothing actionable here.
        warnings.simplefilter("ignore", UserWarning)
        mlflow.log_params(trained.params)
        mlflow.log_metrics({f"holdout_{name}": value for name, value in trained.metrics.items()})
        dataset = mlflow.data.from_pandas(frame, source=str(data_path), targets=settings.data.target, name="train")
        mlflow.log_input(dataset, context="training")
        if settings.data.suite.is_file():
            mlflow.log_artifact(str(settings.data.suite), artifact_path="validation")
        info = mlflow.sklearn.log_model(
            trained.pipeline,
            name="model",
            signature=infer_signature(example, trained.pipeline.predict(example)),
            input_example=example,
            registered_model_name=settings.model.name,
            serialization_format="skops",
            skops_trusted_types=_trusted_types(trained.pipeline),
            pip_requirements=_pip_requirements(),
        )
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(settings.model.name, CHALLENGER, version)
    return RegisteredVersion(settings.model.name, version, run.info.run_id, dict(trained.metrics))


def champion_version(name: str) -> str | None:
    """The version behind alias ``champion``, or None when there is none yet."""
    return _version_by_alias(name, CHAMPION)


def decide_promotion(challenger: RegisteredVersion, split: DataSplit, settings: Settings) -> PromotionDecision:
    """Re-score the champion on the challenger's holdout and compare the primary metric."""
    import mlflow

    from mlops.training import evaluate

    metric = settings.model.primary_metric
    score = challenger.metrics[metric]
    current = champion_version(challenger.name)
    if current is None:
        return PromotionDecision(True, challenger.version, None, metric, score, None, "no champion yet")
    champion = mlflow.sklearn.load_model(f"models:/{challenger.name}/{current}")
    champion_score = evaluate(champion, split.x_holdout, split.y_holdout)[metric]
    margin = settings.model.promotion_margin
    promoted = score > champion_score + margin
    comparison = "beats" if promoted else "does not beat"
    reason = (
        f"{metric} {score:.4f} {comparison} champion v{current}'s {champion_score:.4f}"
        f" on the same holdout by more than the margin {margin:g}"
    )
    return PromotionDecision(promoted, challenger.version, current, metric, score, champion_score, reason)


def apply_promotion(decision: PromotionDecision, name: str) -> None:
    """Write the decision on the version as tags; move the aliases if promoted."""
    import mlflow

    client = mlflow.MlflowClient()
    tags = {
        "gate.decision": "promoted" if decision.promoted else "rejected",
        "gate.reason": decision.reason,
        "gate.metric": decision.metric,
        "gate.challenger_score": f"{decision.challenger_score:.6f}",
        "gate.champion_version": decision.champion_version or "",
    }
    if decision.champion_score is not None:
        tags["gate.champion_score"] = f"{decision.champion_score:.6f}"
    for key, value in tags.items():
        client.set_model_version_tag(name, decision.challenger_version, TAG_PREFIX + key, value)
    if not decision.promoted:
        return
    if decision.champion_version is not None:
        client.set_registered_model_alias(name, PREVIOUS, decision.champion_version)
    client.set_registered_model_alias(name, CHAMPION, decision.challenger_version)


def _version_by_alias(name: str, alias: str) -> str | None:
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            return None
        raise RegistryError(f"Could not read alias '{alias}' of model '{name}': {exc.message}") from None


def _run_tags(tags: dict[str, str]) -> dict[str, str]:
    commit = _git_commit()
    base = {TAG_PREFIX + "git_commit": commit} if commit else {}
    return base | {TAG_PREFIX + key: str(value) for key, value in tags.items()}


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _trusted_types(pipeline: Any) -> list[str]:
    # We built this pipeline ourselves, so the types skops flags are ours to trust.
    import skops.io

    return skops.io.get_untrusted_types(data=skops.io.dumps(pipeline))


def _pip_requirements() -> list[str]:
    # Given explicitly: inferring them costs ~7 s per logged model.
    from importlib.metadata import version

    return [f"{package}=={version(package)}" for package in ("scikit-learn", "skops", "numpy", "pandas", "scipy")]
