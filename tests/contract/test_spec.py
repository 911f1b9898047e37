"""The contract file: reading it (every problem a ConfigError naming the fix), writing it, the readable diff."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mlops.contract import contract_diff, contract_files, draft_contract, excluded_columns_note, load_contract, write_contract
from mlops.errors import ConfigError

from .frames import REPO

TRAIN = REPO / "data" / "train.csv"
CONTRACT = REPO / "data" / "contracts" / "breast_cancer.yaml"


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return pd.read_csv(TRAIN)


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


def test_load_contract__no_configured_path_raises_config_error():
    with pytest.raises(ConfigError, match="data.contract"):
        load_contract(None)


def test_contract_files__lists_contract_and_suite(settings) -> None:
    assert contract_files(settings) == [settings.data.contract, settings.data.suite]


def test_excluded_columns_note__names_each_column_kept_out_and_why() -> None:
    contract = load_contract(CONTRACT)
    identifier = contract.columns[0].model_copy(update={"role": "id"})

    note = excluded_columns_note(contract.model_copy(update={"columns": [identifier, *contract.columns[1:]]}))

    assert excluded_columns_note(contract) is None
    assert note == f"Not used as features: {identifier.name} (unique per row: an identifier). Set role: feature in the contract to use one."
