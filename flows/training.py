"""The training flow: validate → split → search → register → gate → model card.

Validation is the first task: on a failing batch the flow run ends Failed, with
the report as its message, before anything is trained, registered or promoted;
calling the flow raises :class:`~mlops.errors.ValidationFailed`. The gate is an
expected outcome, so it is returned as a state rather than raised inside a task
(which would log a traceback for a data problem).

The champion gate's read → compare → move runs under
:func:`mlops.tracking.registry_lock`, so concurrent training flows are gated one
after the other and leave exactly one consistent champion.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from mlops import contract, data, tracking, training, validation
from mlops.config import Settings
from mlops.errors import MlopsError, ValidationFailed
from mlops.training import DataSplit

__all__ = ["TrainingOutcome", "training_flow"]


@dataclass(frozen=True)
class TrainingOutcome:
    """What one training run produced and what the gate decided."""

    registered: tracking.RegisteredVersion
    decision: tracking.PromotionDecision
    validation_report: Path
    data_fingerprint: str
    flow_run_id: str | None


@task(cache_policy=NO_CACHE)
def validate_data(frame, settings: Settings, data_path: Path) -> tuple[validation.ValidationResult, Path]:
    """The gate: the data contract (``data.contract``) in training scope; warnings are logged."""
    stamp = runtime.flow_run.id or "local"
    result, report = contract.check_with_report(
        frame, settings.data.contract, scope="training", source=str(data_path),
        report_path=settings.reports_dir / f"validation-{stamp}.html",
    )
    for warning in result.warnings:
        get_run_logger().warning("Data contract warning: %s", warning.describe())
    if result.success:
        get_run_logger().info("Validation passed: %s rows, %s expectations", result.rows, result.evaluated)
    return result, report


@task(cache_policy=NO_CACHE)
def split_data(frame, settings: Settings, labeled_from: int | None = None, labeled_weight: float = 1.0) -> DataSplit:
    """The contract's features in their served types, split by row hash (stratified for classes).

    A retrain's rows from position ``labeled_from`` on (the labeled production rows) weigh
    ``labeled_weight`` in the fit.
    """
    terms = contract.load_contract(settings.data.contract)
    unlabeled = int(frame[settings.data.target].isna().sum())
    if unlabeled:
        get_run_logger().warning("%s rows have no '%s' value: not used for training", unlabeled, settings.data.target)
    excluded = contract.excluded_columns_note(terms)
    if excluded:
        get_run_logger().info(excluded)
    split = training.split_for_contract(frame, terms, settings.model)
    if labeled_from is None or labeled_weight == 1.0:
        return split
    import numpy as np
    import pandas as pd

    weights = pd.Series(np.where(np.arange(len(frame)) >= labeled_from, labeled_weight, 1.0), index=frame.index)
    get_run_logger().info("The %d labeled rows weigh %g each in the fit", len(frame) - labeled_from, labeled_weight)
    return split.weighted(weights)


@task(cache_policy=NO_CACHE)
def train(split: DataSplit, settings: Settings, candidates: list[training.Candidate] | None) -> training.SearchResult:
    columns = training.contract_columns(contract.load_contract(settings.data.contract))
    result = training.search_candidates(split, settings.model, candidates, columns)
    logger = get_run_logger()
    best = result.best
    logger.info("%s trials; best %s: %s", len(result.trials), best.params["estimator"], best.metrics)
    return result


@task(cache_policy=NO_CACHE)
def register(result: training.SearchResult, split, frame, settings: Settings, data_path: Path, tags: dict[str, str], report: Path):
    manifest = training.split_manifest(frame, split, settings.model.seed)
    return tracking.log_and_register(
        result.best, split, frame, settings, data_path=data_path, tags=tags, trials=result.trials, manifest=manifest,
        reports=[report],
    )


@task(cache_policy=NO_CACHE)
def load_recent(recent_path: Path, settings: Settings) -> tracking.EvaluationSet:
    """The recent evaluation set (labeled production rows never trained on), as the model takes them."""
    terms = contract.load_contract(settings.data.contract)
    typed = training.feature_frame(data.load_table(recent_path), terms, keep_target=True)
    typed = typed[typed[terms.target].notna()]
    get_run_logger().info("Recent evaluation set %s: %d rows", recent_path, len(typed))
    return tracking.EvaluationSet(typed.drop(columns=[terms.target]), typed[terms.target])


@task(cache_policy=NO_CACHE)
def gate(
    registered: tracking.RegisteredVersion,
    split: DataSplit,
    settings: Settings,
    recent: tracking.EvaluationSet | None = None,
    promote: bool = True,
) -> tracking.PromotionDecision:
    decision = tracking.gate_challenger(registered, split, settings, recent, promote=promote)
    verdict = "promoted to champion" if decision.promoted else "waits for approval" if decision.waiting else "kept as challenger"
    get_run_logger().info("Version %s %s: %s", registered.version, verdict, decision.reason)
    return decision


@task(cache_policy=NO_CACHE)
def write_model_card(registered, decision, settings: Settings, facts: dict[str, str]) -> None:
    tracking.log_model_card(registered, tracking.model_card(registered, decision, settings, facts))


@flow(name="training", validate_parameters=False)
def training_flow(
    settings: Settings,
    data_path: Path | None = None,
    trigger: str = "manual",
    candidates: list[training.Candidate] | None = None,
    recent_path: Path | None = None,
    lineage: dict[str, str] | None = None,
    promote: bool = True,
    labeled_from: int | None = None,
    labeled_weight: float = 1.0,
) -> TrainingOutcome:
    """Validate the data, search the candidates, register the best as a new version, run the gate.

    ``candidates`` (Python-declared estimators and spaces) replace ``model.candidates``.
    One MLflow parent run per flow run, one nested child run per trial. A retrain passes
    ``recent_path``, the recent evaluation set the gate judges on (:func:`mlops.tracking.decide_promotion`),
    ``lineage`` (recorded as ``mlops.lineage.*`` tags on the run and the version) and
    ``promote=False`` to leave a passing challenger waiting for ``mlops promote``, and
    ``labeled_from``/``labeled_weight``: the rows from that position on weigh that much.
    """
    data_path = Path(data_path or settings.data.training)
    try:  # an unreadable file or contract is the user's to fix: a Failed state, no traceback
        frame = data.load_table(data_path)
        training.check_contract_fits(contract.load_contract(settings.data.contract), settings)
    except MlopsError as exc:
        return Failed(message=str(exc), data=exc)
    result, report = validate_data(frame, settings, data_path)
    if not result.success:
        message = f"{result.summary()}\nHTML report: {report}"
        return Failed(message=message, data=ValidationFailed(message, result))
    try:  # too few rows of a class, an all-null feature, an estimator for the wrong task: before any task
        training.check_trainable(frame, contract.load_contract(settings.data.contract), settings.model, candidates)
    except MlopsError as exc:
        return Failed(message=str(exc), data=exc)
    split = split_data(frame, settings, labeled_from, labeled_weight)
    searched = train(split, settings, candidates)
    fingerprint = data.data_fingerprint(frame)
    flow_run_id = str(runtime.flow_run.id) if runtime.flow_run.id else None
    tags = {"trigger": trigger, "data_fingerprint": fingerprint, "flow_run_id": flow_run_id or ""}
    tags |= {f"lineage.{key}": value for key, value in (lineage or {}).items()}
    registered = register(searched, split, frame, settings, data_path, tags, report)
    if lineage:
        tracking.tag_version(registered, {f"lineage.{key}": value for key, value in lineage.items()})
    recent = load_recent(Path(recent_path), settings) if recent_path is not None else None
    decision = gate(registered, split, settings, recent, promote)
    sizes = f"{len(split.x_train)} train / {len(split.x_holdout)} holdout (row hash, seed {settings.model.seed})"
    facts = {"file": str(data_path), "rows": str(len(frame)), "fingerprint": fingerprint, "trigger": trigger}
    facts["split"] = sizes
    write_model_card(registered, decision, settings, facts)
    return TrainingOutcome(registered, decision, report, fingerprint, flow_run_id)
