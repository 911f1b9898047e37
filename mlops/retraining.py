"""When drift or a quality drop may start a retrain, and when it may not.

The decision is a pure function of what monitoring measured, what the policy
allows and what already happened (the retrain history, read from Prefect, the
orchestrator that runs the retrains), so it is easy to test and to explain::

    decision = decide_retrain(drift_share=0.6, quality=None, window_rows=500,
                              history=retrain_history(), policy=settings.monitoring)
    if decision.retrain: ...
    else: print(decision.explain())

A retrain needs a trigger (drift share at or above the threshold, or quality
below its floor) and must pass every brake: enough rows in the window, no retrain
already running or queued, the cooldown since the last one elapsed, and fewer
than ``max_retrains_per_day`` started in the last 24 hours. Retrain flow runs
carry the tag :data:`RETRAIN_TAG`, which is how the history finds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlops.config import MonitoringConfig

__all__ = ["RETRAIN_TAG", "RetrainDecision", "RetrainHistory", "decide_retrain", "retrain_history"]

RETRAIN_TAG = "retrain"
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


def decide_retrain(
    *,
    drift_share: float,
    quality: float | None,
    window_rows: int,
    history: RetrainHistory,
    policy: MonitoringConfig,
    now: datetime | None = None,
) -> RetrainDecision:
    """Apply the policy's triggers, then its brakes, in that order."""
    triggers = _triggers(drift_share, quality, policy)
    if not triggers:
        return RetrainDecision(False, ())
    if not policy.retrain_on_drift:
        return RetrainDecision(False, triggers, "automatic retraining is off (monitoring.retrain_on_drift)")
    brake = _brake(window_rows, history, policy, now or datetime.now(timezone.utc))
    return RetrainDecision(brake is None, triggers, brake)


def _triggers(drift_share: float, quality: float | None, policy: MonitoringConfig) -> tuple[str, ...]:
    fired = []
    if drift_share >= policy.drift_share_threshold:
        fired.append(f"drift share {drift_share:.2f} ≥ {policy.drift_share_threshold:.2f}")
    floor = policy.quality_floor
    if quality is not None and floor is not None and _worse(quality, floor, policy.quality_metric):
        fired.append(f"{policy.quality_metric} {quality:.4f} past its floor {floor:.4f}")
    return tuple(fired)


def _worse(value: float, floor: float, metric: str) -> bool:
    # Error metrics go the other way: their "floor" is a ceiling.
    return value > floor if metric in {"rmse", "mae"} else value < floor


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


def retrain_history(now: datetime | None = None, exclude_flow_run: str | None = None) -> RetrainHistory:
    """Read retrain flow runs (tag :data:`RETRAIN_TAG`) from the Prefect API in use.

    ``exclude_flow_run`` leaves out the caller's own flow run.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort

    now = now or datetime.now(timezone.utc)
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
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)
