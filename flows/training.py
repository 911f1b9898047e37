"""The training flow: validate → split → search (a task per candidate) → pick the best → register → gate → model card.

A project file (``project.training`` in ``mlops.yaml``): edit it, or compose your own
flow from :mod:`mlops.tasks` the same way.

Validation is the first task: on a failing batch the flow run ends Failed, with
the report as its message, before anything is trained, registered or promoted;
calling the flow raises :class:`~mlops.errors.ValidationFailed`. The gate is an
expected outcome, so it is returned as a state rather than raised inside a task
(which would log a traceback for a data problem).

The champion gate's read → compare → move runs under
:func:`mlops.tracking.registry_lock`, so concurrent training flows are gated one
after the other and leave exactly one consistent champion.

A tracking server that stops answering ends the run with
:class:`~mlops.errors.ServiceUnavailable` (exit 4, after MLflow's bounded retries): the
version it registered stays ``mlops.status=incomplete``, outside gates and aliases, until
``mlops doctor`` or the next training cleans it (:func:`mlops.tracking.clean_leftovers`).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, runtime
from prefect.states import Failed

from mlops import contract, data, tasks, tracking, training
from mlops.config import Settings
from mlops.environment import tracking_faults
from mlops.errors import MlopsError
from mlops.outcomes import TrainingOutcome

__all__ = ["TrainingOutcome", "training_flow"]


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
    result, report = tasks.validate_data(frame, settings, data_path)
    if not result.success:
        return tasks.validation_failed(result, report)
    try:  # too few rows of a class, an all-null feature, an estimator for the wrong task: before any task
        training.check_trainable(frame, contract.load_contract(settings.data.contract), settings.model, candidates)
    except MlopsError as exc:
        return Failed(message=str(exc), data=exc)
    split = tasks.split_data(frame, settings, labeled_from, labeled_weight)
    # One task run per candidate, side by side on the task runner (orchestration.task_runner: threads or dask).
    columns = tasks.candidate_columns(settings)
    searches = [tasks.search_candidate.submit(candidate, split, settings, columns)
                for candidate in training.candidates_to_search(settings.model, candidates)]  # fmt: skip
    searched = tasks.pick_best([search.result() for search in searches], split, settings)
    fingerprint = data.data_fingerprint(frame)
    flow_run_id = str(runtime.flow_run.id) if runtime.flow_run.id else None
    tags = {"trigger": trigger, "data_fingerprint": fingerprint, "flow_run_id": flow_run_id or ""}
    tags |= {f"lineage.{key}": value for key, value in (lineage or {}).items()}
    registered = tasks.register_model(searched, split, frame, settings, data_path, tags, report)
    if lineage:
        with tracking_faults(settings):  # the tracking server stopped answering: exit 4, no traceback
            tracking.tag_version(registered, {f"lineage.{key}": value for key, value in lineage.items()})
    recent = tasks.load_recent(Path(recent_path), settings) if recent_path is not None else None
    decision = tasks.gate(registered, split, settings, recent, promote)
    sizes = f"{len(split.x_train)} train / {len(split.x_holdout)} holdout (row hash, seed {settings.model.seed})"
    facts = {"file": str(data_path), "rows": str(len(frame)), "fingerprint": fingerprint, "trigger": trigger}
    facts["split"] = sizes
    tasks.write_model_card(registered, decision, settings, facts)
    outcome = TrainingOutcome(registered, decision, report, fingerprint, flow_run_id)
    tasks.publish_training(outcome, settings)
    return outcome
