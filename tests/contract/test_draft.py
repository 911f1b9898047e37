"""Drafting a contract from training data: types, ranges, categories, nulls, task and roles; and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mlops.contract import draft_contract, load_contract, to_suite
from mlops.errors import ConfigError

from .frames import REPO

TRAIN = REPO / "data" / "train.csv"
CONTRACT = REPO / "data" / "contracts" / "breast_cancer.yaml"
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
