"""The monitoring flow: validate, measure drift (and quality), decide, retrain, alert.

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
   :mod:`flows.schedules`).

When a shadow version logged answers to the window's requests (``mlops deploy --shadow``),
the check also compares it with the champion (:func:`mlops.monitoring.compare_shadow`:
disagreement, and both versions' quality on the labeled rows they share), records it on
the same MLflow run and in the saved summary; it never triggers anything by itself.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, get_run_logger, runtime, tags, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from flows.training import TrainingOutcome, training_flow
from mlops import alerts, contract, data, labels, monitoring, retraining, tracking, validation
from mlops.config import Settings
from mlops.errors import DataError, MlopsError, ValidationFailed
from mlops.prediction_log import METADATA_COLUMNS

__all__ = ["MonitoringOutcome", "monitoring_flow"]


@dataclass(frozen=True)
class MonitoringOutcome:
    """The drift measured and, if it triggered one, the retraining it caused."""

    drift: monitoring.DriftSummary
    summary_path: Path
    retrain: TrainingOutcome | None
    validation: validation.ValidationResult | None = None
    validation_report: Path | None = None
    decision: retraining.RetrainDecision | None = None
    quality: dict[str, float] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    labels: monitoring.LabeledWindow | None = None
    shadow: monitoring.ShadowComparison | None = None


@task(cache_policy=NO_CACHE)
def load_current(settings: Settings, current_path: Path | None, feature_columns: list[str]):
    if current_path is not None:
        return data.load_table(current_path)
    window = settings.monitoring
    return monitoring.load_current_window(
        settings.predictions_dir, feature_columns, window.window_rows, window.window_minutes, with_metadata=True
    )


@task(cache_policy=NO_CACHE)
def load_reference(settings: Settings):
    """The training data snapshot of the champion's run; the training file before any champion."""
    snapshot = tracking.reference_snapshot(settings.model.name)
    if snapshot is None:
        get_run_logger().info("No champion snapshot: the reference is %s", settings.data.training)
        return data.load_table(settings.data.training)
    return snapshot


@task(cache_policy=NO_CACHE)
def measure_quality(current, settings: Settings, labels_path: Path | None):
    """Quality of the served predictions on the rows that have a label (none: None and {}).

    The labels are ``labels_path`` when given, else the label store (``mlops labels add``).
    """
    logger = get_run_logger()
    if "request_id" not in current.columns:
        if labels_path is not None:
            logger.warning("Labels %s not used: the current data is a file without request_id and record.", labels_path)
        return None, {}
    source = labels_path
    if source is None:
        source, replaced = labels.read_labels(settings.labels_dir)
        if source.empty:
            logger.info("No labels in the label store %s: quality not measured.", settings.labels_dir)
            return None, {}
    terms = contract.load_contract(settings.data.contract)
    labeled = monitoring.join_labels(current, source, terms.target_column)
    (logger.warning if labeled.problems else logger.info)("Labels: %s", labeled.summary())
    classes = terms.target_column.categories if terms.task == "classification" else None
    positive = getattr(settings.model, "positive_label", None)
    quality = monitoring.window_quality(labeled, terms.task, classes=classes, positive=positive)
    if quality:
        logger.info("Quality on %d labeled rows: %s", labeled.labeled_rows, quality)
    return labeled, quality


@task(cache_policy=NO_CACHE)
def compare_with_shadow(current, labeled, settings: Settings) -> monitoring.ShadowComparison | None:
    """The shadow's answers to the window's requests against the champion's (None: no shadow answered any)."""
    from mlops.deployment import shadow_predictions_dir
    from mlops.prediction_log import read_prediction_log

    folder = shadow_predictions_dir(settings)
    if "request_id" not in current.columns or not any(folder.glob("predictions-*")):
        return None
    terms = contract.load_contract(settings.data.contract)
    comparison = monitoring.compare_shadow(
        current,
        read_prediction_log(folder),
        labeled.rows if labeled is not None else None,
        task=terms.task,
        classes=terms.target_column.categories if terms.task == "classification" else None,
        positive=getattr(settings.model, "positive_label", None),
    )
    if comparison is not None:
        get_run_logger().info(comparison.summary())
    return comparison


