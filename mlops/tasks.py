"""The stages of the loop as Prefect tasks, each usable in a user's own ``@flow``.

Each task is a thin wrapper over a plain function of the library (named in its
docstring), which a script or a test may call directly; the project's flows
(``flows/training.py``, ``flows/monitoring.py``, ``flows/scoring.py``) compose them.
A data gate that blocks is an expected outcome: the flow returns
:func:`validation_failed` (a Failed state carrying the report) rather than raising
inside a task, which would log a traceback for a data problem.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout
from prefect import get_run_logger, runtime, tags, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext, TaskRunContext
from prefect.states import Failed, State

from mlops import alerts, contract, data, deployment, labels, monitoring, packaging, retraining, run_artifacts, scoring, tracking, training
from mlops.config import Settings
from mlops.deployment import shadow_predictions_dir
from mlops.environment import tracking_faults
from mlops.errors import ServingError, ValidationFailed
from mlops.outcomes import MonitoringOutcome, ScoringOutcome, TrainingOutcome
from mlops.prediction_log import METADATA_COLUMNS, read_prediction_log
from mlops.training import DataSplit

__all__ = [
    "candidate_columns",
    "compare_with_shadow",
    "count_refused",
    "decide_retrain",
    "deploy_model",
    "gate",
    "load_current",
    "load_data",
    "load_recent",
    "load_reference",
    "measure_drift",
    "measure_quality",
    "package_model",
    "pick_best",
    "predict",
    "publish_monitoring",
    "publish_scoring",
    "publish_training",
    "record_check",
    "redeploy",
    "register_model",
    "retrain",
    "save_check_summary",
    "search_candidate",
    "send_alert",
    "split_data",
    "train_candidates",
    "validate_batch",
    "validate_current",
    "validate_data",
    "validation_failed",
    "write_model_card",
]


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """The run's logger (its lines in the Prefect UI); this module's own when called outside a run (``task.fn``)."""
    if FlowRunContext.get() is not None or TaskRunContext.get() is not None:
        return get_run_logger()
    return logging.getLogger(__name__)


@task(cache_policy=NO_CACHE)
def load_data(settings: Settings, path: Path | None = None):
    """The training table (``data.training``, or ``path``): CSV or Parquet. Wraps :func:`mlops.data.load_table`."""
    return data.load_table(Path(path or settings.data.training))


def validation_failed(result: contract.ValidationResult, report: Path, note: str = "") -> State:
    """The state a flow returns when the data gate blocks: Failed with the report, no traceback."""
    message = f"{result.summary()}\nHTML report: {report}" + (f"\n{note}" if note else "")
    return Failed(message=message, data=ValidationFailed(message, result))


@task(cache_policy=NO_CACHE)
def validate_data(
    frame, settings: Settings, data_path: Path | None = None
) -> tuple[contract.ValidationResult, Path]:
    """The gate: the data contract (``data.contract``) in training scope; warnings are logged.

    Returns the result and its HTML report; a flow stops on a failed result with
    :func:`validation_failed`. Wraps :func:`mlops.contract.check_with_report`.
    """
    result, report = _check(frame, settings, "training", Path(data_path or settings.data.training), "validation")
    if result.success:
        _logger().info("Validation passed: %s rows, %s expectations", result.rows, result.evaluated)
    return result, report


@task(cache_policy=NO_CACHE)
def split_data(frame, settings: Settings, labeled_from: int | None = None, labeled_weight: float = 1.0) -> DataSplit:
    """The contract's features in their served types, split by row hash (stratified for classes).

    Wraps :func:`mlops.training.split_for_contract`.
    A retrain's rows from position ``labeled_from`` on (the labeled production rows) weigh
    ``labeled_weight`` in the fit.
    """
    terms = contract.load_contract(settings.data.contract)
    unlabeled = int(frame[settings.data.target].isna().sum())
    if unlabeled:
        _logger().warning("%s rows have no '%s' value: not used for training", unlabeled, settings.data.target)
    excluded = contract.excluded_columns_note(terms)
    if excluded:
        _logger().info(excluded)
    split = training.split_for_contract(frame, terms, settings.model)
    if labeled_from is None or labeled_weight == 1.0:
        return split

    weights = pd.Series(np.where(np.arange(len(frame)) >= labeled_from, labeled_weight, 1.0), index=frame.index)
    _logger().info("The %d labeled rows weigh %g each in the fit", len(frame) - labeled_from, labeled_weight)
    return split.weighted(weights)


@task(cache_policy=NO_CACHE)
def search_candidate(
    candidate: training.Candidate, split: DataSplit, settings: Settings, columns: tuple[list[str], list[str]]
) -> training.CandidateSearch:
    """One candidate's cross-validated search, a task run of its own (``columns``: the contract's numeric, categorical).

    Wraps :func:`mlops.training.search_candidate`. The training flow submits one per candidate:
    they run side by side on the flow's task runner (``orchestration.task_runner``).
    """
    _logger().info("searching candidate %s (%d-fold cross-validation)", candidate.name, settings.model.search.cv_folds)
    return training.search_candidate(candidate, split, settings.model, columns)


@task(cache_policy=NO_CACHE)
def pick_best(searches: list[training.CandidateSearch], split: DataSplit, settings: Settings) -> training.SearchResult:
    """The best candidate (the first of the highest cross-validated score) refitted and scored on the holdout.

    Wraps :func:`mlops.training.pick_best`; ``searches`` in the candidates' order, whatever finished first.
    """
    result = training.pick_best(searches, split, settings.model)
    _log_search(result)
    return result


@task(cache_policy=NO_CACHE)
def train_candidates(
    split: DataSplit, settings: Settings, candidates: list[training.Candidate] | None = None
) -> training.SearchResult:
    """Search every candidate (``model.candidates``, or ``candidates`` declared in Python) in this one task run.

    Wraps :func:`mlops.training.search_candidates`; the best is refitted and scored on the holdout.
    The project's training flow runs :func:`search_candidate` per candidate and :func:`pick_best` instead.
    """
    result = training.search_candidates(split, settings.model, candidates, candidate_columns(settings))
    _log_search(result)
    return result


def _log_search(result: training.SearchResult) -> None:
    best = result.best
    others = ", ".join(f"{name} {value:.4f}" for name, value in best.metrics.items() if name != result.metric)
    _logger().info("%s trials; best %s: holdout %s %.4f (%s)", len(result.trials), best.params["estimator"], result.metric,
                   best.metrics.get(result.metric, float("nan")), others)  # fmt: skip


def candidate_columns(settings: Settings) -> tuple[list[str], list[str]]:
    """The data contract's numeric and categorical feature columns, as the candidates' preprocessing takes them."""
    return training.contract_columns(contract.load_contract(settings.data.contract))


@task(cache_policy=NO_CACHE)
def register_model(
    result: training.SearchResult,
    split: DataSplit,
    frame,
    settings: Settings,
    data_path: Path | None = None,
    tags: dict[str, str] | None = None,
    report: Path | None = None,
) -> tracking.RegisteredVersion:
    """Log the best candidate (parent run, a child run per trial) and register it as a new version.

    Wraps :func:`mlops.tracking.log_and_register`; ``report`` (the validation report) is logged with it.
    """
    data_path = Path(data_path or settings.data.training)
    tags = tags or {"trigger": "manual", "data_fingerprint": data.data_fingerprint(frame)}
    manifest = training.split_manifest(frame, split, settings.model.seed)
    with tracking_faults(settings):  # the server stopped answering: exit 4, the version left incomplete
        return tracking.log_and_register(
            result.best, split, frame, settings, data_path=data_path, tags=tags, trials=result.trials,
            manifest=manifest, reports=[report] if report else [],
        )


@task(cache_policy=NO_CACHE)
def load_recent(recent_path: Path, settings: Settings) -> tracking.EvaluationSet:
    """The recent evaluation set (labeled production rows never trained on), as the model takes them."""
    terms = contract.load_contract(settings.data.contract)
    typed = training.feature_frame(data.load_table(recent_path), terms, keep_target=True)
    typed = typed[typed[terms.target].notna()]
    _logger().info("Recent evaluation set %s: %d rows", recent_path, len(typed))
    return tracking.EvaluationSet(typed.drop(columns=[terms.target]), typed[terms.target])


@task(cache_policy=NO_CACHE)
def gate(
    registered: tracking.RegisteredVersion,
    split: DataSplit,
    settings: Settings,
    recent: tracking.EvaluationSet | None = None,
    promote: bool = True,
) -> tracking.PromotionDecision:
    """The champion gate: promote the version only if it beats the champion (and the floors).

    Wraps :func:`mlops.tracking.gate_challenger`; ``recent`` is the set it judges on when given.
    """
    with tracking_faults(settings):
        decision = tracking.gate_challenger(registered, split, settings, recent, promote=promote)
    verdict = "promoted to champion" if decision.promoted else "waits for approval" if decision.waiting else "kept as challenger"
    _logger().info("Version %s %s: %s", registered.version, verdict, decision.reason, extra={"model_version": registered.version})
    return decision


@task(cache_policy=NO_CACHE)
def write_model_card(registered, decision, settings: Settings, facts: dict[str, str]) -> None:
    """The version's model card (what, on which data, the gate's decision) as an MLflow artifact."""
    with tracking_faults(settings):
        tracking.log_model_card(registered, tracking.model_card(registered, decision, settings, facts))


@task(cache_policy=NO_CACHE)
def validate_batch(frame, settings: Settings, data_path: Path) -> tuple[contract.ValidationResult, Path]:
    """The gate: the data contract in batch scope (features only, any row count)."""
    return _check(frame, settings, "batch", Path(data_path), "validation-scoring")


def _check(frame, settings: Settings, scope: Literal["training", "batch"], source: Path, report_name: str) -> tuple[contract.ValidationResult, Path]:
    """The contract in ``scope``, its report named after the flow run; warnings are logged."""
    stamp = runtime.flow_run.id or "local"
    result, report = contract.check_with_report(
        frame, settings.data.contract, scope=scope, source=str(source),
        report_path=settings.reports_dir / f"{report_name}-{stamp}.html",
    )
    for warning in result.warnings:
        _logger().warning("Data contract warning: %s", warning.describe())
    return result, report


@task(cache_policy=NO_CACHE)
def predict(model, frame, terms: contract.Contract, output_path: Path) -> Path:
    written = scoring.write_scores(scoring.score_frame(model, frame, terms), output_path)
    _logger().info("Scored %s rows into %s", len(frame), written)
    return written


@task(cache_policy=NO_CACHE)
def publish_training(outcome: TrainingOutcome, settings: Settings) -> None:
    """The run's Prefect artifacts: its MLflow run (a link), the version, the gate's decision, the report.

    Wraps :func:`mlops.run_artifacts.publish_training`; outside a flow run nothing is published.
    """
    run_artifacts.publish_training(outcome, settings)


@task(cache_policy=NO_CACHE)
def publish_monitoring(outcome: MonitoringOutcome, settings: Settings) -> None:
    """The run's Prefect artifacts: drift and quality, the retrain decision, the reports, its MLflow run."""
    run_artifacts.publish_monitoring(outcome, settings)


