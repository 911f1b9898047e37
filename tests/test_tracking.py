"""Tracking and the champion gate against a real MLflow store (SQLite under tmp_path)."""

from __future__ import annotations

import json

import pytest

from mlops import tracking
from mlops.data import load_table
from mlops.training import DataSplit, split_holdout, train_model


@pytest.fixture
def frame(settings):
    return load_table(settings.data.training)


@pytest.fixture
def split(frame, settings) -> DataSplit:
    return split_holdout(frame, "target", settings.model.test_size, settings.model.seed)


def _register(trained, split, frame, settings, trigger="manual"):
    registered = tracking.log_and_register(
        trained, split, frame, settings, data_path=settings.data.training, tags={"trigger": trigger}
    )
    return registered, tracking.gate_challenger(registered, split, settings)


def _weak_model(split, settings):
    """A model trained on 12 rows: clearly worse on the holdout than one trained on all."""
    tiny = DataSplit(split.x_train.head(12), split.y_train.head(12), split.x_holdout, split.y_holdout)
    return train_model(tiny, settings.model)


def test_log_and_register__run_has_params_metrics_model_dataset_and_tags(tool_env, settings, frame, split):
    import mlflow

    registered, decision = _register(train_model(split, settings.model), split, frame, settings)
    run = mlflow.get_run(registered.run_id)
    assert run.data.metrics["holdout_roc_auc"] == pytest.approx(registered.metrics["roc_auc"])
    assert run.data.params["estimator"] == "logistic_regression"
    assert run.data.tags["mlops.trigger"] == "manual"
    assert run.inputs.dataset_inputs[0].dataset.name == "train"
    model = mlflow.models.get_model_info(registered.uri)
    assert model.signature.inputs.input_names()[:2] == ["mean_radius", "mean_texture"]
    assert decision.promoted and decision.reason == "no champion yet"
    artifact_root = settings.mlflow_artifact_dir
    assert any(artifact_root.rglob("MLmodel")), "artifacts must live under the state folder"


def test_gate__first_version_becomes_champion(tool_env, settings, frame, split):
    registered, _ = _register(train_model(split, settings.model), split, frame, settings)
    assert tracking.champion_version(settings.model.name) == registered.version


def test_gate__equal_model_keeps_champion_and_says_why(tool_env, settings, frame, split):
    import mlflow

    trained = train_model(split, settings.model)
    first, _ = _register(trained, split, frame, settings)
    second, decision = _register(trained, split, frame, settings)
    assert not decision.promoted
    assert "does not beat" in decision.reason
    assert tracking.champion_version(settings.model.name) == first.version
    version = mlflow.MlflowClient().get_model_version(settings.model.name, second.version)
    assert version.tags["mlops.gate.decision"] == "rejected"
    assert "challenger" in version.aliases


def test_gate__worse_model_keeps_champion(tool_env, settings, frame, split):
    first, _ = _register(train_model(split, settings.model), split, frame, settings)
    _, decision = _register(_weak_model(split, settings), split, frame, settings)
    assert not decision.promoted
    assert decision.champion_score > decision.challenger_score
    assert f"does not beat champion v{first.version}" in decision.reason
    assert tracking.champion_version(settings.model.name) == first.version


def test_gate__better_model_is_promoted_and_old_champion_kept_as_previous(tool_env, settings, frame, split):
    import mlflow

    weak, _ = _register(_weak_model(split, settings), split, frame, settings)
    strong, decision = _register(train_model(split, settings.model), split, frame, settings)
    assert decision.promoted and decision.champion_version == weak.version
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias(settings.model.name, "champion").version) == strong.version
    assert str(client.get_model_version_by_alias(settings.model.name, "previous").version) == weak.version
    tags = client.get_model_version(settings.model.name, strong.version).tags
    assert tags["mlops.gate.decision"] == "promoted"


def test_gate__margin_blocks_a_marginal_improvement(tool_env, settings, frame, split):
    _register(_weak_model(split, settings), split, frame, settings)
    strict = settings.model_copy(update={"model": settings.model.model_copy(update={"promotion_margin": 1.0})})
    _, decision = _register(train_model(split, strict.model), split, frame, strict)
    assert not decision.promoted
    assert "margin 1" in decision.reason


# --- Nested trials, artifacts, model card ----------------------------------------------


