"""What a user sees of a training in the MLflow UI: run names, descriptions, params, Compare, Prefect links."""

from __future__ import annotations

import pytest

from mlops import tracking
from mlops.data import load_table
from mlops.training import search_candidates, split_holdout


@pytest.fixture
def trained(settings):
    frame = load_table(settings.data.training)
    split = split_holdout(frame, "target", settings.model.test_size, settings.model.seed)
    return frame, split, search_candidates(split, settings.model)


def _register(settings, frame, split, result, trigger):
    registered = tracking.log_and_register(
        result.best, split, frame, settings, data_path=settings.data.training, tags={"trigger": trigger},
        trials=result.trials,
    )
    return registered, tracking.gate_challenger(registered, split, settings)


def _children(run):
    import mlflow

    return mlflow.MlflowClient().search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )


def test_training_run__named_described_and_comparable_with_its_trials(tool_env, settings, trained, capsys, caplog):
    import mlflow

    # Given a search over three values of C, registered twice (the second equal, so rejected)
    frame, split, result = trained
    with caplog.at_level("INFO", logger="mlops.tracking"):
        first, _ = _register(settings, frame, split, result, "drift")
        second, _ = _register(settings, frame, split, result, "manual")
    client = mlflow.MlflowClient()
    run = client.get_run(first.run_id)
    # Then the parent and its trials say what they are
    assert run.info.run_name == f"train v{first.version} · logistic_regression · drift retrain"
    trials = _children(run)
    assert sorted(child.info.run_name for child in trials) == [f"trial {n} · logistic_regression" for n in (1, 2, 3)]
    assert client.get_run(second.run_id).info.run_name == f"train v{second.version} · logistic_regression · manual"
    # and the run and the version describe the data, the trigger and the gate's verdict
    note = run.data.tags["mlflow.note.content"]
    assert f"`{settings.data.training}` ({len(frame)} rows)" in note and "Trigger: drift retrain." in note
    assert note.endswith("Gate: promoted to champion: no champion yet.")
    described = client.get_model_version(settings.model.name, first.version).description
    assert described == note
    rejected = client.get_model_version(settings.model.name, second.version).description
    assert "Trigger: manual." in rejected and rejected.splitlines()[-1].startswith("Gate: rejected: roc_auc")
    # and parent and trials share param names and metric keys, so Compare lines them up
    assert all(set(child.data.params) == set(run.data.params) for child in trials)
    assert "model.penalty" not in run.data.params and "deprecated" not in run.data.params.values()
    assert all(set(child.data.metrics) <= set(run.data.metrics) for child in trials)
    best = max(child.data.metrics["cv_roc_auc"] for child in trials)
    assert run.data.metrics["cv_roc_auc"] == pytest.approx(best)
    assert {child.data.tags["mlops.trial"] for child in trials} == {"true"} and run.data.tags["mlops.trial"] == "false"
    trainings = client.search_runs([run.info.experiment_id], filter_string="tags.`mlops.trial` = 'false'")
    assert {found.info.run_id for found in trainings} == {first.run_id, second.run_id}, "the documented UI search"
    # and outside a Prefect flow run there is no Prefect link, and MLflow's registry chatter is in our log only
    assert not any(key.startswith("prefect.") for key in run.data.tags)
    printed = capsys.readouterr()
    assert "Created version" not in printed.err + printed.out and "already exists" not in printed.err + printed.out
    assert f"Registered version {second.version} of model '{settings.model.name}'" in caplog.text


def test_training_run__inside_a_flow_run_carries_its_id_and_url(tool_env, settings, trained, monkeypatch):
    """The flow run as Prefect names it to the process running it (``PREFECT__FLOW_RUN_ID``, set by
    its worker): no Prefect server to start, the same ``prefect.runtime`` lookup as inside a flow."""
    import mlflow
    from prefect.settings import PREFECT_UI_URL, temporary_settings

    frame, split, result = trained
    flow_run_id = "0f0e0d0c-0b0a-4909-8807-060504030201"
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", flow_run_id)
    with temporary_settings({PREFECT_UI_URL: "http://127.0.0.1:4200"}):
        registered = tracking.log_and_register(
            result.best, split, frame, settings, data_path=settings.data.training, tags={}, trials=result.trials[:1]
        )
    run = mlflow.get_run(registered.run_id)
    for tags in (run.data.tags, _children(run)[0].data.tags):
        assert tags["prefect.flow_run_id"] == flow_run_id
        assert tags["prefect.flow_run_url"] == f"http://127.0.0.1:4200/flow-runs/flow-run/{flow_run_id}"
