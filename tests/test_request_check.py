"""The request check every served request passes (mlops.request_check), on its own:
the models are fitted here the way training fits them, the contracts drafted from the
test datasets, and no server is started."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from datasets import build

from mlops.contract import Contract, draft_contract, write_contract
from mlops.errors import ServingError
from mlops.request_check import FeatureSpec, RequestCheck, RequestRefused, check_from_signature, request_check


def typed_features(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """The contract's features as training feeds them: text and nullable bools as objects with NaN."""
    features = frame[[column.name for column in contract.features]].copy()
    for column in contract.features:
        if column.type in ("str", "bool") and features[column.name].isna().any():
            features[column.name] = features[column.name].astype(object).where(features[column.name].notna(), np.nan)
    return features


def fit_pipeline(features: pd.DataFrame, target: pd.Series, contract: Contract) -> Any:
    """A scikit-learn Pipeline as training builds one: impute + scale numbers, one-hot text and bools."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [column.name for column in contract.features if column.type in ("float", "int")]
    categorical = [column.name for column in contract.features if column.type in ("str", "bool")]
    transformers = [("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric)]
    if categorical:
        transformers.append(("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical))
    estimator = LogisticRegression(max_iter=2000) if contract.task == "classification" else Ridge()
    return Pipeline([("preprocess", ColumnTransformer(transformers)), ("model", estimator)]).fit(features, target)


def fitted(name: str) -> tuple[Any, pd.DataFrame, pd.DataFrame, Contract]:
    """(pipeline, training features, current features, contract) for one of tests/datasets.py."""
    train, current, spec = build(name)
    contract = draft_contract(train, spec.target, name)
    features = typed_features(train, contract)
    return fit_pipeline(features, train[spec.target], contract), features, typed_features(current, contract), contract


def example_rows(features: pd.DataFrame) -> pd.DataFrame:
    """Three complete rows, as training logs its input example (MLflow infers the signature from them)."""
    return features.dropna().head(3)


def model_arguments(pipeline: Any, features: pd.DataFrame) -> dict[str, Any]:
    """What training passes to mlflow.sklearn.log_model / save_model: signature, example, skops."""
    import skops.io
    from mlflow.models import infer_signature

    example = example_rows(features)
    return {
        "signature": infer_signature(example, pipeline.predict(example)),
        "input_example": example,
        "serialization_format": "skops",
        "skops_trusted_types": skops.io.get_untrusted_types(data=skops.io.dumps(pipeline)),
        "pip_requirements": ["scikit-learn"],
    }


def save_model(pipeline: Any, features: pd.DataFrame, folder: Path) -> Path:
    """The model as MLflow writes it (signature and input example), without a registry."""
    import mlflow.sklearn

    mlflow.sklearn.save_model(pipeline, str(folder), **model_arguments(pipeline, features))
    return folder


REPO = Path(__file__).resolve().parents[1]
BREAST_CANCER_CONTRACT = REPO / "data" / "contracts" / "breast_cancer.yaml"


def as_json_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as a client sends them: JSON (NaN becomes null)."""
    import json

    return json.loads(frame.to_json(orient="records"))


def contract_check(name: str, **changes: dict[str, Any]) -> tuple[RequestCheck, Any, pd.DataFrame, Contract]:
    """The check of one dataset's model; ``changes`` update contract columns by name."""
    from mlflow.models import infer_signature

    pipeline, features, _, contract = fitted(name)
    columns = [column.model_copy(update=changes.get(column.name, {})) for column in contract.columns]
    contract = contract.model_copy(update={"columns": columns})
    return check_from_signature(infer_signature(example_rows(features)), contract), pipeline, features, contract


@pytest.fixture(scope="module")
def flowers():
    return contract_check("flowers")


@pytest.fixture(scope="module")
def churn():
    return contract_check("churn", paperless={"nullable": True})


@pytest.fixture(scope="module")
def prices():
    return contract_check("prices")


def _record(features: pd.DataFrame, row: int = 0, **changes: Any) -> dict[str, Any]:
    return {**as_json_records(features.iloc[[row]])[0], **changes}


# --- Accepted, and the frame the model gets -------------------------------------------------


@pytest.mark.parametrize("name", ["flowers", "wines", "churn", "prices"])
def test_records__training_rows_as_json_score_as_in_training(name: str):
    check, pipeline, features, _ = contract_check(name)

    checked = check.records(as_json_records(features))

    assert list(checked.frame.columns) == check.names == list(features.columns)
    np.testing.assert_array_equal(pipeline.predict(checked.frame), pipeline.predict(features))