@task(cache_policy=NO_CACHE)
def record_check(drift, quality, labeled, settings: Settings, reports: list[Path], shadow=None) -> str:
    return monitoring.log_monitoring_run(
        drift,
        experiment=f"{settings.model.experiment}-monitoring",
        artifact_dir=settings.mlflow_artifact_dir,
        model_name=settings.model.name,
        model_version=tracking.champion_version(settings.model.name),
        quality=quality,
        labeled_rows=labeled.labeled_rows if labeled is not None else None,
        invalid_labels=labeled.invalid if labeled is not None else 0,
        artifacts=[path for path in reports if path and Path(path).is_file()],
        tags={"mlops.flow_run_id": str(runtime.flow_run.id or "")},
        shadow=shadow,
    )


@task(cache_policy=NO_CACHE)
def decide(drift, quality: dict[str, float], labeled, rows: int, settings: Settings) -> retraining.RetrainDecision:
    policy, task_type = settings.monitoring, settings.model.task
    decision = retraining.decide_retrain(
        drift_share=drift.drift_share,
        quality=quality.get(retraining.watched_metric(policy, task_type)),
        window_rows=rows,
        history=retraining.retrain_history(),
        policy=policy,
        task=task_type,
        labeled_rows=labeled.labeled_rows if labeled is not None else 0,
    )
    get_run_logger().info(decision.explain())
    return decision


@task(cache_policy=NO_CACHE)
def validate_current(current, settings: Settings, current_path: Path | None):
    """The same contract as training, in batch scope: skew shows up as named violations."""
    inputs = current.drop(columns=[column for column in METADATA_COLUMNS if column in current.columns])
    source = str(current_path) if current_path is not None else f"logged predictions in {settings.predictions_dir}"
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    result, report = contract.check_with_report(
        inputs, settings.data.contract, scope="batch", source=source,
        report_path=settings.reports_dir / f"contract-current-{stamp}.html",
    )
    if result.failures:
        get_run_logger().warning("Current batch breaks the data contract:\n%s", result.summary())
    return result, report


@task(cache_policy=NO_CACHE)
def measure_drift(reference, current, settings: Settings, feature_columns: list[str], categorical: list[str]):
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    report = settings.reports_dir / f"drift-{stamp}.html"
    summary = monitoring.compute_drift(
        reference,
        current,
        threshold=settings.monitoring.drift_share_threshold,
        columns=feature_columns,
        categorical=categorical,
        report_path=report,
        min_rows=settings.monitoring.min_rows,
    )
    get_run_logger().info(summary.summary())
    return summary, monitoring.save_summary(summary, report.with_suffix(".json"))


@flow(name="monitoring", validate_parameters=False)
def monitoring_flow(
    settings: Settings, current_path: Path | None = None, labels_path: Path | None = None
) -> MonitoringOutcome:
    """Validate the window, measure drift and quality, record the check, retrain if the policy says so."""
    try:  # a broken contract is the user's to fix: a Failed state, no traceback
        feature_columns, categorical = monitoring.drift_columns(contract.load_contract(settings.data.contract))
    except MlopsError as exc:
        return Failed(message=str(exc), data=exc)
    reference = load_reference(settings)
    current = load_current(settings, current_path, feature_columns)
    checked, report = validate_current(current, settings, current_path)
    missing = sorted(set(feature_columns) - set(map(str, current.columns)))
    if missing:
        message = f"{checked.summary()}\nHTML report: {report}\nNo drift measured: columns {missing} are missing."
        return Failed(message=message, data=ValidationFailed(message, checked))
    stale = [column for column in feature_columns if column not in reference.columns]
    if stale:
        message = (f"The champion's reference data has no column(s) {stale} of the data contract's features. "
                   "Train a champion on data matching the contract (mlops train), or fix data.contract.")
        return Failed(message=message, data=DataError(message))
    drift, summary_path = measure_drift(reference, current, settings, feature_columns, categorical)
    labels_path = labels_path or settings.monitoring.labels
    labeled, quality = measure_quality(current, settings, labels_path)
    shadow = compare_with_shadow(current, labeled, settings) if current_path is None else None
    reports = [Path(drift.report_path) if drift.report_path else None, summary_path, report]
    run_id = record_check(drift, quality, labeled, settings, reports, shadow)
    if drift.drift_detected:
        alerts.send_alert(settings.alerts, "drift_detected", drift.summary().splitlines()[0], {"mlflow_run_id": run_id})
    decision = decide(drift, quality, labeled, len(current), settings)
    _complete_summary(summary_path, settings, current_path, quality, decision, labeled, shadow)
    if decision.blocked_by == retraining.NO_LABELS:
        alerts.send_alert(settings.alerts, "retrain_needs_labels", decision.explain(), {"mlflow_run_id": run_id})
    retrain = None
    if decision.retrain:
        again = lambda: decide(drift, quality, labeled, len(current), settings)  # noqa: E731
        rows = labeled.rows if labeled is not None else current.iloc[0:0]
        source = str(labels_path or settings.labels_dir)
        decision, retrain = _retrain(settings, decision, again, run_id, rows, source)
    return MonitoringOutcome(drift, summary_path, retrain, checked, report, decision, quality, run_id, labeled, shadow)


