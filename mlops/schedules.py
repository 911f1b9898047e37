"""Scheduled retraining (cron) and monitoring (interval) as Prefect deployments.

``mlops schedule`` serves both from one long-running process with
``prefect.serve`` (no work pool needed: the embedded default). Each scheduled run
is a small entry flow that loads the settings in the serving process and runs
the real flow as a child flow run, so no setting, and no secret in one, is
stored in the deployment's parameters.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import cast

from prefect import Flow, flow, tags
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import ConcurrencyLimitConfig, StateType
from prefect.client.schemas.sorting import FlowRunSort

from mlops import audit
from mlops.alerts import send_alert
from mlops.config import Settings
from mlops.prediction_log import read_prediction_log
from mlops.project import load_flow, load_settings  # binds MLflow, Prefect and BentoML: a worker's run has nothing else

__all__ = [
    "TRAINING_DEPLOYMENT", "MONITORING_DEPLOYMENT", "deploy_to_work_pool", "deployments", "record_schedule", "scheduled_monitoring",
    "scheduled_training",
]

TRAINING_DEPLOYMENT = "scheduled-training"
MONITORING_DEPLOYMENT = "scheduled-monitoring"


@flow(name="scheduled-training")
def scheduled_training(
    config: str | None = None, state_dir: str | None = None, project: str | None = None, environment: str | None = None
) -> str:
    """Retrain on the configured training data with the project's training flow; the gate decides as always."""
    settings = load_settings(config, state_dir, project, environment)
    with _alert_on_failure(settings, "scheduled training"), tags("trigger:schedule"):
        outcome = load_flow(settings, "training")(settings, trigger="schedule")
    return f"v{outcome.registered.version}: {outcome.decision.reason}"


@flow(name="scheduled-monitoring")
def scheduled_monitoring(
    config: str | None = None, state_dir: str | None = None, project: str | None = None, environment: str | None = None
) -> str:
    """Check the logged predictions for drift with the project's monitoring flow; the policy decides whether to retrain."""
    settings = load_settings(config, state_dir, project, environment)
    if read_prediction_log(settings.predictions_dir, last=1).empty:
        return "skipped: no predictions logged yet"
    with _alert_on_failure(settings, "scheduled monitoring"):
        return load_flow(settings, "monitoring")(settings).drift.summary()


@contextmanager
def _alert_on_failure(settings: Settings, what: str) -> Iterator[None]:
    """Nobody watches a scheduled run: a failure is sent as a ``flow_failed`` alert, then raised."""
    try:
        yield
    except Exception as exc:
        send_alert(settings.alerts, "flow_failed", f"{what} failed: {str(exc).splitlines()[0][:300]}")
        raise


def _parameters(settings: Settings, config: str | None) -> dict[str, str | None]:
    """Where the scheduled flow finds its settings (file, state folder, project, profile): never the settings themselves."""
    return {
        "config": config, "state_dir": str(settings.state_dir), "project": str(settings.project.root),
        "environment": settings.environment,
    }  # fmt: skip


def deploy_to_work_pool(settings: Settings, config: str | None) -> list[str]:
    """Register both deployments on ``schedules.work_pool`` of the configured Prefect server; its workers run them.

    The code is this installed ``mlops`` package (``flow.from_source`` on its folder), so a
    process worker on a machine with the project and the framework installed runs it as is.
    """
    pool = settings.schedules.work_pool
    source = Path(__file__).resolve().parents[1]
    interval = timedelta(minutes=settings.schedules.monitoring_interval_minutes)
    record_schedule(settings)
    parameters = _parameters(settings, config)
    # from_source is sync here (Prefect's sync/async dispatch): a Flow, not a coroutine
    training = cast(Flow, flow.from_source(source=source, entrypoint="mlops/schedules.py:scheduled_training"))
    monitoring = cast(Flow, flow.from_source(source=source, entrypoint="mlops/schedules.py:scheduled_monitoring"))
    training.deploy(
        name=TRAINING_DEPLOYMENT, work_pool_name=pool, cron=settings.schedules.training_cron, parameters=parameters,
        tags=["mlops"], build=False, push=False, print_next_steps=False,
    )  # fmt: skip
    monitoring.deploy(
        name=MONITORING_DEPLOYMENT, work_pool_name=pool, interval=interval, parameters=parameters, tags=["mlops"],
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy="CANCEL_NEW"), build=False, push=False,
        print_next_steps=False,
    )  # fmt: skip
    return [f"{scheduled_training.name}/{TRAINING_DEPLOYMENT}", f"{scheduled_monitoring.name}/{MONITORING_DEPLOYMENT}"]


def deployments(settings: Settings, config: str | None) -> list:
    """The two deployments, parameterised by where to find the settings, not by the settings."""
    parameters = _parameters(settings, config)
    interval = timedelta(minutes=settings.schedules.monitoring_interval_minutes)
    record_schedule(settings)
    return [
        scheduled_training.to_deployment(
            name=TRAINING_DEPLOYMENT, cron=settings.schedules.training_cron, parameters=parameters, tags=["mlops"]
        ),
        scheduled_monitoring.to_deployment(
            name=MONITORING_DEPLOYMENT,
            interval=interval,
            parameters=parameters,
            tags=["mlops"],
            # A check still running when the next is due: skip the new one rather than pile up.
            concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy="CANCEL_NEW"),
        ),
    ]


def record_schedule(settings: Settings) -> dict | None:
    """Audit the schedules when they are new or differ from the last audited ones; None when unchanged."""
    schedule = {
        "training_cron": settings.schedules.training_cron,
        "monitoring_interval_minutes": settings.schedules.monitoring_interval_minutes,
    }
    last = audit.read_audit(settings, limit=1, kinds=("schedule",))
    before = last[0].get("schedule") if last else None
    if before == schedule:
        return None
    described = _described(schedule)
    reason = f"created: {described}" if before is None else f"changed to {described} (was {_described(before)})"
    return audit.record(settings, "schedule", reason=reason, schedule=schedule, previous=before)


def _described(schedule: dict) -> str:
    return (
        f"training '{schedule.get('training_cron')}' (cron, UTC), "
        f"monitoring every {schedule.get('monitoring_interval_minutes')} min"
    )


def list_schedules() -> list[dict[str, str]]:
    """Each scheduled deployment with its schedule and next run, read from the Prefect API."""
    names = [TRAINING_DEPLOYMENT, MONITORING_DEPLOYMENT]
    scheduled = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])))
    rows = []
    with get_client(sync_client=True) as client:
        for deployment in client.read_deployments(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=names))):
            upcoming = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id={"any_": [deployment.id]}),
                flow_run_filter=scheduled,
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                limit=1,
            )
            schedules = ", ".join(_describe(item.schedule) for item in deployment.schedules) or "none"
            expected = upcoming[0].expected_start_time if upcoming else None
            next_run = expected.isoformat(timespec="seconds") if expected else "–"
            rows.append({"deployment": deployment.name, "schedule": schedules, "paused": str(deployment.paused), "next_run": next_run})
    return rows


def _describe(schedule) -> str:
    if getattr(schedule, "cron", None):
        return f"cron {schedule.cron}"
    if getattr(schedule, "interval", None):
        return f"every {schedule.interval}"
    return str(schedule)
