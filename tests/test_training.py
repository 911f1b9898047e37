from __future__ import annotations

from pathlib import Path

import pytest

from mlops.data import data_fingerprint, load_table, make_sample_data
from mlops.errors import DataError
from mlops.training import split_holdout, split_manifest, train_model

REPO = Path(__file__).resolve().parents[1]


def test_split_holdout__same_seed_same_split(settings):
    frame = load_table(settings.data.training)
    first = split_holdout(frame, "target", 0.2, seed=42)
    second = split_holdout(frame, "target", 0.2, seed=42)
    assert list(first.x_holdout.index) == list(second.x_holdout.index)
    assert abs(len(first.x_holdout) - len(frame) * 0.2) < len(frame) * 0.06, "a hash split is close to test_size"
    assert "target" not in first.feature_names


def test_split_holdout__a_row_stays_on_its_side_when_rows_are_added_or_reordered(settings):
    frame = load_table(settings.data.training)
    half = frame.head(200)
    shuffled = frame.sample(frac=1.0, random_state=3)[list(reversed(frame.columns))]
    holdout = set(split_holdout(frame, "target", 0.2, seed=42).x_holdout.index)
    assert set(split_holdout(half, "target", 0.2, seed=42).x_holdout.index) == holdout & set(half.index)
    assert set(split_holdout(shuffled, "target", 0.2, seed=42).x_holdout.index) == holdout


def test_split_holdout__seed_changes_the_split(settings):
    frame = load_table(settings.data.training)
    first = split_holdout(frame, "target", 0.2, seed=1)
    second = split_holdout(frame, "target", 0.2, seed=2)
    assert set(first.x_holdout.index) != set(second.x_holdout.index)


def test_split_manifest__names_every_row_once_with_its_side(settings):
    frame = load_table(settings.data.training)
    split = split_holdout(frame, "target", 0.2, seed=42)
    manifest = split_manifest(frame, split, seed=42)
    assert len(manifest) == len(frame) and manifest["row_hash"].str.len().eq(16).all()
    assert (manifest["split"] == "holdout").sum() == len(split.x_holdout)


def test_split_holdout__single_class_target_is_a_data_error(settings):
    frame = load_table(settings.data.training)
    frame["target"] = 1
    with pytest.raises(DataError, match="single class"):
        split_holdout(frame, "target", 0.2, seed=1)


def test_split_holdout__missing_target_is_a_data_error(settings):
    frame = load_table(settings.data.training).drop(columns=["target"])
    with pytest.raises(DataError, match="Target column 'target'"):
        split_holdout(frame, "target", 0.2, seed=1)


@pytest.mark.parametrize("estimator", ["logistic_regression", "random_forest"])
def test_train_model__reproducible_metrics(settings, estimator):
    config = settings.model.model_copy(update={"estimator": estimator})
    frame = load_table(settings.data.training)
    split = split_holdout(frame, "target", 0.2, seed=42)
    first, second = train_model(split, config), train_model(split, config)
    assert first.metrics == second.metrics
    assert set(first.metrics) == {
        "accuracy", "balanced_accuracy", "f1", "precision", "recall", "roc_auc", "average_precision", "log_loss"
    }
    assert first.metrics["roc_auc"] > 0.95
    assert first.params["estimator"] == estimator


def test_sample_data__regenerates_identically_to_the_committed_files(settings, tmp_path):
    from mlops.data import write_sample_data

    train_path, current_path = write_sample_data(tmp_path)
    assert train_path.read_bytes() == settings.data.training.read_bytes()
    assert current_path.read_bytes() == settings.data.current.read_bytes()


def test_sample_data__current_batch_is_shifted_on_the_documented_columns():
    train, current = make_sample_data()
    ratio = current.mean(numeric_only=True) / train.mean(numeric_only=True)
    assert ratio["mean_radius"] > 1.2 and ratio["worst_area"] > 1.2
    assert 0.8 < ratio["radius_error"] < 1.2