def test_records__text_categories_nulls_and_missing_keys_are_accepted(flowers):
    check, pipeline, features, _ = flowers
    full = _record(features, garden="north")
    nulls = {**full, "garden": None, "petal width (cm)": None}
    missing = {key: value for key, value in full.items() if key not in ("garden", "petal width (cm)")}

    checked = check.records([full, nulls, missing])

    frame = checked.frame
    assert frame["garden"].dtype == object and frame["garden"].iloc[0] == "north"
    assert all(value is np.nan for value in frame["garden"].iloc[1:])  # NaN, never None, for the encoder
    assert frame["petal width (cm)"].dtype == "float64" and frame["petal width (cm)"].iloc[1:].isna().all()
    assert len(pipeline.predict(frame)) == 3
    assert checked.warnings == {}


def test_records__numbers_keep_their_types(prices):
    check, _, features, _ = prices
    record = _record(features, age=50, s1=150.0)  # an integral float for an int feature

    frame = check.records([record, record]).frame

    assert frame["age"].dtype == "int64"
    assert frame["s1"].dtype == "float64" and frame["índice_masa"].dtype == "float64"
    assert frame["sex"].dtype == object and frame["smoker"].dtype == bool


def test_records__bools_with_nulls_are_objects_holding_true_false_and_nan(churn):
    check, _, features, _ = churn

    with_null = check.records([_record(features, paperless=True), _record(features, paperless=None)]).frame
    without = check.records([_record(features, paperless=False)]).frame

    assert with_null["paperless"].dtype == object
    assert with_null["paperless"].iloc[0] is True and with_null["paperless"].iloc[1] is np.nan
    assert without["paperless"].dtype == bool


def test_records__unseen_category_is_served_and_counted(flowers):
    check, pipeline, features, _ = flowers
    records = [_record(features, garden="west"), _record(features, garden="west"), _record(features)]

    checked = check.records(records)

    assert checked.warnings == {"garden": 2}
    assert len(pipeline.predict(checked.frame)) == 3  # one-hot ignores the unknown value


def test_records__warn_level_range_is_served_and_counted():
    check, _, features, _ = contract_check("flowers", **{"sepal length (cm)": {"severity": {"range": "warn"}}})

    checked = check.records([_record(features, **{"sepal length (cm)": 100.0}), _record(features)])

    assert checked.warnings == {"sepal length (cm)": 1}


def test_records__extra_keys_are_ignored(flowers):
    check, _, features, _ = flowers

    frame = check.records([_record(features, flower_id="F1", note={"any": "thing"})]).frame

    assert list(frame.columns) == check.names


# --- Refused, named -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "change", "message"),
    [
        ("flowers", {"sepal length (cm)": "5.1"}, "records[1].sepal length (cm): '5.1' is not a number"),
        ("flowers", {"sepal length (cm)": True}, "records[1].sepal length (cm): True is not a number"),
        ("flowers", {"sepal length (cm)": [5.1]}, "records[1].sepal length (cm): [5.1] is not a number"),
        ("flowers", {"sepal length (cm)": None}, "records[1].sepal length (cm): missing or null, but the feature is required"),
        ("flowers", {"sepal length (cm)": float("inf")}, "records[1].sepal length (cm): inf is not a finite number"),
        ("flowers", {"sepal length (cm)": 10**400}, "records[1].sepal length (cm): 1000000"),
        ("flowers", {"sepal length (cm)": 100.0}, "records[1].sepal length (cm): 100.0 is outside [3.96, 8.04001]"),
        ("flowers", {"garden": 3}, "records[1].garden: 3 is not text"),
        ("prices", {"age": 40.5}, "records[1].age: 40.5 is not an integer"),
        ("prices", {"age": True}, "records[1].age: True is not an integer"),
        ("prices", {"age": 10**400}, "is too large for a number"),
        ("prices", {"smoker": "yes"}, "records[1].smoker: 'yes' is not true or false"),
        ("prices", {"smoker": 1}, "records[1].smoker: 1 is not true or false"),
        ("prices", {"smoker": None}, "records[1].smoker: missing or null, but the feature is required"),
        ("churn", {"plan": None}, "records[1].plan: missing or null, but the feature is required"),
    ],
)
def test_records__a_bad_value_is_refused_naming_record_and_column(dataset: str, change: dict, message: str):
    check, _, features, _ = contract_check(dataset, paperless={"nullable": True})
    records = [_record(features, 0), _record(features, 1, **change)]

    with pytest.raises(RequestRefused) as refused:
        check.records(records)

    assert refused.value.status == 422
    assert message in str(refused.value)


def test_records__a_missing_required_feature_is_refused():
    check, _, features, _ = contract_check("flowers")
    record = _record(features)
    del record["sepal width (cm)"]

    with pytest.raises(RequestRefused, match=r"records\[0\]\.sepal width \(cm\): missing or null"):
        check.records([record])


