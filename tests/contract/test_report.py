"""The HTML report: every check listed, failures first and open, passed ones folded, values escaped."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mlops.contract import (
    FailedExpectation,
    ValidationResult,
    check_with_report,
    draft_contract,
    validate_frame,
    write_contract,
    write_html_report,
)

from .frames import REPO

SUITE = REPO / "data" / "expectations" / "breast_cancer.json"


@pytest.fixture(scope="module")
def out_of_range() -> ValidationResult:
    """The bundled suite run by GX, one column out of range."""
    frame = pd.read_csv(REPO / "data" / "train.csv")
    frame.loc[:2, "mean_area"] = 1e6
    return validate_frame(frame, SUITE)


def test_write_html_report__names_failed_column(out_of_range: ValidationResult, tmp_path: Path) -> None:
    path = write_html_report(out_of_range, tmp_path / "reports" / "validation.html")

    page = path.read_text()
    assert path.is_file() and page.startswith("<!DOCTYPE html>")
    assert "FAILED" in page and "<td>mean_area</td>" in page


def test_write_html_report__lists_passed_checks_folded_after_the_failures(out_of_range: ValidationResult, tmp_path: Path) -> None:
    # Given one failure among the suite's checks
    result = out_of_range
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
