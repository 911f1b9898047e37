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
    settings = settings.model_copy(update={"monitoring": settings.monitoring.model_copy(update={"retrain_without_labels": True})})
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


def test_training_flow__regression_runs_the_whole_flow_with_nested_trials(tool_env, settings):
    import mlflow

    from flows.training import training_flow
    from mlops.config import load_settings

    diabetes = load_settings("examples/diabetes.yaml", state_dir=settings.state_dir)
    outcome = training_flow(diabetes)
    assert set(outcome.registered.metrics) == {"rmse", "mae", "r2"}
    assert outcome.decision.promoted and outcome.decision.metric == "rmse"
    parent = mlflow.get_run(outcome.registered.run_id)
    children = mlflow.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 4 + 2, "every trial of both candidates is a child run"
    assert set(children["params.estimator"]) == {"ridge", "random_forest"}
    assert parent.data.tags["mlops.flow_run_id"] == outcome.flow_run_id
    assert parent.data.tags["mlops.task"] == "regression"
    plots = {a.path for a in mlflow.MlflowClient().list_artifacts(parent.info.run_id, "plots")}
    assert plots == {"plots/residuals.png"}


def test_training_flow__two_concurrent_runs_reproduce_metrics_and_leave_one_consistent_champion(tool_env, settings):
    """Same data, config and seed: the same metrics, so exactly one of the two may be promoted."""
    from concurrent.futures import ThreadPoolExecutor

    import mlflow

    from flows.training import training_flow
    from mlops import tracking

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lambda _: training_flow(settings), range(2)))
    assert outcomes[0].registered.metrics == outcomes[1].registered.metrics
    assert outcomes[0].data_fingerprint == outcomes[1].data_fingerprint
    assert sorted(o.decision.promoted for o in outcomes) == [False, True]
    winner = next(o for o in outcomes if o.decision.promoted)
    loser = next(o for o in outcomes if not o.decision.promoted)
    assert tracking.champion_version(settings.model.name) == winner.registered.version
    assert loser.decision.champion_version == winner.registered.version
    assert "does not beat" in loser.decision.reason
    aliases = mlflow.MlflowClient().get_registered_model(settings.model.name).aliases
    assert str(aliases["champion"]) == winner.registered.version and "previous" not in aliases
    assert [entry["champion"] for entry in tracking.read_audit(settings)] == [winner.registered.version]


def test_training_flow__python_declared_candidates_replace_the_configured_ones(tool_env, settings):
    import mlflow
    from sklearn.tree import DecisionTreeClassifier

    from flows.training import training_flow
    from mlops.training import Candidate

    tree = Candidate("tree", DecisionTreeClassifier(random_state=0), {"max_depth": [2, 3]})
    outcome = training_flow(settings, candidates=[tree])
    run = mlflow.get_run(outcome.registered.run_id)
    assert run.data.params["estimator"] == "tree" and run.data.params["estimator_class"] == "DecisionTreeClassifier"
    assert _flow_run(outcome.flow_run_id).state.is_completed()
