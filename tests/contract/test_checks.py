"""The vectorised contract checks give exactly GX's findings: GX is the reference.

Every readable file of the malformed corpus, as read (so numeric text columns reach
the checks unparsed) and as the contract gate sees it, in both scopes; and seeded
random frames with nulls, infinities, out-of-range values, unknown categories, mixed
``object`` columns and unusual dtypes (which go to GX).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops.contract import check_frame, load_contract, to_suite, validate_frame
from mlops.contract.validate import _parse_numbers
from mlops.data import load_table

from .frames import CORPUS, REPO, corpus_contract, findings, random_frame, readable_corpus

CONTRACT = corpus_contract()


def _assert_same_as_gx(frame: pd.DataFrame, suite: dict) -> None:
    assert findings(check_frame(frame, suite)) == findings(validate_frame(frame, suite))


@pytest.mark.parametrize("parsed", [False, True], ids=["as_read", "parsed"])
@pytest.mark.parametrize("scope", ["training", "batch"])
@pytest.mark.parametrize("name", readable_corpus())
def test_check_frame__corpus_findings_are_gx_findings(name: str, scope: str, parsed: bool):
    frame = load_table(CORPUS / name)
    if scope == "batch" and CONTRACT.target in frame.columns:
        frame = frame.drop(columns=[CONTRACT.target])
    if parsed:
        frame, _ = _parse_numbers(frame, CONTRACT)

    _assert_same_as_gx(frame, to_suite(CONTRACT, scope))  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(10))
def test_check_frame__random_frame_findings_are_gx_findings(seed: int):
    frame = random_frame(seed)

    for scope in ("training", "batch"):
        _assert_same_as_gx(frame, to_suite(CONTRACT, scope))  # type: ignore[arg-type]


def test_check_frame__empty_and_nullable_edge_cases_are_gx_findings():
    empty = random_frame(0).head(0)
    all_null = random_frame(1).assign(income=np.nan, city=None)

    for frame in (empty, all_null):
        _assert_same_as_gx(frame, to_suite(CONTRACT, "training"))


def test_check_frame__unknown_expectation_is_evaluated_by_gx():
    frame = random_frame(3)
    suite = {
        "name": "extra",
        "expectations": [
            {"type": "expect_column_mean_to_be_between", "kwargs": {"column": "age", "max_value": 1}},
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": "age", "min_value": 20, "strict_min": True},
            },
        ],
    }

    result = check_frame(frame, suite)

    assert {failure.expectation for failure in result.failures} == {
        "expect_column_mean_to_be_between",
        "expect_column_values_to_be_between",
    }
    _assert_same_as_gx(frame, suite)


def test_check_frame__breast_cancer_training_data_passes_like_gx():
    frame = load_table(REPO / "data" / "train.csv")
    suite = to_suite(load_contract(REPO / "data" / "contracts" / "breast_cancer.yaml"))

    _assert_same_as_gx(frame, suite)
