"""The validation gate against real Great Expectations (no mocks), on the bundled data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mlops.errors import ConfigError, DataError, ValidationFailed
from mlops.validation import (
    FailedExpectation,
    ValidationResult,
    draft_suite,
    require_valid,
    validate_file,
    validate_frame,
    write_html_report,
    write_suite,
)

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "data" / "train.csv"
SUITE = REPO / "data" / "expectations" / "breast_cancer.json"


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return pd.read_csv(TRAIN)


def _failures_of(result: ValidationResult, expectation: str) -> list[FailedExpectation]:
    return [failure for failure in result.failures if failure.expectation == expectation]


def test_validate_file__train_passes() -> None:
    result = validate_file(TRAIN, SUITE)

    assert result.success, result.summary()
    assert (result.rows, result.failures, result.data_path) == (469, (), str(TRAIN))
    assert result.suite_name == "breast_cancer"
    assert result.evaluated == len(json.loads(SUITE.read_text())["expectations"])
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


def test_require_valid__failure_raises_with_exit_code_1(train: pd.DataFrame) -> None:
    result = validate_frame(train.drop(columns=["target"]), SUITE)

    with pytest.raises(ValidationFailed) as caught:
        require_valid(result)

    assert caught.value.exit_code == 1
    assert caught.value.result is result
    message = str(caught.value)
    assert "expect_table_columns_to_match_set" in message
    assert "expect_column_values_to_be_in_set on column 'target'" in message
    assert str(SUITE) in message


def test_require_valid__success_passes() -> None:
    require_valid(validate_file(TRAIN, SUITE))


def test_validate_file__missing_file_raises_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        validate_file(tmp_path / "nope.csv", SUITE)


def test_validate_file__empty_file_raises_data_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")

    with pytest.raises(DataError, match="empty"):
        validate_file(empty, SUITE)


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

    assert str(suite) in str(caught.value)


def test_write_html_report__names_failed_column(train: pd.DataFrame, tmp_path: Path) -> None:
    frame = train.copy()
    frame.loc[:2, "mean_area"] = 1e6
    result = validate_frame(frame, SUITE)

    path = write_html_report(result, tmp_path / "reports" / "validation.html")

    page = path.read_text()
    assert path.is_file() and page.startswith("<!DOCTYPE html>")
    assert "FAILED" in page and "<td>mean_area</td>" in page


def test_write_html_report__lists_passed_checks_folded_after_the_failures(train: pd.DataFrame, tmp_path: Path) -> None:
    # Given the bundled suite run by GX, one column out of range
    frame = train.copy()
    frame.loc[:2, "mean_area"] = 1e6
    result = validate_frame(frame, SUITE)
    # When the report is written
    page = write_html_report(result, tmp_path / "validation.html").read_text()
    # Then every evaluated check is on it: the failure open and first, the passed ones folded
    assert len(result.checks) == result.evaluated and len(result.passed) == result.evaluated - 1
    failed_at, passed_at = page.index("<details open>"), page.index("<details><summary")
    assert failed_at < passed_at
    assert "<td>mean_area</td>" in page[failed_at:passed_at]
    assert page[passed_at:].count("<tr>") == len(result.passed) + 1  # the header row, then one per check
    assert f"{result.evaluated - 1} passed, 1 failed" in page


def test_write_html_report__contract_report_lists_passing_and_failing_checks(tmp_path: Path) -> None:
    # Given iris (text classes, nulls, a text category) checked against its drafted contract
    from datasets import build

    from mlops.contract import check_with_report, draft_contract, write_contract

    train, _, spec = build("flowers")
    contract = write_contract(draft_contract(train, spec.target, spec.name), tmp_path / "flowers.yaml")
    batch = train.copy()
    batch.loc[:3, "sepal length (cm)"] = 100.0
    batch.loc[:1, "garden"] = "on the moon"
    # When the flows' gate validates it and writes the report
    result, path = check_with_report(batch, contract, scope="training", source="flowers.csv",
                                     report_path=tmp_path / "reports" / "validation.html")
    page = path.read_text(encoding="utf-8")
    # Then both failures are listed open, before the folded passed checks, which are all there too
    failed = {(failure.expectation, failure.column) for failure in result.failures}
    assert failed == {("expect_column_values_to_be_between", "sepal length (cm)"),
                      ("expect_column_values_to_be_in_set", "garden")}
    failed_part, passed_part = page.split("<details><summary", 1)
    assert "<td>sepal length (cm)</td>" in failed_part and "<td>garden</td>" in failed_part
    assert len(result.passed) == result.evaluated - 2 > 10
    for check in result.passed:
        assert f"<td>{check.expectation}</td><td>{check.column or ''}</td>" in passed_part
    assert "<td>expect_column_values_to_be_in_type_list</td><td>sepal length (cm)</td>" in passed_part


def test_write_html_report__escapes_values(tmp_path: Path) -> None:
    failure = FailedExpectation("expect_x", "<b>col</b>", 1, 1.0, ("<script>",), "a & b")
    result = ValidationResult(False, "<suite>", 1, 1, (failure,))

    page = write_html_report(result, tmp_path / "report.html").read_text()

    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "&lt;b&gt;col&lt;/b&gt;" in page and "a &amp; b" in page


def test_draft_suite__passes_on_training_data_and_round_trips_json(train: pd.DataFrame, tmp_path: Path) -> None:
    import great_expectations as gx

    suite = draft_suite(train, target="target", name="drafted")
    path = write_suite(suite, tmp_path / "drafted.json")

    loaded = json.loads(path.read_text())
    assert loaded == suite
    assert gx.ExpectationSuite(**loaded).to_json_dict() == suite
    result = validate_frame(train, path)
    assert result.success, result.summary()
    assert result.evaluated == 2 + 3 * 30 + 2


def test_draft_suite__widens_range_by_margin() -> None:
    frame = pd.DataFrame({"x": [10.0, 20.0] * 30, "target": [0, 1] * 30})

    suite = draft_suite(frame, target="target", name="s", margin=0.5)

    [between] = [e["kwargs"] for e in suite["expectations"] if e["type"] == "expect_column_values_to_be_between"]
    assert (between["min_value"], between["max_value"]) == (5.0, 25.0)


def test_draft_suite__text_columns_pass_on_their_own_data(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "city": ["a", "b", "c"] * 20,
            "code": pd.Series(["x", "y", "z"] * 20, dtype="string"),
            "flag": [True, False, True] * 20,
            "target": ["no", "yes", "no"] * 20,
        }
    )

    path = write_suite(draft_suite(frame, target="target", name="s"), tmp_path / "s.json")

    result = validate_frame(frame, path)
    assert result.success, result.summary()


def test_draft_suite__unknown_target_raises_config_error(train: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="label"):
        draft_suite(train, target="label", name="s")


def test_bundled_suite__is_generated_from_the_contract() -> None:
    # Guards against hand edits drifting from the contract; regenerate with `mlops contract suite`.
    from mlops.contract import load_contract, to_suite

    assert json.loads(SUITE.read_text()) == to_suite(load_contract(REPO / "data" / "contracts" / "breast_cancer.yaml"))


def test_validate_frame__writes_nothing_to_cwd_or_home(
    train: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir(), cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)

    validate_frame(train, SUITE)

    assert list(home.iterdir()) == [] and list(cwd.iterdir()) == []


def test_import__does_not_import_great_expectations() -> None:
    code = "import sys, mlops.validation; print('great_expectations' in sys.modules, 'pandas' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=REPO)

    assert output.stdout.split() == ["False", "False"]


def test_validate_file__shifted_current_data_fails_on_ranges() -> None:
    result = validate_file(REPO / "data" / "current.csv", SUITE)

    assert not result.success
    assert {failure.expectation for failure in result.failures} == {"expect_column_values_to_be_between"}
