"""Great Expectations evaluating a suite (no mocks), on the bundled data and its generated suite."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mlops.contract import FailedExpectation, ValidationResult, validate_frame
from mlops.errors import ConfigError

from .frames import REPO

TRAIN = REPO / "data" / "train.csv"
SUITE = REPO / "data" / "expectations" / "breast_cancer.json"


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return pd.read_csv(TRAIN)


def _failures_of(result: ValidationResult, expectation: str) -> list[FailedExpectation]:
    return [failure for failure in result.failures if failure.expectation == expectation]


def test_validate_frame__train_passes(train: pd.DataFrame) -> None:
    result = validate_frame(train, SUITE)

    assert result.success, result.summary()
    assert (result.rows, result.failures, result.suite_path) == (469, (), str(SUITE))
    assert result.suite_name == "breast_cancer"
    assert len(result.checks) == result.evaluated > 0
    assert "passed" in result.summary()


def test_validate_frame__missing_column_fails(train: pd.DataFrame) -> None:
    result = validate_frame(train.drop(columns=["mean_radius"]), SUITE)

    assert not result.success
    column_set, *column_checks = result.failures
    assert column_set.expectation == "expect_table_columns_to_match_set"
    assert "missing columns=['mean_radius']" in column_set.details
    assert {failure.column for failure in column_checks} == {"mean_radius"}
    assert all("column is missing" in failure.details for failure in column_checks)


def test_validate_frame__extra_column_fails(train: pd.DataFrame) -> None:
    result = validate_frame(train.assign(patient_id=1.0), SUITE)

    [failure] = result.failures
    assert failure.expectation == "expect_table_columns_to_match_set"
    assert "unexpected columns=['patient_id']" in failure.details


def test_validate_frame__out_of_range_values_fail(train: pd.DataFrame) -> None:
    frame = train.copy()
    frame.loc[:2, "mean_area"] = 1e6

    result = validate_frame(frame, SUITE)

    [failure] = result.failures
    assert failure.expectation == "expect_column_values_to_be_between"
    assert (failure.column, failure.unexpected_count, failure.sample_values) == ("mean_area", 3, (1e6, 1e6, 1e6))
    assert "min_value=" in failure.details and "max_value=" in failure.details
    assert "'mean_area': 3 failing rows" in result.summary()


def test_validate_frame__nulls_fail(train: pd.DataFrame) -> None:
    frame = train.copy()
    frame.loc[:4, "worst_texture"] = None

    result = validate_frame(frame, SUITE)

    [failure] = _failures_of(result, "expect_column_values_to_not_be_null")
    assert (failure.column, failure.unexpected_count) == ("worst_texture", 5)


def test_validate_frame__wrong_target_labels_fail(train: pd.DataFrame) -> None:
    frame = train.copy()
    frame.loc[:1, "target"] = 7

    result = validate_frame(frame, SUITE)

    [failure] = result.failures
    assert failure.expectation == "expect_column_values_to_be_in_set"
    assert (failure.column, failure.unexpected_count, failure.sample_values) == ("target", 2, (7, 7))


def test_validate_frame__too_few_rows_fail(train: pd.DataFrame) -> None:
    result = validate_frame(train.head(10), SUITE)

    [failure] = result.failures
    assert failure.expectation == "expect_table_row_count_to_be_between"
    assert "observed=10" in failure.details


def test_validate_frame__summary_names_each_blocking_failure_and_the_suite(train: pd.DataFrame) -> None:
    result = validate_frame(train.drop(columns=["target"]), SUITE)

    summary = result.summary()

    assert not result.success and summary.startswith("Validation FAILED")
    assert "expect_table_columns_to_match_set" in summary
    assert "expect_column_values_to_be_in_set on column 'target'" in summary
    assert str(SUITE) in summary


def test_validate_frame__shifted_current_data_fails_on_ranges() -> None:
    result = validate_frame(pd.read_csv(REPO / "data" / "current.csv"), SUITE)

    assert not result.success
    assert {failure.expectation for failure in result.failures} == {"expect_column_values_to_be_between"}


def test_validate_frame__missing_suite_raises_config_error(train: pd.DataFrame, tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"

    with pytest.raises(ConfigError, match="does not exist") as caught:
        validate_frame(train, missing)

    assert str(missing) in str(caught.value)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"expectations": []}', "not a valid expectation suite"),
        ('{"name": "s", "expectations": [{"type": "expect_nothing_at_all", "kwargs": {}}]}', "expect_nothing_at_all"),
        ('{"name": "s", "expectations": [{"type": "expect_column_values_to_be_between", "kwargs": {}}]}', "#0"),
    ],
)
def test_validate_frame__invalid_suite_raises_config_error(
    train: pd.DataFrame, tmp_path: Path, content: str, problem: str
) -> None:
    suite = tmp_path / "suite.json"
    suite.write_text(content)

    with pytest.raises(ConfigError, match=problem) as caught:
        validate_frame(train, suite)

    assert str(suite) in str(caught.value) and "mlops contract suite" in str(caught.value)


def test_validate_frame__writes_nothing_to_cwd_or_home(
    train: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir(), cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)

    validate_frame(train, SUITE)

    assert list(home.iterdir()) == [] and list(cwd.iterdir()) == []