def _retrain(settings: Settings, decision, decide_again, monitoring_run_id: str, labeled, labels_source: str) -> tuple:
    """Run the training flow as a child run, unless another retrain holds the lock.

    The policy is asked again once the lock is held: a check that waited on another's
    retrain must see it in the history (cooldown), not act on what it read before.
    """
    from filelock import FileLock, Timeout

    lock_path = settings.state_dir / "locks" / "retrain.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(lock_path, timeout=0):
            decision = decide_again()
            if not decision.retrain:
                return decision, None
            reason = "drift" if any(t.startswith("drift") for t in decision.triggers) else "quality"
            get_run_logger().warning("Retraining (%s)", decision.explain())
            fingerprint = tracking.reference_fingerprint(settings.model.name) or ""
            data_path, recent_path, lineage = _retrain_data(settings, labeled, fingerprint, labels_source)
            lineage |= {"monitoring_run_id": monitoring_run_id, "monitoring_flow_run_id": str(runtime.flow_run.id or "")}
            # The labeled rows follow the training file's rows in the retraining data.
            labeled_from = int(lineage["reference_rows"]) if "reference_rows" in lineage else None
            with tags(retraining.RETRAIN_TAG, f"trigger:{reason}", f"monitoring-run:{monitoring_run_id}"):
                outcome = training_flow.with_options(flow_run_name=f"retrain-on-{reason}")(
                    settings, data_path=data_path, trigger=reason, recent_path=recent_path, lineage=lineage,
                    promote=settings.monitoring.auto_promote, labeled_from=labeled_from,
                    labeled_weight=settings.monitoring.labeled_weight,
                )
    except Timeout:
        blocked = dataclasses.replace(decision, retrain=False, blocked_by="a retrain is already running (lock held)")
        get_run_logger().info(blocked.explain())
        return blocked, None
    if outcome.decision.promoted:
        redeploy(settings)
    elif outcome.decision.waiting:
        alerts.send_alert(
            settings.alerts,
            "challenger_waiting",
            f"retrained v{outcome.registered.version} passed the gate and waits for approval "
            f"(monitoring.auto_promote is false): mlops promote {outcome.registered.version}. {outcome.decision.reason}",
        )
    else:
        alerts.send_alert(
            settings.alerts,
            "gate_rejected",
            f"retrained v{outcome.registered.version} kept as challenger: {outcome.decision.reason}",
        )
    return decision, outcome


@task(cache_policy=NO_CACHE)
def redeploy(settings: Settings) -> str | None:
    """Move a running deployment to the new champion through the safe swap.

    Nothing is deployed: nothing to do. A champion failing its smoke test gets no
    traffic; the deployer rolls the alias back, and someone is told.
    """
    from mlops import deployment
    from mlops.errors import ServingError

    status = deployment.deployment_status(settings)
    if status.state is None or not status.backend_alive:
        return None
    try:
        state = deployment.deploy(settings, settings.serving.alias)
    except ServingError as exc:
        get_run_logger().error("New champion not deployed: %s", exc)
        alerts.send_alert(settings.alerts, "deployment_rolled_back", str(exc).splitlines()[0])
        return None
    get_run_logger().info("Deployed v%s at %s (replaced v%s)", state.backend.version, state.url, state.replaced_version)
    return state.backend.version


