"""What the project's flows return: the CLI, the demo and the schedules read these.

A project's own flow returns the same types (or lets ``mlops train`` / ``mlops
monitor`` show less), so every front end reports it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mlops import monitoring, retraining, tracking
from mlops.contract import ValidationResult

__all__ = ["MonitoringOutcome", "ScoringOutcome", "TrainingOutcome"]


@dataclass(frozen=True)
class TrainingOutcome:
    """What one training run produced and what the gate decided."""

    registered: tracking.RegisteredVersion
    decision: tracking.PromotionDecision
    validation_report: Path
    data_fingerprint: str
    flow_run_id: str | None


@dataclass(frozen=True)
class MonitoringOutcome:
    """The drift measured and, if it triggered one, the retraining it caused."""

    drift: monitoring.DriftSummary
    summary_path: Path
    retrain: TrainingOutcome | None
    validation: ValidationResult | None = None
    validation_report: Path | None = None
    decision: retraining.RetrainDecision | None = None
    quality: dict[str, float] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    labels: monitoring.LabeledWindow | None = None
    shadow: monitoring.ShadowComparison | None = None
    refused: monitoring.RefusedTraffic | None = None


@dataclass(frozen=True)
class ScoringOutcome:
    """Where the scores went, which model made them, and what the gate reported."""

    output_path: Path
    rows: int
    model_version: str
    validation: ValidationResult
    validation_report: Path