@task(cache_policy=NO_CACHE)
def publish_scoring(outcome: ScoringOutcome) -> None:
    """The run's Prefect artifact: rows scored, by which version, into which file."""
    run_artifacts.publish_scoring(outcome)


@task(cache_policy=NO_CACHE)
def load_current(settings: Settings, current_path: Path | None, feature_columns: list[str]):
    """The data to check: ``current_path``, or the window of logged predictions (``monitoring.window_*``)."""
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
        _logger().info("No champion snapshot: the reference is %s", settings.data.training)
        return data.load_table(settings.data.training)
    return snapshot


@task(cache_policy=NO_CACHE)
def measure_quality(current, settings: Settings, labels_path: Path | None):
    """Quality of the served predictions on the rows that have a label (none: None and {}).

    The labels are ``labels_path`` when given, else the label store (``mlops labels add``).
    """
    logger = _logger()
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
        _logger().info(comparison.summary())
    return comparison


@task(cache_policy=NO_CACHE)
def count_refused(current, settings: Settings, current_path: Path | None) -> monitoring.RefusedTraffic | None:
    """The requests the served contract refused (422) since the window began (None: the data is a given file)."""
    if current_path is not None:
        return None
    refused = monitoring.refused_traffic(settings.predictions_dir, current)
    (_logger().warning if refused.requests else _logger().info)("Refused at serving: %s", refused.summary())
    return refused


