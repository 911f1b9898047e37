"""Monitoring on users' kinds of tables (tests/datasets.py): categorical drift, quality per task,
labels in the target's type, and the retraining file the training gate accepts. Real Evidently,
real prediction-log files, the real contract gate; no mocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from datasets import DATASETS, build
from sklearn import metrics

from mlops.contract import draft_contract, validate_with_contract, write_contract
from mlops.data import load_table
from mlops.errors import DataError
from mlops.monitoring import compute_drift, drift_columns, join_labels, load_current_window, window_quality
from mlops.prediction_log import BULK_ROWS, PredictionLogWriter, read_prediction_log
from mlops.retraining import combine_with_labeled

THRESHOLD = 0.3
# The column each builder shifts in its current batch (tests/datasets.py).
SHIFTED = {
    "flowers": {"sepal length (cm)"},
    "wines": {"alcohol"},
    "churn": {"worst radius", "plan"},
    "prices": {"índice_masa"},
}


@pytest.fixture(scope="module", params=sorted(DATASETS))
def dataset(request):
    train, current, spec = build(request.param)
    return train, current, spec, draft_contract(train, spec.target, spec.name)


def _log(folder: Path, frame: pd.DataFrame, predictions, request_id: str = "req") -> None:
    """Log ``frame`` as the service does: records with nulls for missing values, one request."""
    writer = PredictionLogWriter(folder)
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    writer.log(request_id=request_id, model_name="m", model_version="1", inputs=records, predictions=list(predictions))
    writer.close()


# --- Drift -----------------------------------------------------------------------------


def test_drift_columns__are_the_features_only_with_text_and_bool_as_categories(dataset) -> None:
    train, _, spec, contract = dataset
    features, categorical = drift_columns(contract)
    assert spec.target not in features
    assert not set(spec.excluded) & set(features), "ids and dates are not compared"
    assert set(spec.text_features) <= set(categorical)
    bools = [column for column in features if train[column].dtype == bool]
    assert set(bools) <= set(categorical)
    assert not {column for column in categorical if train[column].dtype.kind == "f"}


def test_compute_drift__shifted_batch_flags_the_shifted_columns(dataset, tmp_path) -> None:
    # Given the training table and its documented shifted batch, compared on the contract's features
    train, current, spec, contract = dataset
    features, categorical = drift_columns(contract)
    # When drift is measured (report names hold spaces, dots, slashes, non-ASCII letters)
    summary = compute_drift(train, current, threshold=THRESHOLD, columns=features, categorical=categorical,
                            report_path=tmp_path / "drift.html")
    # Then the shifted columns drift, every feature has a verdict and the HTML report is written
    assert SHIFTED[spec.name] <= set(summary.drifted_columns)
    assert [drift.column for drift in summary.columns] == features
    assert Path(summary.report_path).stat().st_size > 100_000
    methods = {drift.column: drift.method for drift in summary.columns}
    assert {methods[column] for column in categorical} <= {"chi-square p_value", "Z-test p_value"}


def test_compute_drift__a_sample_of_the_training_data_does_not_drift(dataset) -> None:
    train, _, _, contract = dataset
    features, categorical = drift_columns(contract)
    summary = compute_drift(train, train.sample(frac=0.5, random_state=1), threshold=THRESHOLD, columns=features,
                            categorical=categorical)
    assert not summary.drift_detected
    assert not set(categorical) & set(summary.drifted_columns)


def test_compute_drift__the_logged_window_compares_like_the_file(dataset, tmp_path) -> None:
    # Given the shifted batch served and logged (JSON lines: text, bools, ints, nulls as null)
    train, current, spec, contract = dataset
    features, categorical = drift_columns(contract)
    _log(tmp_path / "log", current[features], [0] * len(current))
    window = load_current_window(tmp_path / "log", features)
    # When drift is measured on the log rather than on the file
    from_log = compute_drift(train, window, threshold=THRESHOLD, columns=features, categorical=categorical)
    from_file = compute_drift(train, current, threshold=THRESHOLD, columns=features, categorical=categorical)
    # Then the verdicts and scores are the same
    assert from_log.columns == from_file.columns


def test_compute_drift__bulk_parquet_log_compares_like_the_file(tmp_path) -> None:
    train, current, spec = build("churn")
    features, categorical = drift_columns(draft_contract(train, spec.target, spec.name))
    bulk = pd.concat([current] * (BULK_ROWS // len(current) + 1), ignore_index=True)[features]
    _log(tmp_path / "log", bulk, ["No"] * len(bulk))
    assert list((tmp_path / "log").glob("*.parquet")), "a bulk request is logged as Parquet"
    window = load_current_window(tmp_path / "log", features)
    from_log = compute_drift(train, window, threshold=THRESHOLD, columns=features, categorical=categorical)
    from_file = compute_drift(train, bulk, threshold=THRESHOLD, columns=features, categorical=categorical)
    assert from_log.columns == from_file.columns
    assert "plan" in from_log.drifted_columns


def test_compute_drift__unseen_category_and_nulls_in_a_text_column() -> None:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"city name": rng.choice(["Oslo", "Bergen", None], 400, p=[0.6, 0.3, 0.1])})
    same = pd.DataFrame({"city name": rng.choice(["Oslo", "Bergen", None], 200, p=[0.6, 0.3, 0.1])})
    unseen = pd.DataFrame({"city name": rng.choice(["Oslo", "Bergen", "Tromsø"], 200, p=[0.3, 0.3, 0.4])})
    assert not compute_drift(reference, same, threshold=0.5).drift_detected
    summary = compute_drift(reference, unseen, threshold=0.5)
    assert summary.drifted_columns == ("city name",)
    assert summary.columns[0].method == "chi-square p_value"


def test_compute_drift__categories_read_in_other_types_compare_equal() -> None:
    # Given int and bool categories in training, and the same rows later as text, floats or objects
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"grade": rng.integers(1, 4, 500), "member": rng.random(500) < 0.4})
    later = reference.sample(n=300, random_state=0).reset_index(drop=True)
    native = compute_drift(reference, later, threshold=0.5, categorical=["grade", "member"])
    assert not native.drifted_columns
    assert [c.method for c in native.columns] == ["chi-square p_value", "Z-test p_value"]
    # When they are compared in those other types, then the scores are the same
    for batch in (later.astype(str), later.astype(float), later.astype(object)):
        summary = compute_drift(reference, batch, threshold=0.5, categorical=["grade", "member"])
        assert summary.columns == native.columns, batch.dtypes.to_dict()
    # And nulls among them are left out, not a category of their own
    with_nulls = later.astype(object)
    with_nulls.loc[:9, ["grade", "member"]] = None
    assert not compute_drift(reference, with_nulls, threshold=0.5, categorical=["grade", "member"]).drifted_columns


def test_compute_drift__a_column_null_in_the_whole_window_drifts_without_a_test() -> None:
    reference = pd.DataFrame({"plan": ["a", "b"] * 50, "x": np.arange(100.0)})
    current = pd.DataFrame({"plan": [None] * 40, "x": np.arange(0.0, 100.0, 2.5)})
    summary = compute_drift(reference, current, threshold=0.5)
    plan = summary.columns[0]
    assert plan.drifted and plan.method == "no values on one side"
    assert not summary.columns[1].drifted


def test_compute_drift__sampled_categorical_verdicts_equal_the_full_data_verdicts() -> None:
    # Given large frames with text (nulls, an unseen category), bool and int categories
    rng = np.random.default_rng(7)
    rows = 50_000

    def frame(shift: float) -> pd.DataFrame:
        text = rng.choice(np.array(["a", "b", "c", None], dtype=object), rows, p=[0.4, 0.3, 0.2, 0.1])
        if shift:
            text[rng.random(rows) < shift] = "new"
        return pd.DataFrame({
            "text col": text,
            "flag": rng.random(rows) < 0.5 + shift,
            "level": rng.integers(0, 3 + int(shift > 0.05), rows),
            "num.x": rng.normal(shift, 1, rows),
        })

    reference, current = frame(0.0), frame(0.1)
    categorical = ["text col", "flag", "level"]
    # When the check runs on samples (then confirms) and on all rows
    fast = compute_drift(reference, current, threshold=0.3, categorical=categorical, sample_rows=5_000)
    full = compute_drift(reference, current, threshold=0.3, categorical=categorical, sample_rows=10**9)
    # Then the verdicts agree, categories scored with Jensen-Shannon on all rows
    assert [c.drifted for c in fast.columns] == [c.drifted for c in full.columns]
    for sampled, exact in zip(fast.columns[:3], full.columns[:3]):
        assert sampled.method == exact.method == "Jensen-Shannon distance"
        assert sampled.exact and sampled.score == pytest.approx(exact.score, rel=1e-9)


# --- Labels and quality ------------------------------------------------------------------


def _served(frame: pd.DataFrame, target: str, wrong: int) -> list:
    """Predictions equal to the truth except the first ``wrong`` rows (another class, or +10)."""
    truth = frame[target].tolist()
    classes = sorted(set(truth), key=str)
    if frame[target].dtype.kind == "f":
        return [value + 10.0 if index < wrong else value for index, value in enumerate(truth)]
    return [classes[(classes.index(v) + 1) % len(classes)] if i < wrong else v for i, v in enumerate(truth)]


def _labels_csv(path: Path, request_id: str, labels) -> Path:
    lines = ["request_id,record,label"] + [f"{request_id},{i},{'' if v is None else v}" for i, v in enumerate(labels)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_join_labels__csv_labels_take_the_targets_type(dataset, tmp_path) -> None:
    # Given served predictions in the user's type and their labels written to CSV (all text there)
    _, current, spec, contract = dataset
    features, _ = drift_columns(contract)
    served = _served(current, spec.target, wrong=5)
    _log(tmp_path / "log", current[features], served)
    labels = _labels_csv(tmp_path / "labels.csv", "req", current[spec.target])
    # When they are joined with the contract's target
    labeled = join_labels(read_prediction_log(tmp_path / "log"), labels, contract.target_column)
    # Then every label is usable and compares in the target's type
    assert (labeled.labeled_rows, labeled.invalid, labeled.unmatched) == (len(current), 0, 0)
    assert labeled.rows["label"].tolist() == current[spec.target].tolist()
    assert {type(v) for v in labeled.rows["label"]} == {type(v) for v in current[spec.target].tolist()}
    quality = window_quality(labeled, spec.task, classes=contract.target_column.categories)
    truth, predicted = current[spec.target].tolist(), served
    if spec.task == "regression":
        assert set(quality) == {"rmse", "mae", "r2"}
        assert quality["mae"] == pytest.approx(metrics.mean_absolute_error(truth, predicted))
        assert quality["r2"] == pytest.approx(metrics.r2_score(truth, predicted))
    else:
        assert quality["accuracy"] == pytest.approx(metrics.accuracy_score(truth, predicted))
        assert quality["balanced_accuracy"] == pytest.approx(metrics.balanced_accuracy_score(truth, predicted))
        binary = len(spec.classes) == 2
        average = {"average": "binary", "pos_label": spec.classes[-1]} if binary else {"average": "macro"}
        assert quality["f1"] == pytest.approx(metrics.f1_score(truth, predicted, **average))


def test_window_quality__bool_labels_from_csv_and_a_chosen_positive_class(tmp_path) -> None:
    truth = [True, False, True, True, False, False, True, False]
    predicted = [True, True, True, False, False, False, True, False]
    _log(tmp_path / "log", pd.DataFrame({"x": range(8)}), predicted)
    labels = _labels_csv(tmp_path / "labels.csv", "req", ["TRUE" if v else "false" for v in truth])
    labeled = join_labels(read_prediction_log(tmp_path / "log"), labels)
    assert labeled.rows["label"].tolist() == truth
    quality = window_quality(labeled, "classification", classes=[False, True])
    assert quality["f1"] == pytest.approx(metrics.f1_score(truth, predicted))
    other = window_quality(labeled, "classification", classes=[False, True], positive=False)
    assert other["recall"] == pytest.approx(metrics.recall_score(truth, predicted, pos_label=False))


def test_window_quality__one_class_window_stays_binary_with_the_targets_classes() -> None:
    rows = pd.DataFrame({"label": ["No"] * 4, "prediction": ["No", "No", "Yes", "No"]})
    quality = window_quality(rows, "classification", classes=["No", "Yes"])
    assert quality["accuracy"] == 0.75 and quality["precision"] == 0.0


def test_window_quality__text_labels_against_int_predictions_compare_by_value() -> None:
    rows = pd.DataFrame({"label": ["0", "1", "2", "2"], "prediction": [0, 1, 2, 1]})
    quality = window_quality(rows, "classification")
    assert quality["accuracy"] == 0.75
    assert quality["f1"] == pytest.approx(metrics.f1_score([0, 1, 2, 2], [0, 1, 2, 1], average="macro"))


def test_join_labels__wrong_type_or_class_is_counted_and_named_not_a_crash(tmp_path) -> None:
    # Given a churn window and labels with an unknown class, an empty cell and a number
    train, current, spec = build("churn")
    contract = draft_contract(train, spec.target, spec.name)
    features, _ = drift_columns(contract)
    rows = current.iloc[:10]
    _log(tmp_path / "log", rows[features], rows[spec.target])
    bad = ["Maybe", None, "3"] + rows[spec.target].tolist()[3:]
    labels = _labels_csv(tmp_path / "labels.csv", "req", bad)
    # When joined
    labeled = join_labels(read_prediction_log(tmp_path / "log"), labels, contract.target_column)
    # Then three are left out, said so, and quality rests on the other seven
    assert (labeled.labeled_rows, labeled.invalid) == (7, 3)
    assert "3 label(s) left out: not one of ['No', 'Yes']" in labeled.summary()
    assert "'Maybe'" in labeled.summary() and "empty" in labeled.summary()
    assert window_quality(labeled, "classification", classes=["No", "Yes"])["accuracy"] == 1.0


def test_join_labels__int_target_refuses_fractions_and_text(tmp_path) -> None:
    train, current, spec = build("wines")
    contract = draft_contract(train, spec.target, spec.name)
    features, _ = drift_columns(contract)
    rows = current.iloc[:6]
    _log(tmp_path / "log", rows[features], rows[spec.target])
    labels = _labels_csv(tmp_path / "labels.csv", "req", ["1.5", "two", "2.0", *rows[spec.target].tolist()[3:]])
    labeled = join_labels(read_prediction_log(tmp_path / "log"), labels, contract.target_column)
    assert labeled.invalid == 2
    assert labeled.rows["label"].tolist()[0] == 2 and isinstance(labeled.rows["label"].tolist()[0], int)


def test_join_labels__request_ids_keep_their_leading_zeros_and_the_last_label_wins(tmp_path) -> None:
    _log(tmp_path / "log", pd.DataFrame({"x": [1.0, 2.0]}), [1, 0], request_id="0042")
    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,record,label\n0042,0,0\n0042,0,1\n0042,1,0\n42,1,1\n")
    labeled = join_labels(read_prediction_log(tmp_path / "log"), labels)
    assert labeled.rows["label"].tolist() == [1, 0]
    assert labeled.unmatched == 1
    assert any("more than once" in problem for problem in labeled.problems)


def test_join_labels__a_record_that_is_not_a_number_is_a_data_error(tmp_path) -> None:
    _log(tmp_path / "log", pd.DataFrame({"x": [1.0]}), [1])
    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,record,label\nreq,first,1\n")
    with pytest.raises(DataError, match="record must hold whole numbers"):
        join_labels(read_prediction_log(tmp_path / "log"), labels)


# --- The retraining file -----------------------------------------------------------------


def _accepted(frame: pd.DataFrame, contract) -> pd.DataFrame:
    """The rows the server accepts: every feature within its block-level range (the shift pushed some out)."""
    inside = pd.Series(True, index=frame.index)
    for column in contract.features:
        if column.type in ("int", "float") and column.min is not None and column.max is not None:
            values = frame[column.name]
            inside &= values.isna() | values.between(column.min, column.max)
    return frame[inside].reset_index(drop=True)


def test_combine_with_labeled__passes_the_training_gate_with_the_files_columns(dataset, tmp_path) -> None:
    # Given the training file and labeled served rows, logged with the features only (no id, no date)
    train, current, spec, contract = dataset
    contract_path = write_contract(contract, tmp_path / "contract.yaml")
    features, _ = drift_columns(contract)
    served = _accepted(current, contract)
    _log(tmp_path / "log", served[features], _served(served, spec.target, wrong=3))
    labels = _labels_csv(tmp_path / "labels.csv", "req", served[spec.target])
    labeled = join_labels(read_prediction_log(tmp_path / "log"), labels, contract.target_column)
    # When the retraining data is built and written as the flow writes it
    combined = combine_with_labeled(train, labeled.rows, contract)
    combined.frame.to_csv(tmp_path / "retrain.csv", index=False)
    reread = load_table(tmp_path / "retrain.csv")
    # Then it has exactly the training file's columns, the labels in the target's type, and passes the gate
    assert list(reread.columns) == list(train.columns)
    assert (combined.added, combined.refused) == (len(served), 0)
    assert reread[spec.target].iloc[len(train):].tolist() == served[spec.target].tolist()
    assert reread[spec.target].dtype == train[spec.target].dtype
    result = validate_with_contract(reread, contract_path, scope="training")
    assert result.success, result.summary()
    for column in spec.excluded:  # ids and dates made from the log, not left empty
        assert reread[column].notna().all()


def test_combine_with_labeled__rows_the_contract_blocks_are_left_out_and_counted(tmp_path) -> None:
    # Given flowers rows (logged by an older server, say), four out of the contract's range for sepal length
    train, current, spec = build("flowers")
    contract = draft_contract(train, spec.target, spec.name)
    contract_path = write_contract(contract, tmp_path / "contract.yaml")
    features, _ = drift_columns(contract)
    current = current.copy()
    limit = next(column.max for column in contract.columns if column.name == "sepal length (cm)")
    current.loc[:3, "sepal length (cm)"] = limit * 1.5
    labeled = current[features].assign(label=current[spec.target], request_id="r", record=range(len(current)),
                                       timestamp="2026-01-02T03:04:05+00:00")
    outside = 4
    # When combined
    combined = combine_with_labeled(train, labeled, contract)
    # Then those rows are left out, the rest added, and the gate passes
    assert (combined.refused, combined.added) == (outside, len(current) - outside)
    assert validate_with_contract(combined.frame, contract_path, scope="training").success


def test_combine_with_labeled__logged_ids_are_kept(tmp_path) -> None:
    train, current, spec = build("churn")
    contract = draft_contract(train, spec.target, spec.name)
    rows = current.iloc[:5]
    _log(tmp_path / "log", rows.drop(columns=[spec.target]), rows[spec.target])
    labeled = join_labels(read_prediction_log(tmp_path / "log"),
                          _labels_csv(tmp_path / "labels.csv", "req", rows[spec.target]), contract.target_column)
    combined = combine_with_labeled(train, labeled.rows, contract).frame
    assert combined["customer_id"].iloc[len(train):].tolist() == rows["customer_id"].tolist()


def test_combine_with_labeled__a_required_column_the_log_lacks_is_named(tmp_path) -> None:
    # Given a contract whose date column is a plain feature-less column of type float (nothing to make it from)
    train, current, spec = build("prices")
    contract = draft_contract(train, spec.target, spec.name)
    train = train.assign(visit=np.arange(len(train), dtype=float))
    columns = [column.model_copy(update={"type": "float"}) if column.name == "visit" else column
               for column in contract.columns]
    contract = contract.model_copy(update={"columns": columns})
    features, _ = drift_columns(contract)
    labeled = current[features].assign(label=current[spec.target], request_id="r", record=range(len(current)))
    with pytest.raises(DataError, match="'visit'.*nullable: true"):
        combine_with_labeled(train, labeled, contract)


# --- The prediction log ------------------------------------------------------------------


def test_prediction_log__nullable_columns_and_labels_keep_their_types(tmp_path) -> None:
    # Given a request frame with pandas' nullable types (pd.NA) and text labels, then a bulk one
    frame = pd.DataFrame({
        "count": pd.array([1, None, 3], dtype="Int64"),
        "flag": pd.array([True, None, False], dtype="boolean"),
        "plan": pd.array(["basic", None, "pro"], dtype="string"),
        "when": pd.to_datetime(["2026-01-01", None, "2026-01-03"]),
    })
    writer = PredictionLogWriter(tmp_path / "log")
    writer.log(request_id="small", model_name="m", model_version="1", inputs=frame, predictions=["Yes", "No", "Yes"])
    bulk = pd.concat([frame] * (BULK_ROWS // 3 + 1), ignore_index=True)
    writer.log(request_id="bulk", model_name="m", model_version="1", inputs=bulk, predictions=["No"] * len(bulk))
    writer.close()
    # When read back, then nothing was dropped and the values are the request's
    assert writer.dropped == 0
    logged = read_prediction_log(tmp_path / "log")
    small = logged[logged["request_id"] == "small"]
    assert small["plan"].tolist()[::2] == ["basic", "pro"] and pd.isna(small["plan"].tolist()[1])
    assert small["flag"].tolist()[::2] == [True, False] and pd.isna(small["flag"].tolist()[1])
    assert small["prediction"].tolist() == ["Yes", "No", "Yes"]
    assert (logged["request_id"] == "bulk").sum() == len(bulk)


def test_prediction_log__a_request_that_cannot_be_encoded_is_dropped_alone(tmp_path) -> None:
    writer = PredictionLogWriter(tmp_path / "log")
    writer.log(request_id="bad", model_name="m", model_version="1", inputs=[{"x": object()}], predictions=[1])
    writer.log(request_id="good", model_name="m", model_version="1", inputs=[{"x": 1.0}], predictions=[0])
    writer.close()
    assert writer.dropped == 1
    assert read_prediction_log(tmp_path / "log")["request_id"].tolist() == ["good"]
