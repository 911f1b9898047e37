"""The malformed-file corpus: every file in tests/corpus/ has its exact outcome in cases.csv.

One row per expected failure (or one row for a pass / an unreadable file). The library
is checked for every case; the CLI (a subprocess, real exit codes) for one case of
each outcome, since each run pays the start-up cost.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from mlops.contract import validate_file_in_chunks, validate_file_with_contract
from mlops.errors import DataError, ValidationFailed

from .frames import CORPUS, CORPUS_CONTRACT, REPO

MLOPS = Path(sys.executable).with_name("mlops")


def _cases() -> dict[tuple[str, str], list[dict[str, str]]]:
    grouped: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    with open(CORPUS / "cases.csv", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            grouped[row["file"], row["scope"]].append(row)
    return dict(grouped)


CASES = _cases()


def test_corpus__has_at_least_20_files_each_with_a_case():
    files = {path.name for path in CORPUS.glob("*.csv")} - {"cases.csv"}
    covered = {name for name, _ in CASES}
    assert len(files) >= 20
    assert files <= covered, f"files without an expected outcome: {sorted(files - covered)}"


@pytest.mark.parametrize(("name", "scope"), sorted(CASES), ids=lambda value: str(value))
def test_corpus__outcome_is_exactly_the_expected_one(name: str, scope: str):
    rows = CASES[name, scope]
    outcome = rows[0]["outcome"]
    if outcome == "DataError":
        with pytest.raises(DataError) as caught:
            validate_file_with_contract(CORPUS / name, CORPUS_CONTRACT, scope)  # type: ignore[arg-type]
        assert rows[0]["message"] in str(caught.value)
        assert caught.value.exit_code == int(rows[0]["exit_code"]) == 2
        return
    result = validate_file_with_contract(CORPUS / name, CORPUS_CONTRACT, scope)  # type: ignore[arg-type]
    expected = sorted((row["expectation"], row["column"], row["severity"]) for row in rows if row["expectation"])
    found = sorted((failure.expectation, failure.column or "", failure.severity) for failure in result.failures)
    assert found == expected, result.summary()
    assert result.success == (outcome in ("pass", "warn"))
    assert (ValidationFailed.exit_code if not result.success else 0) == int(rows[0]["exit_code"])
    for row in rows:
        if row["expectation"]:
            _assert_failure_detail(result, row)


def _assert_failure_detail(result, row: dict[str, str]) -> None:
    [failure] = [f for f in result.failures if (f.expectation, f.column or "") == (row["expectation"], row["column"])]
    if row["failing_rows"]:
        assert failure.unexpected_count == int(row["failing_rows"])
    if row["message"]:
        assert row["message"] in failure.describe(), failure.describe()


@pytest.mark.parametrize(
    ("name", "exit_code", "shown"),
    [
        ("valid.csv", 0, "Validation passed"),
        ("unseen_category.csv", 0, "[warn] expect_column_values_to_be_in_set on column 'city'"),
        ("out_of_range.csv", 1, "[block] expect_column_values_to_be_between on column 'age': 4 failing rows"),
        ("semicolon.csv", 2, "looks delimited by ';'"),
    ],
)
def test_corpus__cli_exit_codes_and_messages(tmp_path: Path, name: str, exit_code: int, shown: str):
    environment = {**os.environ, "MLOPS_STATE_DIR": str(tmp_path), "MLOPS_DATA__CONTRACT": str(CORPUS_CONTRACT)}
    result = subprocess.run(
        [str(MLOPS), "validate", str(CORPUS / name)], capture_output=True, text=True, cwd=REPO, env=environment
    )
    assert result.returncode == exit_code, result.stderr
    assert shown in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("name", "scope"), sorted(CASES), ids=lambda value: str(value))
def test_corpus__chunked_validation_agrees_with_whole_file(name: str, scope: str):
    def outcome(validate):
        try:
            result = validate(CORPUS / name, CORPUS_CONTRACT, scope)
        except DataError as exc:
            return str(exc)
        failures = sorted((f.expectation, f.column, f.severity, f.unexpected_count) for f in result.failures)
        return result.success, result.rows, failures

    chunked = outcome(lambda *args: validate_file_in_chunks(*args, chunk_rows=7))
    assert chunked == outcome(validate_file_with_contract)
