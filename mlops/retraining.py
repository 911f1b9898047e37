"""When drift or a quality drop may start a retrain, and when it may not.

The decision is a pure function of what monitoring measured, what the policy
allows and what already happened (the retrain history, read from Prefect, the
orchestrator that runs the retrains), so it is easy to test and to explain::

    decision = decide_retrain(drift_share=0.6, quality=None, window_rows=500,
                              history=retrain_history(), policy=settings.monitoring)
    if decision.retrain: ...
    else: print(decision.explain())

A retrain needs a trigger (drift share at or above the threshold, or quality
past its floor) and must pass every brake: enough rows in the window (and, for a
quality trigger alone, enough labeled rows), no retrain already running or queued,
the cooldown since the last one elapsed, and fewer than ``max_retrains_per_day``
started in the last 24 hours. Retrain flow runs carry the tag :data:`RETRAIN_TAG`,
which is how the history finds them.

The quality floor goes the metric's way (:func:`mlops.metrics.higher_is_better`):
accuracy, F1 or r2 below it, rmse or mae above it. With no ``quality_metric`` the
task's default is watched (:func:`watched_metric`: accuracy, or rmse for regression).
"""

from __future__ import annotations

import importlib
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.sorting import FlowRunSort

from mlops import audit, tracking
from mlops.contract import load_contract
from mlops.data import load_table
from mlops.errors import DataError
from mlops.metrics import higher_is_better

if TYPE_CHECKING:
    from mlops.config import MonitoringConfig, Settings
    from mlops.contract import ColumnContract, Contract

__all__ = [
    "NO_LABELS",
    "RETRAIN_TAG",
    "RetrainDecision",
    "RetrainHistory",
    "RetrainingData",
    "combine_with_labeled",
    "split_recent",
    "decide_retrain",
    "record_trigger",
    "retrain_data",
    "retrain_history",
    "watched_metric",
]

logger = logging.getLogger(__name__)

RETRAIN_TAG = "retrain"
NO_LABELS = "drift detected, no new labeled rows: a retrain would reproduce the champion"
_ACTIVE_STATES = ("SCHEDULED", "PENDING", "RUNNING", "PAUSED")


@dataclass(frozen=True)
class RetrainHistory:
    """Retrains already started: the newest start, the count in 24 h, and those still active."""

    last_started: datetime | None = None
    started_last_day: int = 0
    active: int = 0


@dataclass(frozen=True)
class RetrainDecision:
    """Whether to retrain; the triggers that fired and the brake that held, if any."""

    retrain: bool
    triggers: tuple[str, ...]
    blocked_by: str | None = None

    def explain(self) -> str:
        if self.retrain:
            return "retrain: " + "; ".join(self.triggers)
        if not self.triggers:
            return "no retrain: nothing triggered"
        return f"no retrain: {self.blocked_by} (triggered by {'; '.join(self.triggers)})"


def watched_metric(policy: MonitoringConfig, task: str = "classification") -> str:
    """The quality metric the policy watches: ``monitoring.quality_metric``, else the task's default."""
    return policy.quality_metric or ("rmse" if task == "regression" else "accuracy")


def decide_retrain(
    *,
    drift_share: float,
    quality: float | None,
    window_rows: int,
    history: RetrainHistory,
    policy: MonitoringConfig,
    now: datetime | None = None,
    task: str = "classification",
    labeled_rows: int | None = None,
) -> RetrainDecision:
    """Apply the policy's triggers, then its brakes, in that order.

    ``quality`` is the value of :func:`watched_metric` on the labeled rows (``labeled_rows``
    of them, when known); ``task`` gives the metric when the policy names none. Drift with
    ``labeled_rows == 0`` does not retrain (:data:`NO_LABELS`) unless
    ``monitoring.retrain_without_labels`` is set or the data comes from the user's ``module:function``.
    """
    metric = watched_metric(policy, task)
    triggers = _triggers(drift_share, quality, policy, metric)
    if not triggers:
        return RetrainDecision(False, ())
    if not policy.retrain_on_drift:
        return RetrainDecision(False, triggers, "automatic retraining is off (monitoring.retrain_on_drift)")
    drifted = drift_share >= policy.drift_share_threshold
    if not drifted and labeled_rows is not None and labeled_rows < policy.min_rows:
        brake = f"{metric} measured on {labeled_rows} labeled rows, fewer than monitoring.min_rows={policy.min_rows}"
        return RetrainDecision(False, triggers, brake)
    if drifted and labeled_rows == 0 and not policy.retrain_without_labels and ":" not in policy.retrain_data:
        return RetrainDecision(False, triggers, NO_LABELS)
    held = _brake(window_rows, history, policy, now or datetime.now(UTC))
    return RetrainDecision(held is None, triggers, held)


