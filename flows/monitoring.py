"""The monitoring flow: measure drift, and retrain when it passes the threshold.

The current data is a given file or, by default, the inputs of the logged
predictions. When the share of drifted columns reaches
``monitoring.drift_share_threshold`` the training flow runs as a child flow
run tagged ``trigger:drift``.

Before drift is computed the current batch is validated against the data contract
(batch scope), so training/serving skew (a new unit, an unseen category) is reported
as a named contract violation: value-level violations are logged and kept in the
outcome while drift and retraining proceed; a batch missing contract columns stops
the run (:class:`~mlops.errors.ValidationFailed`), since drift cannot be measured on it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, get_run_logger, tags, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from flows.training import TrainingOutcome, training_flow
from mlops import contract, data, monitoring, validation
from mlops.config import Settings
from mlops.errors import ValidationFailed

__all__ = ["MonitoringOutcome", "monitoring_flow"]


@dataclass(frozen=True)
class MonitoringOutcome:
    """The drift measured and, if it triggered one, the retraining it caused."""

    drift: monitoring.DriftSummary
    summary_path: Path
    retrain: TrainingOutcome | None
    validation: validation.ValidationResult | None = None
    validation_report: Path | None = None


@task(cache_policy=NO_CACHE)
def load_current(settings: Settings, current_path: Path | None, feature_columns: list[str]):
    if current_path is not None:
        return data.load_table(current_path)
    return monitoring.load_current_window(settings.predictions_dir, feature_columns)


@task(cache_policy=NO_CACHE)
def validate_current(current, settings: Settings, current_path: Path | None):
    """The same contract as training, in batch scope: skew shows up as named violations."""
    result = contract.validate_with_contract(current, settings.data.contract, scope="batch")
    source = str(current_path) if current_path is not None else f"logged predictions in {settings.predictions_dir}"
    result = dataclasses.replace(result, data_path=source)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    report = validation.write_html_report(result, settings.reports_dir / f"contract-current-{stamp}.html")
    if result.failures:
        get_run_logger().warning("Current batch breaks the data contract:\n%s", result.summary())
    return result, report


@task(cache_policy=NO_CACHE)
def measure_drift(reference, current, settings: Settings, feature_columns: list[str]):
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    report = settings.reports_dir / f"drift-{stamp}.html"
    summary = monitoring.compute_drift(
        reference,
        current,
        threshold=settings.monitoring.drift_share_threshold,
        columns=feature_columns,
        report_path=report,
        min_rows=settings.monitoring.min_rows,
    )
    get_run_logger().info(summary.summary())
    return summary, monitoring.save_summary(summary, report.with_suffix(".json"))


@flow(name="monitoring", validate_parameters=False)
def monitoring_flow(settings: Settings, current_path: Path | None = None) -> MonitoringOutcome:
    """Compare current data with the training data; retrain when drift passes the threshold."""
    reference = data.load_table(settings.data.training)
    feature_columns = [column for column in reference.columns if column != settings.data.target]
    current = load_current(settings, current_path, feature_columns)
    checked, report = validate_current(current, settings, current_path)
    missing = sorted(set(feature_columns) - set(map(str, current.columns)))
    if missing:
        message = f"{checked.summary()}\nHTML report: {report}\nNo drift measured: columns {missing} are missing."
        return Failed(message=message, data=ValidationFailed(message, checked))
    current = current[feature_columns]
    drift, summary_path = measure_drift(reference[feature_columns], current, settings, feature_columns)
    retrain = None
    if drift.drift_detected and settings.monitoring.retrain_on_drift:
        get_run_logger().warning("Drift in %.0f%% of columns: starting the training flow", 100 * drift.drift_share)
        with tags("retrain", "trigger:drift"):
            retrain = training_flow.with_options(flow_run_name="retrain-on-drift")(settings, trigger="drift")
    return MonitoringOutcome(drift, summary_path, retrain, checked, report)