def test_log_and_register__trials_are_nested_child_runs_with_plots_manifest_and_card(tool_env, settings, frame, split):
    import mlflow

    from mlops.training import search_candidates, split_manifest

    result = search_candidates(split, settings.model)
    registered = tracking.log_and_register(
        result.best, split, frame, settings, data_path=settings.data.training, tags={"trigger": "schedule"},
        trials=result.trials, manifest=split_manifest(frame, split, settings.model.seed),
    )
    decision = tracking.gate_challenger(registered, split, settings)
    tracking.log_model_card(registered, tracking.model_card(registered, decision, settings, {"rows": str(len(frame))}))
    run = mlflow.get_run(registered.run_id)
    children = mlflow.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{registered.run_id}'"
    )
    assert len(children) == len(result.trials) == 3
    assert set(children["params.model.C"]) == {"0.1", "1.0", "10.0"} and children["metrics.cv_roc_auc"].notna().all()
    assert {"mlops.trigger", "mlops.task", "mlops.contract_version"} <= set(run.data.tags)
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(registered.run_id, "plots")}
    assert artifacts == {"plots/confusion_matrix.png", "plots/roc_curve.png"}
    local = mlflow.artifacts.download_artifacts(run_id=registered.run_id, artifact_path="split/manifest.csv")
    assert sum(1 for _ in open(local)) == len(frame) + 1
    card = mlflow.artifacts.load_text(f"runs:/{registered.run_id}/model_card.md")
    assert "## Gate decision" in card and "no champion yet" in card and "## Limitations" in card


# --- Floors, direction, regression ------------------------------------------------------


def _with_model(settings, **update):
    return settings.model_copy(update={"model": settings.model.model_copy(update=update)})


def test_gate__a_floor_blocks_even_the_first_version_and_says_why(tool_env, settings, frame, split):
    import mlflow

    weak = _weak_model(split, settings)
    floor = round(weak.metrics["accuracy"] + 0.01, 2)
    strict = _with_model(settings, floors={"accuracy": floor})
    registered, decision = _register(weak, split, frame, strict)
    assert not decision.promoted
    assert f"below the floor {floor:g}" in decision.reason
    assert tracking.champion_version(settings.model.name) is None
    tags = mlflow.MlflowClient().get_model_version(settings.model.name, registered.version).tags
    assert tags["mlops.gate.decision"] == "rejected" and "floor" in tags["mlops.gate.reason"]
    assert json.loads(tags["mlops.gate.floors"]) == {"accuracy": floor} and tags["mlops.gate.margin"] == "0"


@pytest.fixture
def regression(settings):
    from mlops.config import load_settings

    diabetes = load_settings("examples/diabetes.yaml", state_dir=settings.state_dir)
    frame = load_table(diabetes.data.training)
    return diabetes, frame, split_holdout(frame, "target", 0.2, diabetes.model.seed, task="regression")


def test_gate__regression_lower_error_is_promoted_higher_error_is_not(tool_env, regression):
    diabetes, frame, split = regression
    diabetes = _with_model(diabetes, floors={})  # the example's r2 floor would block the weak model
    tiny = DataSplit(split.x_train.head(25), split.y_train.head(25), split.x_holdout, split.y_holdout)
    weak = train_model(tiny, diabetes.model)
    strong = train_model(split, diabetes.model)
    assert strong.metrics["rmse"] < weak.metrics["rmse"]
    weak_version, _ = _register(weak, split, frame, diabetes)
    strong_version, promoted = _register(strong, split, frame, diabetes)
    assert promoted.promoted and promoted.metric == "rmse" and promoted.champion_version == weak_version.version
    _, rejected = _register(weak, split, frame, diabetes)
    assert not rejected.promoted and "does not beat" in rejected.reason
    assert tracking.champion_version(diabetes.model.name) == strong_version.version


# --- Moves by hand: promote, rollback, audit --------------------------------------------


def test_promote__worse_version_is_refused_unless_forced_and_the_move_is_recorded(tool_env, settings, frame, split):
    import mlflow

    strong, _ = _register(train_model(split, settings.model), split, frame, settings)
    weak, _ = _register(_weak_model(split, settings), split, frame, settings)
    refused = tracking.promote_version(settings, weak.version, split, reason="try")
    assert not refused.promoted and "does not beat" in refused.reason
    assert tracking.champion_version(settings.model.name) == strong.version
    forced = tracking.promote_version(settings, weak.version, split, force=True, reason="incident 42")
    assert forced.promoted and forced.forced
    assert tracking.champion_version(settings.model.name) == weak.version
    tags = mlflow.MlflowClient().get_model_version(settings.model.name, weak.version).tags
    assert tags["mlops.promotion.reason"] == "incident 42" and tags["mlops.promotion.kind"] == "promote"
    last = tracking.read_audit(settings)[-1]
    assert (last["kind"], last["champion"], last["previous"], last["forced"]) == ("promote", weak.version, strong.version, True)
    assert last["by"] and last["at"]


def test_rollback__restores_the_previous_version_and_can_be_undone(tool_env, settings, frame, split):
    weak, _ = _register(_weak_model(split, settings), split, frame, settings)
    strong, _ = _register(train_model(split, settings.model), split, frame, settings)
    decision = tracking.rollback(settings, split, reason="bad in production")
    assert decision.promoted and tracking.champion_version(settings.model.name) == weak.version
    assert tracking._version_by_alias(settings.model.name, tracking.PREVIOUS) == strong.version
    tracking.rollback(settings, split)
    assert tracking.champion_version(settings.model.name) == strong.version
    assert [entry["kind"] for entry in tracking.read_audit(settings)] == ["gate", "gate", "rollback", "rollback"]


