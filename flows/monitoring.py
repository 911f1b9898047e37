"""The monitoring flow: validate, measure drift (and quality), decide, retrain, alert.

A project file (``project.monitoring`` in ``mlops.yaml``); a retrain runs the project's
training flow (``project.training``).

The current data is a given file or, by default, a window of the logged
predictions (``monitoring.window_rows`` newest, optionally only the last
``monitoring.window_minutes``).

The reference is the training data snapshot logged with the champion's run (not
whatever file is newest). Each check:

1. validates the batch against the data contract (batch scope), so training/serving
   skew (a new unit, an unseen category) is reported as named violations; a batch
   missing contract columns stops the run (:class:`~mlops.errors.ValidationFailed`);
2. measures drift per feature of the contract with Evidently (numbers as numbers;
   text, bool and category-set columns as categories) and the served predictions'
   quality on the labeled rows (labels from the label store, :mod:`mlops.labels`, or a
   given file), with the task's metrics (labels in the target's type; unusable ones
   counted and named in the log);
3. records the check as an MLflow run linked to the champion version it watched,
   the quality beside the number of labeled rows it rests on;
4. asks the retraining policy (:mod:`mlops.retraining`): triggers, then brakes (drift
   with no labeled rows does not retrain unless ``monitoring.retrain_without_labels``);
5. retrains as a child flow run tagged ``retrain`` and ``trigger:<reason>`` and
   ``monitoring-run:<id>``, holding a lock so a second check cannot start a second
   retrain, on the reference plus the older labeled rows; the newest labeled rows are the
   recent evaluation set the gate judges on; the version records its lineage. The
   challenger goes through the same validation and promotion gate and, when promoted
   (``monitoring.auto_promote``) while a deployment runs, is deployed through the safe swap
   (:func:`mlops.deployment.deploy`: smoke test first, automatic rollback);
6. alerts on drift detected, no labels to retrain on, a challenger waiting for approval,
   gate rejected and deployment rolled back (a failed scheduled run alerts from
   :mod:`mlops.schedules`).

The requests the served contract refused (422) since the window began are counted per
column (:func:`mlops.monitoring.refused_traffic`) and recorded and reported beside it: they
never reach the prediction log, so the window alone would look clean.
When a shadow version logged answers to the window's requests (``mlops deploy --shadow``),
the check also compares it with the champion (:func:`mlops.monitoring.compare_shadow`:
disagreement, and both versions' quality on the labeled rows they share), records it on
the same MLflow run and in the saved summary; it never triggers anything by itself.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.states import Failed

from mlops import alerts, contract, monitoring, retraining, tasks
from mlops.config import Settings
from mlops.errors import DataError, MlopsError, ValidationFailed
from mlops.outcomes import MonitoringOutcome
from mlops.project import load_flow

__all__ = ["MonitoringOutcome", "monitoring_flow"]


@flow(name="monitoring", validate_parameters=False)
def monitoring_flow(
    settings: Settings, current_path: Path | None = None, labels_path: Path | None = None
) -> MonitoringOutcome:
    """Validate the window, measure drift and quality, record the check, retrain if the policy says so."""
    try:  # a broken contract is the user's to fix: a Failed state, no traceback
        feature_columns, categorical = monitoring.drift_columns(contract.load_contract(settings.data.contract))
    except MlopsError as exc:
        return Failed(message=str(exc), data=exc)
    reference = tasks.load_reference(settings)
    current = tasks.load_current(settings, current_path, feature_columns)
    checked, report = tasks.validate_current(current, settings, current_path)
    missing = sorted(set(feature_columns) - set(map(str, current.columns)))
    if missing:
        message = f"{checked.summary()}\nHTML report: {report}\nNo drift measured: columns {missing} are missing."
        return Failed(message=message, data=ValidationFailed(message, checked))
    stale = [column for column in feature_columns if column not in reference.columns]
    if stale:
        message = (f"The champion's reference data has no column(s) {stale} of the data contract's features. "
                   "Train a champion on data matching the contract (mlops train), or fix data.contract.")
        return Failed(message=message, data=DataError(message))
    drift = tasks.measure_drift(reference, current, settings, feature_columns, categorical)
    labels_path = labels_path or settings.monitoring.labels
    labeled, quality = tasks.measure_quality(current, settings, labels_path)
    shadow = tasks.compare_with_shadow(current, labeled, settings) if current_path is None else None
    refused = tasks.count_refused(current, settings, current_path)
    decision = tasks.decide_retrain(drift, quality, labeled, len(current), settings)
    summary_path = tasks.save_check_summary(drift, settings, current_path, quality, decision, labeled, shadow, refused)
    reports = [Path(drift.report_path) if drift.report_path else None, summary_path, report]
    run_id = tasks.record_check(drift, quality, labeled, settings, reports, shadow, refused)
    if drift.drift_detected:
        alerts.send_alert(settings.alerts, "drift_detected", drift.summary().splitlines()[0], {"mlflow_run_id": run_id})
    if decision.blocked_by == retraining.NO_LABELS:
        alerts.send_alert(settings.alerts, "retrain_needs_labels", decision.explain(), {"mlflow_run_id": run_id})
    retrain = None
    if decision.retrain:
        again = lambda: tasks.decide_retrain(drift, quality, labeled, len(current), settings)  # noqa: E731
        rows = labeled.rows if labeled is not None else current.iloc[0:0]
        source = str(labels_path or settings.labels_dir)
        decision, retrain = tasks.retrain(settings, decision, again, run_id, rows, source, load_flow(settings, "training"))
    outcome = MonitoringOutcome(drift, summary_path, retrain, checked, report, decision, quality, run_id, labeled, shadow,
                                refused)  # fmt: skip
    tasks.publish_monitoring(outcome, settings)
    return outcome