def test_records__block_level_category_is_refused_as_the_contract_says():
    check, _, features, _ = contract_check("flowers", garden={"severity": {"categories": "block"}})
    records = [_record(features, i, garden="north") for i in range(3)] + [_record(features, 3, garden="west")]

    with pytest.raises(RequestRefused) as refused:
        check.records(records)

    assert "records[3].garden: 'west' is not one of ['east', 'north', 'south']" in str(refused.value)


def test_records__names_up_to_three_records_and_one_message_per_column(flowers):
    check, _, features, _ = flowers
    records = [_record(features, 0, garden=1, **{"sepal width (cm)": "x"}) for _ in range(50)]

    with pytest.raises(RequestRefused) as refused:
        check.records(records)

    message = str(refused.value)
    assert message.startswith("2 feature(s) refused: ")
    assert "(50 records: 0, 1, 2, …)" in message
    assert message.count("sepal width (cm)") == 1 and message.count("garden") == 1


def test_records__200000_empty_records_cost_bounded_time_and_message(flowers):
    import time

    check = flowers[0]
    started = time.perf_counter()

    with pytest.raises(RequestRefused) as refused:
        check.records([{}] * 200_000)

    assert time.perf_counter() - started < 5.0
    assert len(str(refused.value)) < 1000
    assert "200000 records" in str(refused.value)


@pytest.mark.parametrize(
    ("records", "status", "message"),
    [
        ([], 422, "'records' is empty"),
        (None, 400, "'records' is missing"),
        ({"a": 1}, 400, "'records' is an object, not a list"),
        ("x", 400, "'records' is a string, not a list"),
        ([{}, 3, "x"], 400, "records[1] is a number, records[2] is a string"),
    ],
)
def test_records__a_body_of_the_wrong_shape_is_refused(flowers, records: Any, status: int, message: str):
    with pytest.raises(RequestRefused) as refused:
        flowers[0].records(records)

    assert refused.value.status == status
    assert message in str(refused.value)


def test_records__breast_cancer_edge_cases_are_decided_one_way():
    """The old fast path and per-record schema disagreed on nothing; the one check decides each."""
    from mlflow.models import infer_signature

    from mlops.contract import load_contract

    features = pd.read_csv(REPO / "data" / "train.csv").drop(columns="target")
    check = check_from_signature(infer_signature(features.head(3)), load_contract(BREAST_CANCER_CONTRACT))
    base = as_json_records(features.iloc[:2])
    accepted = [{}, {"mean_radius": 14}, {"mean_radius": 4.87}, {"unknown": "extra"}]
    refused = [
        {"mean_radius": True}, {"mean_radius": "14.1"}, {"mean_radius": None}, {"mean_radius": float("nan")},
        {"mean_radius": float("inf")}, {"mean_area": 1e6}, {"mean_area": -1.0}, {"mean_radius": 1e3}, {"mean_radius": 0.0},
        {"mean_radius": [1.0]},
    ]  # fmt: skip

    for change in accepted:
        assert len(check.records([base[0], {**base[1], **change}]).frame) == 2
    for change in refused:
        name = next(iter(change))
        with pytest.raises(RequestRefused, match=rf"records\[1\]\.{name}: "):
            check.records([base[0], {**base[1], **change}])


def test_records__an_old_contract_with_fractional_integer_bounds_still_checks():
    check, _, features, _ = contract_check("prices", age={"min": 18.2, "max": 79.8})

    assert len(check.records([_record(features, age=19)]).frame) == 1
    with pytest.raises(RequestRefused, match=r"records\[0\]\.age: 18\.0 is outside \[18\.2, 79\.8\]"):
        check.records([_record(features, age=18)])


# --- Arrow ------------------------------------------------------------------------------------


def _arrow(frame: pd.DataFrame) -> bytes:
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize("name", ["flowers", "churn", "prices"])
def test_arrow__the_same_frame_as_json(name: str):
    check, pipeline, features, _ = contract_check(name)

    from_arrow = check.arrow(_arrow(features)).frame
    from_json = check.records(as_json_records(features)).frame

    assert list(from_arrow.columns) == check.names
    np.testing.assert_array_equal(pipeline.predict(from_arrow), pipeline.predict(from_json))
    for name_ in check.names:
        assert from_arrow[name_].dtype.kind == from_json[name_].dtype.kind or {from_arrow[name_].dtype.kind, from_json[name_].dtype.kind} <= set("iuf")


