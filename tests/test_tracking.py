"""Tracking and the champion gate against a real MLflow store (SQLite under tmp_path)."""

from __future__ import annotations

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
    decision = tracking.decide_promotion(registered, split, settings)
    tracking.apply_promotion(decision, registered.name)
    return registered, decision


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