def test_data_fingerprint__changes_with_content(settings):
    frame = load_table(settings.data.training)
    changed = frame.copy()
    changed.iloc[0, 0] += 1
    assert data_fingerprint(frame) == data_fingerprint(frame.copy())
    assert data_fingerprint(frame) != data_fingerprint(changed)


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "does not exist"), (b"", "is empty"), (b"a,b\n", "no rows"), (b"\xff\xfe\x00a,b\n1,2\n", "UTF-8")],
)
def test_load_table__unreadable_files_are_data_errors(tmp_path, content, expected):
    path = tmp_path / "data.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=expected):
        load_table(path)


def test_search_candidates__every_trial_is_kept_and_the_best_is_scored_on_the_holdout(settings):
    from mlops.training import search_candidates

    split = split_holdout(load_table(settings.data.training), "target", 0.2, seed=42)
    result = search_candidates(split, settings.model)
    assert [trial.params for trial in result.trials] == [{"model__C": c} for c in (0.1, 1.0, 10.0)]
    best_trial = max(result.trials, key=lambda trial: trial.cv_score)
    assert result.best.params["model.C"] == best_trial.params["model__C"]
    assert result.best.metrics["roc_auc"] > 0.95 and result.metric == "roc_auc"
    # params named alike for the parent run and its trials; sklearn's 'deprecated' placeholder left out
    assert all(set(trial.run_params) == set(result.best.params) for trial in result.trials)
    assert [trial.run_params["model.C"] for trial in result.trials] == [0.1, 1.0, 10.0]
    assert "model.penalty" not in result.best.params
    assert result.best.cv_metrics == {"cv_roc_auc": best_trial.cv_score, "cv_roc_auc_std": best_trial.cv_std}


def test_search_candidates__python_declared_candidates_and_a_users_own_pipeline(settings):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler
    from sklearn.tree import DecisionTreeClassifier

    from mlops.training import Candidate, search_candidates

    split = split_holdout(load_table(settings.data.training), "target", 0.2, seed=42)
    candidates = [
        Candidate("tree", DecisionTreeClassifier(random_state=0), {"max_depth": [2, 4]}),
        Candidate("own", make_pipeline(MinMaxScaler(), LogisticRegression(max_iter=500)), {"logisticregression__C": [1.0]}),
    ]
    result = search_candidates(split, settings.model, candidates)
    assert [trial.candidate for trial in result.trials] == ["tree", "tree", "own"]
    assert result.best.params["estimator"] in {"tree", "own"}
    assert "minmaxscaler" in dict(search_candidates(split, settings.model, candidates[1:]).best.pipeline.steps)


def test_search_candidates__weighted_rows_change_the_fit_and_an_estimator_without_weights_is_named(settings):
    import numpy as np
    import pandas as pd
    from sklearn.neighbors import KNeighborsClassifier

    from mlops.errors import ConfigError
    from mlops.training import Candidate, search_candidates

    frame = load_table(settings.data.training)
    split = split_holdout(frame, "target", 0.2, seed=42)
    # The newest rows (a retrain's labeled ones) weigh 20 times a training row.
    weights = pd.Series(np.where(np.arange(len(frame)) >= 300, 20.0, 1.0), index=frame.index)
    plain = search_candidates(split, settings.model).best.pipeline
    weighted = search_candidates(split.weighted(weights), settings.model).best.pipeline
    assert split.weighted(weights).w_train.tolist().count(20.0) == int((split.x_train.index >= 300).sum())
    assert not np.allclose(plain[-1].coef_, weighted[-1].coef_), "sample weights reach the estimator's fit"
    knn = [Candidate("knn", KNeighborsClassifier(), {"n_neighbors": [3]})]
    with pytest.raises(ConfigError, match="does not take sample weights.*labeled_weight"):
        search_candidates(split.weighted(weights), settings.model, knn)