def test_arrow__category_columns_and_nulls_are_accepted(flowers):
    check, pipeline, features, _ = flowers
    frame = features.head(20).astype({"garden": "category"})

    checked = check.arrow(_arrow(frame))

    assert checked.frame["garden"].dtype == object
    assert checked.frame["garden"].isna().sum() == frame["garden"].isna().sum()
    assert all(value is np.nan for value in checked.frame["garden"][checked.frame["garden"].isna()])


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        (lambda f: f.drop(columns="garden"), 422, "Missing feature column(s): garden"),
        (lambda f: f.assign(garden=1), 422, "rows.garden: the column holds int64, not text"),
        (lambda f: f.assign(**{"sepal length (cm)": "x"}), 422, "rows.sepal length (cm): the column holds string, not a number"),
        (lambda f: f.assign(**{"sepal width (cm)": np.nan}), 422, "rows[0].sepal width (cm): missing or null"),
        (lambda f: f.assign(**{"sepal width (cm)": np.inf}), 422, "rows[0].sepal width (cm): inf is not a finite number"),
        (lambda f: f.assign(**{"sepal width (cm)": 99.0}), 422, "rows[0].sepal width (cm): 99.0 is outside"),
    ],
)
def test_arrow__a_bad_column_is_refused_naming_it(flowers, change, status: int, message: str):
    with pytest.raises(RequestRefused) as refused:
        flowers[0].arrow(_arrow(change(flowers[2].head(5))))

    assert refused.value.status == status
    assert message in str(refused.value)


def test_arrow__a_body_that_is_not_arrow_is_400(flowers):
    with pytest.raises(RequestRefused, match="not an Arrow IPC stream") as refused:
        flowers[0].arrow(b"not arrow")

    assert refused.value.status == 400


# --- Building the check ---------------------------------------------------------------------


def test_check_from_signature__without_a_contract_the_signature_decides(prices):
    from mlflow.models import infer_signature

    _, _, features, _ = prices
    check = check_from_signature(infer_signature(example_rows(features)))

    kinds = {feature.name: feature.type for feature in check.features}
    assert kinds["age"] == "int" and kinds["sex"] == "str" and kinds["smoker"] == "bool" and kinds["s1"] == "float"
    assert check.task is None and all(not feature.nullable for feature in check.features)
    assert len(check.records(as_json_records(features.head(5))).frame) == 5


def test_check_from_signature__a_contract_of_another_dataset_is_left_aside(prices):
    from mlflow.models import infer_signature

    _, _, features, _ = prices
    flowers_contract = fitted("flowers")[3]

    check = check_from_signature(infer_signature(example_rows(features)), flowers_contract)

    assert check.source == "the model's signature"


def test_check_from_signature__a_contract_that_does_not_fit_the_model_is_refused(flowers):
    from mlflow.models import infer_signature

    _, _, features, contract = flowers
    signature = infer_signature(example_rows(features.drop(columns="garden")))

    with pytest.raises(ServingError, match=r"contract's feature\(s\) \['garden'\] are not inputs of the model"):
        check_from_signature(signature, contract)


def test_check_from_signature__no_signature_is_refused():
    with pytest.raises(ServingError, match="has no signature"):
        check_from_signature(None)


def test_request_check__reads_the_model_folder_and_the_contract(tmp_path: Path):
    pipeline, features, _, contract = fitted("churn")
    model_dir = save_model(pipeline, features, tmp_path / "model")
    contract_path = write_contract(contract, tmp_path / "churn.yaml")

    check = request_check(model_dir, contract_path)

    assert check.names == list(features.columns) and check.task == "classification"
    plan = next(feature for feature in check.features if feature.name == "plan")
    assert plan.categories == ("basic", "plus", "pro") and not plan.categories_block


def test_json_schema__lists_every_feature_with_type_range_categories_and_an_example_that_passes():
    check, _, features, _ = contract_check("flowers", garden={"severity": {"categories": "block"}})

    schema = check.json_schema()

    properties = schema["properties"]
    assert list(properties) == check.names
    assert properties["sepal length (cm)"] == {
        "type": "number", "title": "sepal length (cm)", "minimum": 3.96, "maximum": 8.04001,
    }  # fmt: skip
    assert properties["garden"]["enum"] == ["east", "north", "south", None] and properties["garden"]["nullable"]
    assert "petal width (cm)" not in schema["required"] and "sepal length (cm)" in schema["required"]
    assert len(check.records([schema["example"]]).frame) == 1


def test_json_schema__integers_booleans_and_warn_level_categories():
    schema = contract_check("prices")[0].json_schema()["properties"]

    assert schema["age"]["type"] == "integer" and isinstance(schema["age"]["minimum"], int)
    assert schema["smoker"]["type"] == "boolean"
    assert schema["clinic"]["x-categories"] == ["Bergen", "Oslo", "Tromsø"] and "enum" not in schema["clinic"]


def test_feature_spec__example_is_inside_its_bounds():
    spec = FeatureSpec("year", "int", minimum=2006.8, maximum=2009.2)

    assert spec.example() == 2008


def test_check_from_contract__accepts_what_the_served_model_accepts(churn):
    from mlops.request_check import check_from_contract

    served, _, features, contract = churn
    check = check_from_contract(contract)
    records = as_json_records(features.head(10))

    assert check.names == served.names
    assert check.records(records).frame.equals(served.records(records).frame)