@task(cache_policy=NO_CACHE)
def record_check(drift, quality, labeled, settings: Settings, reports: list[Path], shadow=None, refused=None) -> str:
    """The check as an MLflow run of the ``<experiment>-monitoring`` experiment, linked to the champion."""
    return monitoring.log_monitoring_run(
        drift,
        experiment_id=tracking.create_experiment(f"{settings.model.experiment}-monitoring", settings),
        model_name=settings.model.name,
        model_version=tracking.champion_version(settings.model.name),
        quality=quality,
        labeled_rows=labeled.labeled_rows if labeled is not None else None,
        invalid_labels=labeled.invalid if labeled is not None else 0,
        artifacts=[path for path in reports if path and Path(path).is_file()],
        tags={"mlops.flow_run_id": str(runtime.flow_run.id or ""), **tracking.prefect_tags()},
        shadow=shadow,
        refused=refused,
    )


@task(cache_policy=NO_CACHE)
def decide_retrain(drift, quality: dict[str, float], labeled, rows: int, settings: Settings) -> retraining.RetrainDecision:
    """The retraining policy: triggers, then brakes. Wraps :func:`mlops.retraining.decide_retrain`."""
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
    _logger().info(decision.explain())
    return decision


@task(cache_policy=NO_CACHE)
def validate_current(current, settings: Settings, current_path: Path | None):
    """The same contract as training, in batch scope: skew shows up as named violations."""
    inputs = current.drop(columns=[column for column in METADATA_COLUMNS if column in current.columns])
    source = str(current_path) if current_path is not None else f"logged predictions in {settings.predictions_dir}"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    result, report = contract.check_with_report(
        inputs, settings.data.contract, scope="batch", source=source,
        report_path=settings.reports_dir / f"contract-current-{stamp}.html",
    )
    if result.failures:
        _logger().warning("Current batch breaks the data contract:\n%s", result.summary())
    return result, report