def test_build_pipeline__one_hot_encodes_categorical_columns_inferred_from_dtypes():
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from mlops.training import build_pipeline, infer_columns

    frame = pd.DataFrame({"size": [1.0, 2.0, 3.0, 4.0] * 5, "colour": ["red", "blue", "red", "green"] * 5})
    assert infer_columns(frame) == (["size"], ["colour"])
    pipeline = build_pipeline(LogisticRegression(), frame).fit(frame, [0, 1, 0, 1] * 5)
    assert list(pipeline[:-1].get_feature_names_out()) == ["size", "colour_blue", "colour_green", "colour_red"]
    assert pipeline.predict(pd.DataFrame({"size": [2.0], "colour": ["purple"]})).shape == (1,)


def test_train_model__regression_on_the_diabetes_example_is_reproducible(settings):
    from mlops.config import load_settings

    diabetes = load_settings("examples/diabetes.yaml", state_dir=settings.state_dir)
    frame = load_table(diabetes.data.training)
    split = split_holdout(frame, "target", 0.2, seed=42, task="regression")
    first, second = train_model(split, diabetes.model), train_model(split, diabetes.model)
    assert first.metrics == second.metrics
    assert set(first.metrics) == {"rmse", "mae", "r2"}
    assert 30 < first.metrics["rmse"] < 70 and first.metrics["r2"] > 0.3


def test_diabetes_example__data_and_suite_regenerate_identically(tmp_path):
    import runpy


    runpy.run_path(str(REPO / "examples" / "diabetes.py"), run_name="diabetes")["write_diabetes"](tmp_path)
    for relative in ("data/diabetes/train.csv", "data/expectations/diabetes.json"):
        assert (tmp_path / relative).read_bytes() == (REPO / relative).read_bytes()


def test_diabetes_example__data_passes_its_suite():
    from mlops.contract import validate_frame
    from mlops.data import load_table

    result = validate_frame(load_table(REPO / "data/diabetes/train.csv"), REPO / "data/expectations/diabetes.json")
    assert result.success, result.summary()


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"task": "regression", "primary_metric": "roc_auc"}, "do not apply to regression"),
        ({"floors": {"rmse": 50}}, "do not apply to classification"),
        ({"task": "regression", "estimator": "logistic_regression"}, "not built in for regression"),
        ({"candidates": [{"name": "x", "estimator": "xgboost"}]}, "unknown estimator 'xgboost'"),
    ],
)
def test_model_config__metrics_and_estimators_must_fit_the_task(model, expected):
    from mlops.config import load_settings
    from mlops.errors import ConfigError

    with pytest.raises(ConfigError, match=expected):
        load_settings(model=model)


def test_model_config__defaults_follow_the_task():
    from mlops.config import ModelConfig

    assert (ModelConfig().metric, ModelConfig().estimator_name) == ("roc_auc", "logistic_regression")
    assert (ModelConfig(task="regression").metric, ModelConfig(task="regression").estimator_name) == ("rmse", "ridge")


def test_floors__a_minimum_for_scores_a_maximum_for_errors():
    from mlops.tracking import _floor_failures

    failures = _floor_failures({"rmse": 80.0, "r2": 0.5, "mae": 10.0}, {"rmse": 70.0, "r2": 0.3, "mae": 20.0})
    assert failures == ["rmse 80.0000 is above the ceiling 70"]
    assert _floor_failures({"accuracy": 0.8}, {"accuracy": 0.9}) == ["accuracy 0.8000 is below the floor 0.9"]


@pytest.mark.parametrize(("config", "estimator", "metric"), [((), "logistic_regression", "roc_auc"),
                                                             (("--config", "examples/diabetes.yaml"), None, "rmse")])
def test_show_config__prints_the_estimator_and_metric_training_uses(settings, config, estimator, metric):
    """Not ``null``: the task's defaults; with candidates configured, no single estimator is used."""
    import json

    from click.testing import CliRunner

    from mlops.cli import cli

    result = CliRunner().invoke(cli, [*config, "--state-dir", str(settings.state_dir), "config"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)["model"]
    assert (shown["estimator"], shown["primary_metric"]) == (estimator, metric)
