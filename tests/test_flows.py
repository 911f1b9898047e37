"""The training and monitoring flows as real Prefect flow runs against a real MLflow store."""

from __future__ import annotations

import pytest

from mlops.data import load_table
from mlops.errors import ValidationFailed

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def prefect_server():
    """One temporary Prefect server (its own database) for the module's flow runs."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _flow_run(flow_run_id):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def test_training_flow__registers_first_version_as_champion(tool_env, settings):
    from flows.training import training_flow
    from mlops import tracking

    outcome = training_flow(settings)
    assert outcome.decision.promoted
    assert tracking.champion_version(settings.model.name) == outcome.registered.version
    assert outcome.validation_report.is_file()
    assert _flow_run(outcome.flow_run_id).state.is_completed()


def test_training_flow__invalid_data_trains_and_registers_nothing(tool_env, settings, tmp_path):
    import mlflow

    from flows.training import training_flow

    bad = load_table(settings.data.training)
    bad.loc[:9, "mean_radius"] = -5.0
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    with pytest.raises(ValidationFailed, match="mean_radius"):
        training_flow(settings, data_path=path)
    client = mlflow.MlflowClient()
    assert client.search_registered_models() == []
    experiment = mlflow.get_experiment_by_name(settings.model.experiment)
    assert experiment is None or not mlflow.search_runs([experiment.experiment_id]).shape[0]


def test_monitoring_flow__drift_triggers_a_tagged_retraining_flow_run(tool_env, settings):
    import mlflow

    from flows.monitoring import monitoring_flow
    from flows.training import training_flow

    first = training_flow(settings)
    outcome = monitoring_flow(settings, current_path=settings.data.current)
    assert outcome.validation is not None and not outcome.validation.success, "skew is a contract violation"
    assert {failure.expectation for failure in outcome.validation.blocking} == {"expect_column_values_to_be_between"}
    assert outcome.validation_report.is_file()
    assert outcome.drift.drift_detected
    assert "mean_radius" in outcome.drift.drifted_columns
    assert outcome.summary_path.is_file() and outcome.drift.report_path
    retrain = outcome.retrain
    assert retrain is not None and int(retrain.registered.version) == int(first.registered.version) + 1
    run = _flow_run(retrain.flow_run_id)
    assert {"retrain", "trigger:drift"} <= set(run.tags)
    assert run.parent_task_run_id is not None, "the retraining is a child flow run of monitoring"
    assert mlflow.get_run(retrain.registered.run_id).data.tags["mlops.trigger"] == "drift"


def test_monitoring_flow__no_drift_no_retraining(tool_env, settings, tmp_path):
    from flows.monitoring import monitoring_flow

    sample = load_table(settings.data.training).sample(frac=0.5, random_state=3)
    path = tmp_path / "same.csv"
    sample.to_csv(path, index=False)
    outcome = monitoring_flow(settings, current_path=path)
    assert not outcome.drift.drift_detected
    assert outcome.retrain is None
