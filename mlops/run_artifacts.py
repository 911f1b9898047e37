"""What a flow run shows on its Artifacts tab in the Prefect UI: its MLflow run, version, reports, decisions.

Why: the Prefect UI has the task graph and the logs, but a user also asks "which MLflow run,
which model version, which report?": each flow run publishes a short summary (one
artifact key per flow, so the Artifacts page lists every run's under one name) and a link
to its MLflow run. Nothing here holds a secret: links carry no credentials.
Outside a flow run (``task.fn`` called directly) nothing is published.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import quote, urlsplit

import mlflow
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.context import FlowRunContext, TaskRunContext

from mlops.config import Settings
from mlops.environment import redact
from mlops.outcomes import MonitoringOutcome, ScoringOutcome, TrainingOutcome
from mlops.tracking import MODEL_TRAINING_VIEW

__all__ = ["mlflow_base_url", "mlflow_run_url", "publish_monitoring", "publish_scoring", "publish_training"]

logger = logging.getLogger(__name__)

# The address `mlops ui` serves the MLflow UI on by default (its --port).
LOCAL_MLFLOW_UI = "http://127.0.0.1:5000"


def mlflow_base_url(settings: Settings) -> str:
    """The MLflow UI's address: the tracking server's (without credentials), else the one ``mlops ui`` serves."""
    uri = settings.mlflow_tracking_uri
    if settings.tracking_uri is None or not uri.startswith(("http://", "https://")):
        return LOCAL_MLFLOW_UI
    parts = urlsplit(uri)
    host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    return redact(f"{parts.scheme}://{host}{parts.path}".rstrip("/"))


def mlflow_run_url(settings: Settings, run_id: str) -> str:
    """The run's page in the MLflow UI, e.g. ``http://127.0.0.1:5000/#/experiments/1/runs/<id>``."""
    experiment_id = mlflow.get_run(run_id).info.experiment_id
    return f"{mlflow_base_url(settings)}/#/experiments/{experiment_id}/runs/{run_id}?{MODEL_TRAINING_VIEW}"


def publish_training(outcome: TrainingOutcome, settings: Settings) -> None:
    """The training run's MLflow run (a link), the version it registered and the gate's decision."""
    if not _in_run():
        return
    registered, decision = outcome.registered, outcome.decision
    run_url = _run_url(settings, registered.run_id)
    version_url = f"{mlflow_base_url(settings)}/#/models/{quote(registered.name)}/versions/{registered.version}"
    verdict = "promoted to champion" if decision.promoted else "waits for approval" if decision.waiting else "kept as challenger"
    rows = {
        "MLflow run": f"[{registered.run_id}]({run_url})" if run_url else registered.run_id,
        "Model version": f"[{registered.name} v{registered.version}]({version_url})",
        "Gate decision": verdict,
        "Reason": decision.reason,
        "Metrics": ", ".join(f"{name} {value:.4g}" for name, value in registered.metrics.items()),
        "Validation report": f"`{outcome.validation_report}`",
        "Data fingerprint": f"`{outcome.data_fingerprint}`",
    }
    _publish("training", "Training", rows, run_url, f"MLflow run of {registered.name} v{registered.version}")


def publish_monitoring(outcome: MonitoringOutcome, settings: Settings) -> None:
    """The check's result (drift, quality), the retrain decision, the reports and its MLflow run."""
    if not _in_run():
        return
    drift = outcome.drift
    rows = {
        "Drift": f"{'detected' if drift.drift_detected else 'none'}: {len(drift.drifted_columns)} of {len(drift.columns)} columns "
                 f"(share {drift.drift_share:.2f}, threshold {drift.threshold:.2f})",
        "Drifted columns": ", ".join(drift.drifted_columns) or "none",
        "Refused at serving": outcome.refused.summary() if outcome.refused is not None else "not counted (a given file)",
        "Quality": ", ".join(f"{name} {value:.4g}" for name, value in outcome.quality.items()) or "not measured (no labels)",
        "Retrain decision": outcome.decision.explain() if outcome.decision else "not decided",
        "Drift report": f"`{drift.report_path}`" if drift.report_path else "none",
        "Summary": f"`{outcome.summary_path}`",
        "Validation report": f"`{outcome.validation_report}`" if outcome.validation_report else "none",
    }
    if outcome.retrain is not None:
        rows["Retrained version"] = f"{outcome.retrain.registered.name} v{outcome.retrain.registered.version}"
    run_url = _run_url(settings, outcome.mlflow_run_id) if outcome.mlflow_run_id else None
    if outcome.mlflow_run_id:
        rows["MLflow run"] = f"[{outcome.mlflow_run_id}]({run_url})" if run_url else outcome.mlflow_run_id
    _publish("monitoring", "Monitoring check", rows, run_url, "MLflow run of the check")


def publish_scoring(outcome: ScoringOutcome) -> None:
    """The rows scored, by which version, and where the scores went."""
    if not _in_run():
        return
    rows = {
        "Rows scored": str(outcome.rows),
        "Model version": outcome.model_version,
        "Scores": f"`{outcome.output_path}`",
        "Validation report": f"`{outcome.validation_report}`",
    }
    _publish("scoring", "Batch scoring", rows, None, "")


def _publish(flow: str, title: str, rows: Mapping[str, str], link: str | None, link_text: str) -> None:
    """``<flow>-summary`` (a markdown table) and ``<flow>-mlflow-run`` (a link), in the current flow run only.

    A summary that cannot be published (the Prefect API refused it) is a warning in the run's
    log, not a failed run: the model, the reports and the MLflow run exist either way.
    """
    table = "\n".join(f"| {name} | {redact(value).replace('|', '/')} |" for name, value in rows.items())
    markdown = f"## {title}\n\n| | |\n|---|---|\n{table}\n"
    try:
        create_markdown_artifact(markdown, key=f"{flow}-summary", description=f"{title}: what this run produced")
        if link:
            create_link_artifact(link, link_text=link_text, key=f"{flow}-mlflow-run", description=link_text)
    except Exception as exc:  # the run's outcome stands; only its summary is missing
        logger.warning("The %s summary was not published to Prefect: %s", flow, redact(str(exc)))
        return
    if link:
        logger.info("%s: %s", link_text, link)


def _in_run() -> bool:
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def _run_url(settings: Settings, run_id: str) -> str | None:
    """The run's MLflow UI link; None (a warning) when the tracking store cannot say its experiment."""
    try:
        return mlflow_run_url(settings, run_id)
    except Exception as exc:  # a summary without its link beats a failed run
        logger.warning("No MLflow link for run %s: %s", run_id, redact(str(exc)))
        return None