@task(cache_policy=NO_CACHE)
def measure_drift(reference, current, settings: Settings, feature_columns: list[str], categorical: list[str]):
    """Evidently's drift tests per feature and their HTML report. Wraps :func:`mlops.monitoring.compute_drift`."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
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
    _logger().info(summary.summary())
    return summary


@task(cache_policy=NO_CACHE)
def package_model(settings: Settings, alias: str | None = None) -> packaging.Package:
    """A Bento of the version behind ``alias`` (default ``serving.alias``) and its Docker build context.

    Wraps :func:`mlops.packaging.package`.
    """
    built = packaging.package(settings, alias)
    _logger().info(
        "Built Bento %s (v%s); Docker context %s", built.bento_tag, built.version, built.build_context,
        extra={"model_version": built.version},
    )  # fmt: skip
    return built


@task(cache_policy=NO_CACHE)
def deploy_model(settings: Settings, alias: str | None = None):
    """Serve the version behind ``alias`` through the safe swap (smoke test first, automatic rollback).

    Wraps :func:`mlops.deployment.deploy`.
    """
    state = deployment.deploy(settings, alias or settings.serving.alias)
    _logger().info("Serving v%s at %s", state.backend.version, state.url, extra={"model_version": state.backend.version})
    return state


@task(cache_policy=NO_CACHE)
def send_alert(settings: Settings, event: str, message: str, details: dict[str, Any] | None = None) -> bool:
    """Send ``message`` to the configured webhook or Prefect notification block (``alerts``).

    Wraps :func:`mlops.alerts.send_alert`; ``event`` is one of :data:`mlops.config.ALERT_EVENTS`.
    """
    return alerts.send_alert(settings.alerts, event, message, details)


def retrain(
    settings: Settings, decision, decide_again, monitoring_run_id: str, labeled, labels_source: str, training_flow: Any
) -> tuple:
    """Run ``training_flow`` (the project's) as a child run, unless another retrain holds the lock.

    The policy is asked again once the lock is held: a check that waited on another's
    retrain must see it in the history (cooldown), not act on what it read before.
    """
    lock_path = settings.state_dir / "locks" / "retrain.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(lock_path, timeout=0):
            decision = decide_again()
            if not decision.retrain:
                return decision, None
            reason = "drift" if any(t.startswith("drift") for t in decision.triggers) else "quality"
            _logger().warning("Retraining (%s)", decision.explain())
            retraining.record_trigger(settings, decision, monitoring_run_id)  # the audit log's retrain line
            fingerprint = tracking.reference_fingerprint(settings.model.name) or ""
            data_path, recent_path, lineage = retraining.retrain_data(settings, labeled, fingerprint, labels_source)
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
        _logger().info(blocked.explain())
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
    status = deployment.deployment_status(settings)
    if status.state is None or not status.backend_alive:
        return None
    try:
        state = deployment.deploy(settings, settings.serving.alias)
    except ServingError as exc:
        _logger().error("New champion not deployed: %s", exc)
        alerts.send_alert(settings.alerts, "deployment_rolled_back", str(exc).splitlines()[0])
        return None
    _logger().info(
        "Deployed v%s at %s (replaced v%s)", state.backend.version, state.url, state.replaced_version,
        extra={"model_version": state.backend.version},
    )  # fmt: skip
    return state.backend.version


def save_check_summary(
    drift, settings: Settings, current_path: Path | None, quality, decision, labeled, shadow=None, refused=None
) -> Path:
    """The whole check as one JSON file beside the drift report, written once: drift, the window, the traffic
    refused at serving, the quality (and the labels it rests on), the shadow comparison and the decision."""
    window = settings.monitoring
    summary = drift.to_dict()
    summary["window"] = (
        {"file": str(current_path)}
        if current_path is not None
        else {"predictions_dir": str(settings.predictions_dir), "last_rows": window.window_rows, "last_minutes": window.window_minutes}
    )
    summary["quality"] = quality
    summary["quality_metric"] = retraining.watched_metric(window, settings.model.task)
    summary["labels"] = labeled.to_dict() if labeled is not None else None
    summary["shadow"] = shadow.to_dict() if shadow is not None else None
    summary["refused"] = refused.to_dict() if refused is not None else None
    summary["decision"] = {"retrain": decision.retrain, "triggers": list(decision.triggers), "blocked_by": decision.blocked_by}
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    path = Path(drift.report_path).with_suffix(".json") if drift.report_path else settings.reports_dir / f"drift-{stamp}.json"
    return monitoring.save_summary(summary, path)
