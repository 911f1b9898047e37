"""The README's "Bring your own data" recipe on tables that are not the bundled one.

Each dataset of :mod:`tests.datasets` (text labels, many classes, nulls, text and bool
features, integer columns, identifiers, dates, awkward names, imbalance, regression)
goes through the whole loop as a user runs it, in a project folder of its own with a
config naming only the data file and the target:

    mlops contract draft FILE --write → mlops train → mlops serve (JSON and Arrow over HTTP)
    → mlops monitor (the shifted batch the server logged; drift → retrain) → mlops score

The answers are checked, not only the status codes: labels in the user's type, the
probability columns named after the classes, numbers for regression.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from datasets import DATASETS, DatasetSpec, build, write

from mlops.contract import draft_contract, load_contract
from mlops.data import load_table
from mlops.errors import DataError
from mlops.metrics import score_labels
from mlops.training import split_holdout

MLOPS = Path(sys.executable).with_name("mlops")
ARROW_STREAM = "application/vnd.apache.arrow.stream"


def run_mlops(project: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MLOPS_")}
    return subprocess.run(
        [str(MLOPS), *args], capture_output=True, text=True, cwd=project, env=environment, timeout=timeout
    )


def project_for(name: str, folder: Path, suffix: str = ".csv", extra: str = "") -> tuple[Path, Path, DatasetSpec]:
    """A user's project: the data file and an mlops.yaml naming only it and its target."""
    train, current, spec = write(name, folder, suffix)
    (folder / "mlops.yaml").write_text(f"data:\n  training: {train.name}\n  target: {spec.target}\n{extra}")
    return train, current, spec


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stdout + result.stderr
    return " ".join(result.stdout.split())  # the console wraps long lines


# --- Drafting, splitting, metrics: no servers ------------------------------------------


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_draft__takes_task_types_and_roles_from_the_data(name, tmp_path):
    train_path, _, spec = write(name, tmp_path)
    frame = pd.read_csv(train_path)

    contract = draft_contract(frame, spec.target, name)

    assert contract.task == spec.task
    assert sorted(column.name for column in contract.excluded) == sorted(spec.excluded)
    if spec.classes:
        assert contract.target_column.categories == list(spec.classes)
    for column in contract.columns:
        if column.type == "int" and column.min is not None:
            assert isinstance(column.min, int) and isinstance(column.max, int), column
    for text in spec.text_features:
        assert next(c for c in contract.columns if c.name == text).type == "str"


def test_stratified_split__every_class_on_both_sides_whatever_the_order():
    train, _, spec = build("churn")
    split = split_holdout(train, spec.target, 0.2, seed=42, task="classification")
    again = split_holdout(train.sample(frac=1.0, random_state=1), spec.target, 0.2, seed=42, task="classification")

    assert set(split.y_holdout) == set(split.y_train) == {"No", "Yes"}
    assert sorted(split.x_holdout.index) == sorted(again.x_holdout.index)


def test_stratified_split__a_class_too_small_is_named():
    train, _, spec = build("flowers")
    rare = train.drop(train.index[train[spec.target] == "virginica"][2:])
    with pytest.raises(DataError, match="'virginica' \\(2 rows\\)"):
        split_holdout(rare, spec.target, 0.2, seed=42, task="classification", min_train=3)


def test_metrics__multi_class_is_macro_and_binary_text_labels_have_a_positive_class():
    multi = score_labels(["a", "b", "c", "c"], ["a", "c", "c", "c"], "classification")
    binary = score_labels(["No", "Yes", "Yes"], ["No", "Yes", "No"], "classification")

    assert multi["f1"] == pytest.approx((1 + 0 + 0.8) / 3)
    assert binary["recall"] == pytest.approx(0.5)  # of "Yes", the last sorted label


# --- The whole loop as a user runs it ------------------------------------------------------


