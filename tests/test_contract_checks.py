"""The vectorised contract checks give exactly GX's findings: GX is the reference.

Every readable file of the malformed corpus, as read (so numeric text columns reach
the checks unparsed) and as the contract gate sees it, in both scopes; and seeded
random frames with nulls, infinities, out-of-range values, unknown categories, mixed
``object`` columns and unusual dtypes (which go to GX).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.contract import _parse_numbers, load_contract, to_suite
from mlops.contract_checks import check_frame
from mlops.data import load_table
from mlops.validation import validate_frame

CORPUS = Path(__file__).resolve().parent / "corpus"
CONTRACT = load_contract(CORPUS / "contract.yaml")


def _readable_corpus() -> list[str]:
    with open(CORPUS / "cases.csv", encoding="utf-8", newline="") as handle:
        return sorted({row["file"] for row in csv.DictReader(handle) if row["outcome"] != "DataError"})


def _findings(result) -> tuple:
    # repr: a NaN sample equals itself; the order within one column is GX's evaluation order.
    failures = sorted(repr(failure) for failure in result.failures)
    return result.success, result.rows, result.evaluated, result.suite_name, failures


def _assert_same_as_gx(frame: pd.DataFrame, suite: dict) -> None:
    assert _findings(check_frame(frame, suite)) == _findings(validate_frame(frame, suite))


@pytest.mark.parametrize("parsed", [False, True], ids=["as_read", "parsed"])
@pytest.mark.parametrize("scope", ["training", "batch"])
@pytest.mark.parametrize("name", _readable_corpus())
def test_check_frame__corpus_findings_are_gx_findings(name: str, scope: str, parsed: bool):
    frame = load_table(CORPUS / name)
    if scope == "batch" and CONTRACT.target in frame.columns:
        frame = frame.drop(columns=[CONTRACT.target])
    if parsed:
        frame, _ = _parse_numbers(frame, CONTRACT)

    _assert_same_as_gx(frame, to_suite(CONTRACT, scope))  # type: ignore[arg-type]


def _random_frame(seed: int, rows: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(10, 110, rows)
    income = rng.uniform(-10, 250_000, rows)
    income[rng.random(rows) < 0.15 * (seed % 3)] = np.nan
    score = rng.random(rows) * (1 + 0.01 * (seed % 2))
    score[rng.integers(0, rows, seed % 4)] = np.inf
    city = rng.choice(["lyon", "nice", "paris", "oslo" if seed % 2 else "nice"], rows).astype(object)
    city[rng.integers(0, rows, seed % 3)] = None
    label = rng.integers(0, 2 + seed % 2, rows)
    frame = pd.DataFrame({"age": age, "income": income, "score": score, "city": city, "label": label})
    if seed % 5 == 1:
        frame["city"] = frame["city"].where(rng.random(rows) > 0.05, 7)  # numbers among the text
    if seed % 5 == 2:
        frame["age"] = frame["age"].astype("int32")  # a dtype the checks hand to GX
    if seed % 5 == 3:
        frame["score"] = 0.5  # a constant feature
    if seed % 5 == 4:
        frame["label"] = frame["label"].astype(bool)  # a wrong, but numeric, dtype
    return frame


@pytest.mark.parametrize("seed", range(10))
def test_check_frame__random_frame_findings_are_gx_findings(seed: int):
    frame = _random_frame(seed)

    for scope in ("training", "batch"):
        _assert_same_as_gx(frame, to_suite(CONTRACT, scope))  # type: ignore[arg-type]


def test_check_frame__empty_and_nullable_edge_cases_are_gx_findings():
    empty = _random_frame(0).head(0)
    all_null = _random_frame(1).assign(income=np.nan, city=None)

    for frame in (empty, all_null):
        _assert_same_as_gx(frame, to_suite(CONTRACT, "training"))


def test_check_frame__unknown_expectation_is_evaluated_by_gx():
    frame = _random_frame(3)
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
    repo = Path(__file__).resolve().parents[1]
    frame = load_table(repo / "data" / "train.csv")
    suite = to_suite(load_contract(repo / "data" / "contracts" / "breast_cancer.yaml"))

    _assert_same_as_gx(frame, suite)