def _triggers(drift_share: float, quality: float | None, policy: MonitoringConfig, metric: str) -> tuple[str, ...]:
    fired = []
    if drift_share >= policy.drift_share_threshold:
        fired.append(f"drift share {drift_share:.2f} ≥ {policy.drift_share_threshold:.2f}")
    floor = policy.quality_floor
    if quality is not None and floor is not None and _worse(quality, floor, metric):
        worse = "lower" if higher_is_better(metric) else "higher"
        fired.append(f"{metric} {quality:.4f} past its floor {floor:.4f} ({worse} is worse)")
    return tuple(fired)


def _worse(value: float, floor: float, metric: str) -> bool:
    # Error metrics go the other way: their "floor" is a ceiling.

    return value < floor if higher_is_better(metric) else value > floor


def _brake(window_rows: int, history: RetrainHistory, policy: MonitoringConfig, now: datetime) -> str | None:
    if window_rows < policy.min_rows:
        return f"window has {window_rows} rows, fewer than monitoring.min_rows={policy.min_rows}"
    if history.active:
        return f"a retrain is already running or queued ({history.active})"
    if history.last_started is not None:
        ready_at = history.last_started + timedelta(minutes=policy.cooldown_minutes)
        if now < ready_at:
            return f"cooldown: last retrain started {history.last_started:%H:%M:%S} UTC, next allowed {ready_at:%H:%M:%S}"
    if history.started_last_day >= policy.max_retrains_per_day:
        return f"{history.started_last_day} retrains in 24 h reached monitoring.max_retrains_per_day"
    return None


def record_trigger(settings: Settings, decision: RetrainDecision, monitoring_run_id: str | None = None) -> dict:
    """Audit a retrain about to start: why (its triggers), against which champion, from which monitoring run."""
    champion = tracking.champion_version(settings.model.name)
    return audit.record(
        settings, "retrain", version=champion, run_id=monitoring_run_id or None, reason=decision.explain(),
        triggers=list(decision.triggers),
    )


def retrain_history(now: datetime | None = None, exclude_flow_run: str | None = None) -> RetrainHistory:
    """Read retrain flow runs (tag :data:`RETRAIN_TAG`) from the Prefect API in use.

    ``exclude_flow_run`` leaves out the caller's own flow run.
    """
    now = now or datetime.now(UTC)
    flow_filter = FlowRunFilter(tags=FlowRunFilterTags(all_=[RETRAIN_TAG]))
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=flow_filter, sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=200)
    runs = [run for run in runs if str(run.id) != exclude_flow_run]
    starts = [_started(run) for run in runs]
    active = sum(1 for run in runs if run.state_type is not None and run.state_type.value in _ACTIVE_STATES)
    return RetrainHistory(
        last_started=max(starts, default=None),
        started_last_day=sum(1 for start in starts if now - start < timedelta(days=1)),
        active=active,
    )