def _records(frame: pd.DataFrame, contract) -> list[dict]:
    """Rows as a client sends them: the features only, JSON nulls for missing values."""
    features = [column.name for column in contract.features]
    return json.loads(frame[features].to_json(orient="records"))


def _serve(project: Path, port: int) -> subprocess.Popen[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MLOPS_")}
    process = subprocess.Popen(
        [str(MLOPS), "serve", "--port", str(port)], cwd=project, env=environment, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    from mlops.serving import wait_until_ready

    try:
        wait_until_ready(f"http://127.0.0.1:{port}", 180, process=process)
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError(f"mlops serve did not get ready:\n{process.communicate()[0]}") from None
    return process


def _stop(process: subprocess.Popen[str]) -> str:
    os.killpg(process.pid, signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
    return output


def _check_answer(answer: dict, rows: int, spec: DatasetSpec) -> None:
    predictions = answer["predictions"]
    assert len(predictions) == rows
    if spec.task == "regression":
        assert all(isinstance(value, float) for value in predictions)
        assert not answer.get("probabilities")
        return
    assert set(predictions) <= set(spec.classes)
    assert all(type(label) is type(spec.classes[0]) for label in predictions)
    assert answer["classes"] == list(spec.classes)
    assert np.allclose(np.asarray(answer["probabilities"]).sum(axis=1), 1.0)


def _check_arrow(url: str, frame: pd.DataFrame, contract, spec: DatasetSpec) -> None:
    import pyarrow as pa

    features = [column.name for column in contract.features]
    table = pa.Table.from_pandas(frame[features], preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    response = httpx.post(f"{url}/arrow/predict", content=sink.getvalue().to_pybytes(),
                          headers={"content-type": ARROW_STREAM}, timeout=60)
    assert response.status_code == 200, response.text
    result = pa.ipc.open_stream(response.content).read_all().to_pandas()
    assert len(result) == len(frame)
    if spec.task == "regression":
        assert result["prediction"].dtype.kind == "f"
    else:
        assert set(result["prediction"]) <= set(spec.classes)
        assert [f"probability_{label}" for label in spec.classes] == list(result.columns[1:])


def _serve_and_query(project: Path, current: pd.DataFrame, contract, spec: DatasetSpec) -> None:
    from mlops.serving import free_port

    port = free_port()
    server = _serve(project, port)
    url = f"http://127.0.0.1:{port}"
    try:
        records = _records(current, contract)
        one = httpx.post(f"{url}/predict", json={"records": records[:1]}, timeout=60)
        assert one.status_code == 200, one.text
        _check_answer(one.json(), 1, spec)
        bulk = httpx.post(f"{url}/predict", json={"records": records}, timeout=60)
        assert bulk.status_code == 200, bulk.text
        _check_answer(bulk.json(), len(records), spec)
        assert httpx.post(f"{url}/predict", json={"records": []}, timeout=30).status_code in (400, 422)
        _check_arrow(url, current, contract, spec)
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200  # still serving after a bad request
    finally:
        output = _stop(server)
    assert "Traceback" not in output, output


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DATASETS))
def test_bring_your_own_data__the_whole_loop(name, tmp_path):
    project = tmp_path / name
    suffix = ".parquet" if name == "flowers" else ".csv"  # one dataset goes round the loop as Parquet files
    extra = "monitoring:\n  drift_share_threshold: 0.05\n"
    train_path, current_path, spec = project_for(name, project, suffix=suffix, extra=extra)

    drafted = _ok(run_mlops(project, "contract", "draft", train_path.name, "--write"))
    assert f"({spec.task}, target '{spec.target}')" in drafted
    contract_path = project / "data" / "contracts" / f"{name}.yaml"
    contract = load_contract(contract_path)
    for excluded in spec.excluded:
        assert excluded in drafted

    trained = _ok(run_mlops(project, "train"))
    assert "promoted to champion" in trained
    model_name = f"{name}-{'classifier' if spec.task == 'classification' else 'regressor'}"
    assert model_name in trained

    current = load_table(current_path)
    _serve_and_query(project, current, contract, spec)

    monitored = _ok(run_mlops(project, "monitor"))
    assert "retrain" in monitored.lower(), monitored

    output = project / "scores.csv"
    _ok(run_mlops(project, "score", current_path.name, "--output", str(output)))
    scores = pd.read_csv(output)
    assert len(scores) == len(current)
    if spec.task == "regression":
        assert scores["prediction"].dtype.kind == "f"
    else:
        assert set(scores["prediction"]) <= set(spec.classes)
        assert [f"probability_{label}" for label in spec.classes] == [
            column for column in scores.columns if column.startswith("probability_")
        ]


# --- Bad input: one message, exit 2, nothing registered -------------------------------------


def _registered_versions(project: Path) -> int:
    import sqlite3

    database = project / ".mlops" / "mlflow.db"
    if not database.is_file():
        return 0
    with sqlite3.connect(database) as connection:
        return connection.execute("select count(*) from model_versions").fetchone()[0]


BAD_INPUTS = {
    "single class": (lambda frame: frame.assign(species="setosa"), "column 'species'; min_value=2, observed=1", 1),
    "rare class": (lambda frame: frame.drop(frame.index[frame["species"] == "virginica"][2:]), "'virginica'", 2),
    "all-null feature": (lambda frame: frame.assign(**{"sepal width (cm)": np.nan}), "sepal width (cm)", 2),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_training_data__a_message_naming_the_problem_and_nothing_registered(case, tmp_path):
    change, message, code = BAD_INPUTS[case]
    project = tmp_path / "project"
    project.mkdir()
    train, _, spec = build("flowers")
    change(train).to_csv(project / "flowers.csv", index=False)
    (project / "mlops.yaml").write_text(f"data:\n  training: flowers.csv\n  target: {spec.target}\n")

    drafted = run_mlops(project, "contract", "draft", "flowers.csv", "--write")
    contract_path = project / "data" / "contracts" / "flowers.yaml"
    if case == "all-null feature":  # the draft keeps it out of the features; using it anyway is refused
        assert "sepal width (cm) (no values)" in drafted.stdout
        import yaml

        raw = yaml.safe_load(contract_path.read_text())
        for column in raw["columns"]:
            column.pop("role", None) if column["name"] == "sepal width (cm)" else None
        contract_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    result = run_mlops(project, "train")

    assert result.returncode == code, result.stdout + result.stderr
    assert message in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert _registered_versions(project) == 0


def test_config__task_contradicting_the_contract_names_both(tmp_path):
    from mlops.config import load_settings
    from mlops.errors import ConfigError

    project = tmp_path / "project"
    train_path, _, spec = project_for("prices", project)
    contract = draft_contract(pd.read_csv(train_path), spec.target, "prices")
    (project / "data" / "contracts").mkdir(parents=True)
    from mlops.contract import write_contract

    write_contract(contract, project / "data" / "contracts" / "prices.yaml")
    (project / "mlops.yaml").write_text(
        f"data:\n  training: {train_path.name}\n  target: {spec.target}\nmodel:\n  task: classification\n"
    )
    with pytest.raises(ConfigError, match="model.task is 'classification'.*says 'regression'"):
        load_settings(project / "mlops.yaml")


def test_config__a_new_dataset_gets_its_own_contract_and_names(tmp_path, monkeypatch):
    from mlops.config import load_settings

    (tmp_path / "mlops.yaml").write_text("data:\n  training: Bank Marketing.csv\n  target: y\n")
    monkeypatch.chdir(tmp_path)

    settings = load_settings(state_dir="state")

    assert settings.data.contract == tmp_path / "data" / "contracts" / "bank_marketing.yaml"
    assert (settings.model.name, settings.model.experiment) == ("bank-marketing-classifier", "bank-marketing")
    assert settings.state_dir == tmp_path / "state"
