"""What a user sees of a flow run in the Prefect UI: its log lines and its artifacts, read back from the API."""

from __future__ import annotations

import io
import json
import shutil
import sys

import pytest

from mlops.config import LogsConfig, load_settings
from mlops.environment import tool_environment
from mlops.logs import console_logs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mlflow_db_template):
    """One training and one monitoring flow run on a temporary Prefect server: (settings, training, monitoring,
    the training's console lines as JSON)."""
    from prefect.testing.utilities import prefect_test_harness

    from tests.conftest import REPO

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        settings = load_settings(state_dir=tmp_path_factory.mktemp("prefect-runs") / "state")
        settings.state_dir.mkdir(parents=True)
        shutil.copy(mlflow_db_template, settings.state_dir / "mlflow.db")
        console = io.StringIO()  # what a command's stderr shows with --log-format json
        with prefect_test_harness(server_startup_timeout=120), tool_environment(settings):
            from flows.monitoring import monitoring_flow
            from flows.training import training_flow

            with pytest.MonkeyPatch.context() as stderr:
                stderr.setattr(sys, "stderr", console)
                with console_logs(LogsConfig(format="json")):
                    trained = training_flow(settings)
            monitored = monitoring_flow(settings, current_path=settings.data.current)
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=30)  # the log lines are sent in batches
            yield settings, trained, monitored, console.getvalue()


def _logs(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))


def _artifacts(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {artifact.key: artifact for artifact in found}


def test_training_run__logs_hold_the_tasks_and_the_librarys_lines(runs):
    _, trained, _, _ = runs
    logs = _logs(trained.flow_run_id)
    assert any(log.name == "prefect.task_runs" and "Validation passed" in log.message for log in logs)
    assert any(log.name == "prefect.task_runs" and "promoted to champion" in log.message for log in logs)
    library = [log for log in logs if log.name.startswith("mlops.")]
    assert any(trained.registered.run_id in log.message for log in library), [log.message for log in logs]
    assert all(log.task_run_id is not None for log in library), "each line is shown under its task"


def test_training_run__artifacts_link_the_mlflow_run_version_and_gate(runs):
    import mlflow

    _, trained, _, _ = runs
    artifacts = _artifacts(trained.flow_run_id)
    experiment = mlflow.get_run(trained.registered.run_id).info.experiment_id
    url = f"http://127.0.0.1:5000/#/experiments/{experiment}/runs/{trained.registered.run_id}"
    assert url in artifacts["training-mlflow-run"].data
    summary = artifacts["training-summary"].data
    assert url in summary and f"v{trained.registered.version}" in summary
    assert "promoted to champion" in summary and str(trained.validation_report) in summary


def test_monitoring_run__artifacts_hold_drift_reports_and_retrain_decision(runs):
    import mlflow

    _, _, monitored, _ = runs
    flow_run_id = mlflow.get_run(monitored.mlflow_run_id).data.tags["mlops.flow_run_id"]
    artifacts = _artifacts(flow_run_id)
    summary = artifacts["monitoring-summary"].data
    assert "Drift | detected" in summary and monitored.drift.report_path in summary
    assert monitored.decision.explain() in summary and monitored.mlflow_run_id in artifacts["monitoring-mlflow-run"].data
    assert any(log.name == "prefect.task_runs" and "retrain" in log.message for log in _logs(flow_run_id))


def test_publish__outside_a_flow_run_is_skipped(runs):
    from mlops import tasks

    settings, trained, _, _ = runs
    with tool_environment(settings):
        assert tasks.publish_training.fn(trained, settings) is None


def test_mlflow_base_url__a_tracking_server_without_its_credentials(settings):
    from pydantic import SecretStr

    from mlops.run_artifacts import mlflow_base_url

    remote = settings.model_copy(update={"tracking_uri": SecretStr("https://me:s3cret-pass@mlflow.example.com:8443/")})
    assert mlflow_base_url(remote) == "https://mlflow.example.com:8443"
    assert mlflow_base_url(settings) == "http://127.0.0.1:5000"


def test_json_logs__every_line_names_its_flow_run_its_task_run_and_the_model_version(runs):
    _, trained, _, console = runs
    lines = [json.loads(line) for line in console.splitlines()]  # every line is one JSON object
    assert lines and all(line["flow_run_id"] == str(trained.flow_run_id) for line in lines)
    messages = [line["message"] for line in lines]
    said = [(line.get("task_run_id"), line["message"]) for line in lines]
    assert len(said) == len(set(said)), "no line printed twice (Prefect's own console handler is set aside)"
    validated = next(line for line in lines if line["message"].startswith("Validation passed"))
    assert validated["task_run_id"] and "validate" in validated["task_run_name"]
    registered = next(line for line in lines if line["message"].startswith("Registered version"))
    assert registered["logger"] == "mlops.tracking" and registered["model_version"] == trained.registered.version
    assert any("best so far" in message for message in messages), "the search's progress per candidate"
    assert all(line["level"] in {"info", "warning"} for line in lines)