def test_rollback__without_a_previous_version_is_a_registry_error(tool_env, settings, frame, split):
    from mlops.errors import RegistryError

    _register(train_model(split, settings.model), split, frame, settings)
    with pytest.raises(RegistryError, match="no 'previous' version"):
        tracking.rollback(settings, split)


def test_promote__unknown_version_is_a_registry_error(tool_env, settings, frame, split):
    from mlops.errors import RegistryError

    _register(train_model(split, settings.model), split, frame, settings)
    with pytest.raises(RegistryError, match="no version '9'"):
        tracking.promote_version(settings, "9", split)


# --- Concurrency and compare -----------------------------------------------------------


def test_gate__concurrent_gates_leave_exactly_one_consistent_champion(tool_env, settings, frame, split):
    """Two challengers gated at the same moment, with no champion yet: only one may win."""
    import threading

    import mlflow

    trained = train_model(split, settings.model)
    versions = [
        tracking.log_and_register(trained, split, frame, settings, data_path=settings.data.training, tags={})
        for _ in range(2)
    ]
    barrier, decisions = threading.Barrier(2), []

    def gate(registered):
        barrier.wait()
        decisions.append(tracking.gate_challenger(registered, split, settings))

    threads = [threading.Thread(target=gate, args=(registered,)) for registered in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(decision.promoted for decision in decisions) == [False, True]
    winner = next(decision for decision in decisions if decision.promoted)
    loser = next(decision for decision in decisions if not decision.promoted)
    assert tracking.champion_version(settings.model.name) == winner.challenger_version
    assert loser.champion_version == winner.challenger_version, "the second gate saw the first one's move"
    client = mlflow.MlflowClient()
    assert client.get_registered_model(settings.model.name).aliases.get("previous") is None


def test_list_versions__newest_first_with_aliases_metrics_and_tags(tool_env, settings, frame, split):
    first, _ = _register(_weak_model(split, settings), split, frame, settings, trigger="manual")
    second, _ = _register(train_model(split, settings.model), split, frame, settings, trigger="drift")
    versions = tracking.list_versions(settings.model.name)
    assert [v.version for v in versions] == [second.version, first.version]
    assert versions[0].aliases == ["challenger", "champion"] and versions[1].aliases == ["previous"]
    assert versions[0].metrics["roc_auc"] == pytest.approx(second.metrics["roc_auc"])
    assert versions[0].tags["mlops.trigger"] == "drift" and versions[0].tags["mlops.gate.decision"] == "promoted"
    assert tracking.summaries_as_dicts(versions)[0]["version"] == second.version


def test_gate__a_champion_good_on_old_data_and_bad_on_recent_rows_loses(tool_env, settings, frame, split):
    # Given a champion trained on the old concept, and recent rows where the concept flipped
    _register(train_model(split, settings.model), split, frame, settings)
    flipped = DataSplit(split.x_train, 1 - split.y_train, split.x_holdout, split.y_holdout)
    challenger = tracking.log_and_register(
        train_model(flipped, settings.model), split, frame, settings, data_path=settings.data.training, tags={}
    )
    recent = tracking.EvaluationSet(split.x_holdout.head(60), 1 - split.y_holdout.head(60))
    # When the gate judges the challenger (worse on the old holdout) with the recent set
    decision = tracking.gate_challenger(challenger, split, settings, recent)
    # Then it decides on the recent set: the challenger wins there, and both scores and sizes are recorded
    assert decision.promoted, decision.reason
    assert decision.challenger_score < decision.champion_score, "worse on the old holdout"
    assert decision.recent_challenger_score > decision.recent_champion_score
    assert (decision.recent_rows, decision.holdout_rows) == (60, len(split.x_holdout))
    assert decision.reason.startswith("recent roc_auc") and "(holdout: roc_auc" in decision.reason
    import mlflow

    tags = mlflow.MlflowClient().get_model_version(settings.model.name, challenger.version).tags
    assert tags["mlops.gate.recent_rows"] == "60" and tags["mlops.gate.holdout_rows"] == str(len(split.x_holdout))
    assert float(tags["mlops.gate.recent_champion_score"]) == pytest.approx(decision.recent_champion_score, abs=1e-6)


def test_gate__recent_win_still_needs_the_holdout_floors(tool_env, settings, frame, split):
    _register(train_model(split, settings.model), split, frame, settings)
    floored = settings.model_copy(update={"model": settings.model.model_copy(update={"floors": {"roc_auc": 0.9}})})
    flipped = DataSplit(split.x_train, 1 - split.y_train, split.x_holdout, split.y_holdout)
    challenger = tracking.log_and_register(
        train_model(flipped, settings.model), split, frame, settings, data_path=settings.data.training, tags={}
    )
    recent = tracking.EvaluationSet(split.x_holdout.head(60), 1 - split.y_holdout.head(60))
    decision = tracking.gate_challenger(challenger, split, floored, recent)
    assert not decision.promoted and "below the floor 0.9" in decision.reason
    assert decision.recent_challenger_score > decision.recent_champion_score
