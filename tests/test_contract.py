"""The data contract: drafting, the readable diff, file errors, the GX suite and the serving schema."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mlops.contract import (
    contract_diff,
    contract_files,
    draft_contract,
    load_contract,
    to_suite,
    validate_with_contract,
    write_contract,
)
from mlops.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "data" / "train.csv"
CONTRACT = REPO / "data" / "contracts" / "breast_cancer.yaml"
CORPUS_CONTRACT = REPO / "tests" / "corpus" / "contract.yaml"
MLOPS = Path(sys.executable).with_name("mlops")


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return pd.read_csv(TRAIN)


def test_bundled_contract__is_the_draft_of_train_csv(train: pd.DataFrame) -> None:
    # Regenerate with `mlops contract draft data/train.csv --write` (review the diff first).
    assert load_contract(CONTRACT) == draft_contract(train, target="target", name="breast_cancer")


def test_draft_contract__infers_types_ranges_categories_nulls_and_task() -> None:
    frame = pd.DataFrame(
        {
            "x": [10.0, 20.0] * 30,
            "n": [1, 2, 3] * 20,
            "city": ["a", "b", None] * 20,
            "flag": [True, False] * 30,
            "target": ["no", "yes"] * 30,
        }
    )

    contract = draft_contract(frame, target="target", name="s", margin=0.5)

    columns = {column.name: column for column in contract.columns}
    assert (contract.task, contract.min_rows) == ("classification", 50)
    assert (columns["x"].type, columns["x"].min, columns["x"].max) == ("float", 5.0, 25.0)
    assert (columns["n"].type, columns["n"].min, columns["n"].max) == ("int", 0.0, 4.0)
    assert (columns["city"].categories, columns["city"].nullable, columns["city"].max_null_rate) == (
        ["a", "b"],
        True,
        0.6667,
    )
    assert columns["flag"].type == "bool"
    assert (columns["target"].categories, columns["target"].severity_of("categories")) == (["no", "yes"], "block")
    assert columns["city"].severity_of("categories") == "warn"


def test_draft_contract__many_distinct_float_targets_is_regression() -> None:
    frame = pd.DataFrame({"x": range(100), "y": [value * 0.5 for value in range(100)]})

    contract = draft_contract(frame, target="y", name="r")

    assert contract.task == "regression"
    assert "expect_column_unique_value_count_to_be_between" not in [
        e["type"]
        for e in to_suite(contract)["expectations"]
        if e["kwargs"].get("column") == "y" and e["severity"] == "critical"
    ]


def test_draft_contract__unknown_target_raises_config_error(train: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="label"):
        draft_contract(train, target="label", name="s")


def test_contract_diff__names_what_would_change(train: pd.DataFrame) -> None:
    current = load_contract(CONTRACT)
    widened = draft_contract(train, target="target", name="breast_cancer", margin=0.2)

    diff = contract_diff(current, widened, CONTRACT)

    assert diff.startswith(f"--- {CONTRACT} (current)")
    assert "-  min: 4.8681" in diff and "+  min: 2.7552" in diff
    assert contract_diff(current, current) == ""


def test_write_contract__round_trips(tmp_path: Path, train: pd.DataFrame) -> None:
    contract = draft_contract(train.head(60), target="target", name="small")

    path = write_contract(contract, tmp_path / "c.yaml")

    assert load_contract(path) == contract
    assert path.read_text().startswith("# Data contract")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("name: [unclosed", "not valid YAML"),
        ("name: s\ntarget: y\ntask: clustering\ncolumns: []\n", "task"),
        ("name: s\ntarget: y\ntask: regression\ncolumns:\n- {name: x, type: float, colour: red}\n", "colour"),
        (
            "name: s\ntarget: y\ntask: regression\ncolumns:\n- {name: x, type: float, severity: {range: stop}}\n",
            "range",
        ),
        ("name: s\ntarget: y\ntask: regression\ncolumns:\n- {name: x, type: float}\n", "target 'y' is not among"),
    ],
)
def test_load_contract__invalid_file_raises_config_error_naming_the_problem(tmp_path: Path, content: str, problem: str):
    path = tmp_path / "c.yaml"
    path.write_text(content)

    with pytest.raises(ConfigError, match=problem) as caught:
        load_contract(path)

    assert str(path) in str(caught.value) and "mlops contract draft" in str(caught.value)


def test_load_contract__missing_file_raises_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_contract(tmp_path / "none.yaml")


def test_to_suite__maps_severities_to_gx_and_scopes() -> None:
    contract = load_contract(CORPUS_CONTRACT)

    training, batch = to_suite(contract, "training"), to_suite(contract, "batch")

    by_check = {(e["meta"]["check"], e["kwargs"].get("column")): e["severity"] for e in training["expectations"]}
    assert by_check[("range", "age")] == "critical" and by_check[("categories", "city")] == "warning"
    assert by_check[("classes", "label")] == "critical" and by_check[("min_rows", None)] == "critical"
    assert all(e["kwargs"].get("column") != "label" for e in batch["expectations"])
    assert "min_rows" not in {e["meta"]["check"] for e in batch["expectations"]}


def test_validate_with_contract__severity_override_turns_a_block_into_a_warning(tmp_path: Path, train: pd.DataFrame):
    contract = load_contract(CONTRACT)
    columns = [
        column.model_copy(update={"severity": {"range": "warn"}}) if column.name == "mean_area" else column
        for column in contract.columns
    ]
    path = write_contract(contract.model_copy(update={"columns": columns}), tmp_path / "c.yaml")
    frame = train.copy()
    frame.loc[:2, "mean_area"] = 1e6

    result = validate_with_contract(frame, path)

    assert result.success
    [warning] = result.warnings
    assert (warning.column, warning.unexpected_count, warning.severity) == ("mean_area", 3, "warn")
    assert "passed with 1 warning" in result.summary()


def test_contract_files__lists_contract_and_suite(settings) -> None:
    assert contract_files(settings) == [settings.data.contract, settings.data.suite]


# --- CLI -------------------------------------------------------------------------------


def _mlops(*args: str, tmp_path: Path, contract: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "MLOPS_STATE_DIR": str(tmp_path / "state"), "MLOPS_DATA__CONTRACT": str(contract)}
    environment["MLOPS_DATA__SUITE"] = str(contract.with_suffix(".json"))
    return subprocess.run([str(MLOPS), *args], capture_output=True, text=True, cwd=REPO, env=environment)


def test_cli_contract_draft__writes_then_prints_a_diff_and_writes_nothing(tmp_path: Path):
    contract = tmp_path / "contracts" / "breast_cancer.yaml"

    first = _mlops("contract", "draft", str(TRAIN), tmp_path=tmp_path, contract=contract)
    assert first.returncode == 0, first.stderr
    assert "Contract written" in first.stdout and contract.is_file() and contract.with_suffix(".json").is_file()
    written = contract.read_text()

    again = _mlops("contract", "draft", str(TRAIN), "--margin", "0.2", tmp_path=tmp_path, contract=contract)
    assert again.returncode == 0, again.stderr
    assert "+  min: 2.7552" in again.stdout and "Nothing written" in again.stdout
    assert contract.read_text() == written
    assert "Traceback" not in first.stderr + again.stderr