def _complete_summary(
    path: Path, settings: Settings, current_path: Path | None, quality, decision, labeled, shadow=None
) -> None:
    """Add the window, the quality (and the labels it rests on), the shadow comparison and the decision to the saved summary."""
    import json

    summary = json.loads(path.read_text(encoding="utf-8"))
    window = settings.monitoring
    summary["window"] = (
        {"file": str(current_path)}
        if current_path is not None
        else {"predictions_dir": str(settings.predictions_dir), "last_rows": window.window_rows, "last_minutes": window.window_minutes}
    )
    summary["quality"] = quality
    summary["quality_metric"] = retraining.watched_metric(window, settings.model.task)
    summary["labels"] = labeled.to_dict() if labeled is not None else None
    summary["shadow"] = shadow.to_dict() if shadow is not None else None
    summary["decision"] = {"retrain": decision.retrain, "triggers": list(decision.triggers), "blocked_by": decision.blocked_by}
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def _retrain_data(
    settings: Settings, labeled, reference_fingerprint: str, labels_source: str
) -> tuple[Path | None, Path | None, dict]:
    """The training data, the recent evaluation set and the lineage of a retrain, as ``monitoring.retrain_data`` says.

    ``reference``: the training file. ``reference+labeled``: the labeled window rows are
    ordered by time and the newest ``monitoring.recent_eval_share`` held out as the recent
    evaluation set (never trained on; the gate judges on it); the training file plus the
    rest (the newest ``monitoring.labeled_share`` and ``monitoring.labeled_rows`` of them, each
    weighing ``monitoring.labeled_weight`` in the fit) is written with exactly the training
    file's columns and the labels in the target's type (:func:`mlops.retraining.combine_with_labeled`),
    so it passes the same gate; rows the contract would refuse are left out, with a warning.
    ``module:function``: the user's function, called with the settings and the labeled window
    rows, returns the path of a data file (validated like any training data).
    """
    choice, policy = settings.monitoring.retrain_data, settings.monitoring
    lineage = {"reference_fingerprint": reference_fingerprint, "retrain_data": choice,
               "labels_source": labels_source, "labels_count": str(len(labeled))}
    if "timestamp" in labeled and len(labeled):
        times = labeled["timestamp"].astype(str)
        lineage |= {"window_start": times.min(), "window_end": times.max()}
    if ":" in choice:
        import importlib

        module, function = choice.split(":")
        return Path(getattr(importlib.import_module(module), function)(settings, labeled)), None, lineage
    if choice == "reference" or labeled.empty:
        return None, None, lineage
    reference = data.load_table(settings.data.training)
    terms = contract.load_contract(settings.data.contract)
    train_rows, recent_rows = retraining.split_recent(
        labeled, policy.recent_eval_share, policy.labeled_rows, policy.labeled_share
    )
    logger = get_run_logger()
    try:
        combined = retraining.combine_with_labeled(reference, train_rows, terms)
        recent = retraining.combine_with_labeled(reference.iloc[0:0], recent_rows, terms) if len(recent_rows) else None
    except DataError as exc:
        logger.warning("Retraining on %s alone: %s", settings.data.training, exc)
        return None, None, lineage
    if combined.refused:
        logger.warning("%d labeled rows left out of the retraining data: values the data contract blocks "
                       "(a range, a category, a null)", combined.refused)
    lineage |= {"labeled_train_rows": str(combined.added), "recent_eval_rows": str(recent.added if recent else 0)}
    if combined.added:
        lineage |= {"reference_rows": str(len(reference)), "labeled_weight": f"{policy.labeled_weight:g}"}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    parquet = settings.data.training.suffix.lower() in (".parquet", ".pq")
    suffix = ".parquet" if parquet else ".csv"
    folder = settings.state_dir / "retrain"
    folder.mkdir(parents=True, exist_ok=True)
    path = _write(combined.frame, folder / f"train-plus-labeled-{stamp}{suffix}") if combined.added else None
    recent_path = _write(recent.frame, folder / f"recent-eval-{stamp}{suffix}") if recent and recent.added else None
    logger.info("Retraining on %s: %d training rows + %d labeled rows; recent evaluation set %s (%d rows)",
                path, len(reference), combined.added, recent_path, recent.added if recent else 0)
    return path, recent_path, lineage


def _write(frame, path: Path) -> Path:
    frame.to_parquet(path, index=False) if path.suffix == ".parquet" else frame.to_csv(path, index=False)
    return path
