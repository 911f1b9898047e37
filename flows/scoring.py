"""The batch scoring flow: validate → predict with the champion → write the scores.

Validation against the data contract (batch scope) is the first task: a blocked
batch ends the flow run Failed, with the report as its message, before the model
is loaded or anything is written; calling the flow raises
:class:`~mlops.errors.ValidationFailed` (``mlops score`` exits 1).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.states import Failed

from mlops import contract, data, scoring, tasks
from mlops.config import Settings
from mlops.errors import MlopsError
from mlops.outcomes import ScoringOutcome

__all__ = ["ScoringOutcome", "scoring_flow"]


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
    result, report = tasks.validate_batch(frame, settings, data_path)
    if not result.success:
        return tasks.validation_failed(result, report, "Nothing was scored or written.")
    try:
        model, version = scoring.load_registered_model(settings.model.name, settings.serving.alias)
    except MlopsError as exc:
        return Failed(message=str(exc), data=exc)
    written = tasks.predict(model, frame, terms, output_path)
    outcome = ScoringOutcome(written, len(frame), version, result, report)
    tasks.publish_scoring(outcome)
    return outcome
