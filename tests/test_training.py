from __future__ import annotations

import pytest

from mlops.data import data_fingerprint, load_table, make_sample_data
from mlops.errors import DataError
from mlops.training import split_holdout, train_model


def test_split_holdout__same_seed_same_split(settings):
    frame = load_table(settings.data.training)
    first = split_holdout(frame, "target", 0.2, seed=42)
    second = split_holdout(frame, "target", 0.2, seed=42)
    assert list(first.x_holdout.index) == list(second.x_holdout.index)
    assert len(first.x_holdout) == round(len(frame) * 0.2)
    assert "target" not in first.feature_names


def test_split_holdout__is_stratified(settings):
    frame = load_table(settings.data.training)
    split = split_holdout(frame, "target", 0.2, seed=1)
    assert abs(split.y_holdout.mean() - frame["target"].mean()) < 0.02


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
    assert set(first.metrics) == {"accuracy", "f1", "precision", "recall", "roc_auc"}
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
