"""The contract as a GX suite: severities and scopes, the committed suite, and GX accepting what is generated."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from mlops.contract import check_frame, draft_contract, load_contract, to_suite, validate_frame, write_suite

from .frames import CORPUS_CONTRACT, REPO

SUITE = REPO / "data" / "expectations" / "breast_cancer.json"


def test_to_suite__maps_severities_to_gx_and_scopes() -> None:
    contract = load_contract(CORPUS_CONTRACT)

    training, batch = to_suite(contract, "training"), to_suite(contract, "batch")

    by_check = {(e["meta"]["check"], e["kwargs"].get("column")): e["severity"] for e in training["expectations"]}
    assert by_check[("range", "age")] == "critical" and by_check[("categories", "city")] == "warning"
    assert by_check[("classes", "label")] == "critical" and by_check[("min_rows", None)] == "critical"
    assert all(e["kwargs"].get("column") != "label" for e in batch["expectations"])
    assert "min_rows" not in {e["meta"]["check"] for e in batch["expectations"]}


def test_bundled_suite__is_generated_from_the_contract() -> None:
    # Guards against hand edits drifting from the contract; regenerate with `mlops contract suite`.
    assert json.loads(SUITE.read_text()) == to_suite(load_contract(REPO / "data" / "contracts" / "breast_cancer.yaml"))


def test_write_suite__round_trips_json_that_gx_reads_and_the_training_data_passes(tmp_path: Path) -> None:
    import great_expectations as gx

    train = pd.read_csv(REPO / "data" / "train.csv")
    suite = to_suite(draft_contract(train, target="target", name="drafted"))

    path = write_suite(suite, tmp_path / "drafted.json")

    loaded = json.loads(path.read_text())
    assert loaded == suite
    assert gx.ExpectationSuite(**loaded).name == "drafted"
    result = validate_frame(train, path)
    assert result.success, result.summary()
    assert result.evaluated == len(suite["expectations"])


def test_to_suite__text_bool_and_string_dtype_columns_pass_on_their_own_data() -> None:
    frame = pd.DataFrame(
        {
            "city": ["a", "b", "c"] * 20,
            "code": pd.Series(["x", "y", "z"] * 20, dtype="string"),
            "flag": [True, False, True] * 20,
            "target": ["no", "yes", "no"] * 20,
        }
    )

    suite = to_suite(draft_contract(frame, target="target", name="s"))

    for result in (validate_frame(frame, suite), check_frame(frame, suite)):
        assert result.success, result.summary()
