"""The batch scoring flow: validate → predict with the champion → write the scores.

Validation against the data contract (batch scope) is the first task: a blocked
batch ends the flow run Failed, with the report as its message, before the model
is loaded or anything is written; calling the flow raises
:class:`~mlops.errors.ValidationFailed` (``mlops score`` exits 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from mlops import contract, data, scoring, validation
from mlops.config import Settings
from mlops.errors import MlopsError, ValidationFailed

__all__ = ["ScoringOutcome", "scoring_flow"]


@dataclass(frozen=True)
class ScoringOutcome:
    """Where the scores went, which model made them, and what the gate reported."""

    output_path: Path
    rows: int
    model_version: str
    validation: validation.ValidationResult
    validation_report: Path


@task(cache_policy=NO_CACHE)
def validate_batch(frame, settings: Settings, data_path: Path) -> tuple[validation.ValidationResult, Path]:
    """The gate: the data contract in batch scope (features only, any row count)."""
    stamp = runtime.flow_run.id or "local"
    result, report = contract.check_with_report(
        frame, settings.data.contract, scope="batch", source=str(data_path),
        report_path=settings.reports_dir / f"validation-scoring-{stamp}.html",
    )
    for warning in result.warnings:
        get_run_logger().warning("Data contract warning: %s", warning.describe())
    return result, report


@task(cache_policy=NO_CACHE)
def predict(model, frame, terms: contract.Contract, output_path: Path) -> Path:
    written = scoring.write_scores(scoring.score_frame(model, frame, terms), output_path)
    get_run_logger().info("Scored %s rows into %s", len(frame), written)
    return written


@flow(name="scoring", validate_parameters=False)
def scoring_flow(settings: Settings, data_path: Path, output_path: Path | None = None) -> ScoringOutcome:
    """Validate DATA against the contract, score it with the champion, write the scores."""
    data_path = Path(data_path)
    output_path = Path(output_path or settings.state_dir / "scores" / f"{data_path.stem}-scores.csv")
    try:  # an unreadable file or contract is the user's to fix: a Failed state, no traceback
        frame = data.load_table(data_path)
        terms = contract.load_contract(settings.data.contract)
    except MlopsError as exc:
        return Failed(message=str(exc), data=exc)
    result, report = validate_batch(frame, settings, data_path)
    if not result.success:
        message = f"{result.summary()}\nHTML report: {report}\nNothing was scored or written."
        return Failed(message=message, data=ValidationFailed(message, result))
    try:
        model, version = scoring.load_registered_model(settings.model.name, settings.serving.alias)
    except MlopsError as exc:
        return Failed(message=str(exc), data=exc)
    written = predict(model, frame, terms, output_path)
    return ScoringOutcome(written, len(frame), version, result, report)