def _started(run) -> datetime:
    stamp = run.start_time or run.expected_start_time or run.created
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def split_recent(
    labeled: pd.DataFrame, share: float, rows: int | None = None, train_share: float = 1.0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The labeled window rows to train on, and the newest ``share`` held out as the recent evaluation set.

    Rows are ordered by the time they were logged (``timestamp``); the newest
    ``round(share × n)`` (at least one when ``share > 0`` and there are two rows or more)
    are the recent set, never trained on. Of the rest, only the newest ``train_share``
    (at least one row), and of those the newest ``rows`` (None: all), are trained on.
    """
    ordered = labeled.sort_values("timestamp", kind="stable") if "timestamp" in labeled else labeled
    ordered = ordered.reset_index(drop=True)
    held = min(max(round(share * len(ordered)), 1 if share > 0 and len(ordered) > 1 else 0), len(ordered))
    train, recent = ordered.iloc[: len(ordered) - held], ordered.iloc[len(ordered) - held:]
    if train_share < 1.0 and len(train):
        train = train.iloc[-max(1, round(train_share * len(train))):]
    if rows is not None:
        train = train.iloc[-rows:]
    return train.reset_index(drop=True), recent.reset_index(drop=True)


@dataclass(frozen=True)
class RetrainingData:
    """The training data plus labeled window rows, and how many of those rows the contract refused."""

    frame: pd.DataFrame = field(compare=False, repr=False)
    added: int
    refused: int = 0


def combine_with_labeled(reference: pd.DataFrame, labeled: pd.DataFrame, contract: Contract) -> RetrainingData:
    """The training data plus the labeled window rows, with exactly the training data's columns.

    The result goes through the training flow's contract gate (every column, its type,
    range and null rate), so the logged rows are made to pass it: a row with a value
    the contract blocks (out of range, an unknown category where categories block, a
    null where none is allowed) is left out and counted; each column is the logged
    input when there is one, else nulls while the contract tolerates them, else (for
    columns that are not model inputs) an identifier made from the request and record,
    or the time the prediction was logged. A column none of these can fill is a
    :class:`~mlops.errors.DataError` naming it and the fix. The target takes the labels
    (``labeled["label"]``, already in the target's type).
    """
    specs = {column.name: column for column in contract.columns}
    rows = pd.DataFrame({name: _logged_values(labeled, name, contract.target) for name in reference.columns})
    refused = _refused(rows, [specs[name] for name in rows.columns if name in specs and specs[name].role == "feature"])
    rows, kept = rows[~refused].reset_index(drop=True), labeled[~refused.to_numpy()].reset_index(drop=True)
    for name in rows.columns:
        if name in specs:
            rows[name] = _filled(rows[name], reference[name], specs[name], kept, contract.target)
    combined = pd.concat([reference, rows], ignore_index=True)
    for name, spec in specs.items():  # back to whole numbers, which nulls or object columns turned into floats
        if spec.type == "int" and name in combined and _integral(combined[name]):
            combined[name] = pd.to_numeric(combined[name]).astype("Int64")
    return RetrainingData(combined, added=len(rows), refused=int(refused.sum()))


def _logged_values(labeled: pd.DataFrame, name: str, target: str) -> list:
    """A training column's values in the logged rows: the label for the target, None where not logged."""
    source = "label" if name == target else name
    return labeled[source].tolist() if source in labeled.columns else [None] * len(labeled)


def _refused(rows: pd.DataFrame, features: list[ColumnContract]) -> pd.Series:
    """Rows with a feature value the contract blocks: the gate would refuse the whole file for them."""
    refused = pd.Series(False, index=rows.index)
    for spec in features:
        values = rows[spec.name]
        present = values.notna()
        if not spec.nullable and spec.severity_of("nullable") == "block":
            refused |= ~present
        if spec.type in ("int", "float") and spec.severity_of("range") == "block":
            numbers = pd.to_numeric(values, errors="coerce").astype("float64")
            outside = ~np.isfinite(numbers)
            if spec.min is not None:
                outside |= numbers < spec.min
            if spec.max is not None:
                outside |= numbers > spec.max
            refused |= present & outside
        if spec.categories is not None and spec.severity_of("categories") == "block":
            refused |= present & ~values.isin(spec.categories)
    return refused


def _filled(values: pd.Series, reference: pd.Series, spec: ColumnContract, labeled: pd.DataFrame, target: str) -> list:
    """A column's values for the logged rows, its nulls filled where the contract refuses them."""
    missing = values.isna().to_numpy()
    if not missing.any() or _nulls_tolerated(spec, reference, int(missing.sum()), len(values)):
        return values.tolist()
    made = _made_up(spec, reference, labeled) if spec.role in ("id", "time") else None
    if made is None:
        role = "the target" if spec.name == target else f"a {spec.role} column"
        raise DataError(
            f"The labeled rows cannot join the retraining data: {int(missing.sum())} of them have no value for "
            f"'{spec.name}' ({role}, type {spec.type}), which the data contract does not allow to be null. "
            f"Send '{spec.name}' with each request, allow nulls for it in the contract (nullable: true), "
            "or set monitoring.retrain_data: reference."
        )
    return [new if gap else old for old, new, gap in zip(values.tolist(), made, missing)]


def _nulls_tolerated(spec: ColumnContract, reference: pd.Series, new_nulls: int, new_rows: int) -> bool:
    """Whether the combined column's null share stays within the contract (GX's ``mostly``)."""
    if not spec.nullable:
        return False
    if spec.max_null_rate is None:
        return True
    total = len(reference) + new_rows
    present = total - int(reference.isna().sum()) - new_nulls
    return present / total >= round(1.0 - spec.max_null_rate, 6)


def _made_up(spec: ColumnContract, reference: pd.Series, labeled: pd.DataFrame) -> list | None:
    """Values a column that is not a model input can take for logged rows: provenance, never a guess."""
    rows = len(labeled)
    if spec.role == "time" and spec.type == "str" and "timestamp" in labeled.columns:
        stamps = labeled["timestamp"].astype(str)
        dates_only = reference.dropna().astype(str).str.len().eq(10).all()
        return (stamps.str[:10] if dates_only else stamps).tolist()
    if spec.role != "id":
        return None
    if spec.type == "str":
        if {"request_id", "record"} <= set(labeled.columns):
            return (labeled["request_id"].astype(str) + "#" + labeled["record"].astype(str)).tolist()
        return [f"logged-{index}" for index in range(rows)]
    if spec.type in ("int", "float"):
        numbers = pd.to_numeric(reference, errors="coerce")
        start = int(numbers.max()) + 1 if numbers.notna().any() else 0  # after every training id
        start = max(start, math.ceil(spec.min)) if spec.min is not None else start
        if spec.max is not None and start + rows - 1 > spec.max:
            return None
        return list(range(start, start + rows))
    return None


def _integral(values: pd.Series) -> bool:
    numbers = pd.to_numeric(values, errors="coerce")
    present = numbers[values.notna()]
    return bool(present.notna().all() and (present % 1 == 0).all())


def retrain_data(
    settings: Settings, labeled: pd.DataFrame, reference_fingerprint: str, labels_source: str
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
        module, function = choice.split(":")
        return Path(getattr(importlib.import_module(module), function)(settings, labeled)), None, lineage
    if choice == "reference" or labeled.empty:
        return None, None, lineage
    reference = load_table(settings.data.training)
    terms = load_contract(settings.data.contract)
    train_rows, recent_rows = split_recent(
        labeled, policy.recent_eval_share, policy.labeled_rows, policy.labeled_share
    )
    try:
        combined = combine_with_labeled(reference, train_rows, terms)
        recent = combine_with_labeled(reference.iloc[0:0], recent_rows, terms) if len(recent_rows) else None
    except DataError as exc:
        logger.warning("Retraining on %s alone: %s", settings.data.training, exc)
        return None, None, lineage
    if combined.refused:
        logger.warning("%d labeled rows left out of the retraining data: values the data contract blocks "
                       "(a range, a category, a null)", combined.refused)
    lineage |= {"labeled_train_rows": str(combined.added), "recent_eval_rows": str(recent.added if recent else 0)}
    if combined.added:
        lineage |= {"reference_rows": str(len(reference)), "labeled_weight": f"{policy.labeled_weight:g}"}
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
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
