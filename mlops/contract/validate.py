"""The entry points the rest of the library calls: a table or a file, checked against its contract.

One call loads the contract, generates its suite (:mod:`mlops.contract.suite`) for the
scope, parses numbers that arrived as text (naming the ones that are not), and runs the
fast evaluator (:mod:`mlops.contract.checks`, GX for what it does not cover);
warn-level failures do not fail the result. A file of any length can be checked in
bounded memory, chunk by chunk, with the same findings as the whole file.

Example::

    result = validate_with_contract(frame, "data/contracts/breast_cancer.yaml")
    result, report = check_with_report(frame, contract_path, scope="batch", source="batch.csv", report_path="reports/v.html")
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from mlops.contract.checks import check_frame
from mlops.contract.report import write_html_report
from mlops.contract.results import MISSING_COLUMN, SAMPLE_SIZE, FailedExpectation, ValidationResult, failure_from_result
from mlops.contract.spec import Contract, Scope, load_contract
from mlops.contract.suite import to_suite
from mlops.data import FastReadRefused, iter_table, iter_table_fast, load_table

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "check_with_report",
    "validate_file_in_chunks",
    "validate_file_with_contract",
    "validate_with_contract",
]

# The expectation a numeric column's non-numeric values fail (GX has none: it only sees an ``object`` column).
_UNPARSED = "values_parse_as_numbers"
# Checks about the whole table, computed exactly while streaming rather than per chunk.
_WHOLE_TABLE = ("min_rows", "classes", "constant")
DEFAULT_CHUNK_ROWS = 100_000


def validate_with_contract(
    frame: pd.DataFrame, contract_path: str | Path | None, scope: Scope = "training"
) -> ValidationResult:
    """Validate ``frame`` against the contract's GX suite; warn-level failures don't fail it.

    The suite is evaluated by :func:`mlops.contract.checks.check_frame` (GX's findings,
    vectorised; GX itself for anything it does not cover). In ``batch`` scope a target
    column, if present, is ignored (scoring files may carry labels).
    """
    contract = load_contract(contract_path)
    frame, unparsed = _parse_numbers(_in_scope(frame, contract, scope), contract)
    result = check_frame(frame, to_suite(contract, scope))
    failures = unparsed + result.failures
    success = result.success and not any(failure.severity == "block" for failure in unparsed)
    return replace(result, failures=failures, success=success, suite_path=str(contract_path))


def _in_scope(frame: pd.DataFrame, contract: Contract, scope: Scope) -> pd.DataFrame:
    """In ``batch`` scope, only the contract's features, without copying the data.

    A scoring batch or a window of requests may carry more (the target, an id, a date):
    those are not the model's concern, so they are not checked; a missing feature is.
    """
    if scope != "batch":
        return frame
    features = {column.name for column in contract.features}
    if set(frame.columns) <= features:
        return frame
    view = frame.copy(deep=False)  # ``drop`` would copy every column: a second frame at peak
    for name in [name for name in view.columns if name not in features]:
        del view[name]
    return view


def _parse_numbers(frame: pd.DataFrame, contract: Contract) -> tuple[pd.DataFrame, tuple[FailedExpectation, ...]]:
    """Name the values of a numeric column that are not numbers; GX only sees an ``object`` column.

    The column is then parsed (bad values become nulls) so its range is still checked.
    """
    failures: list[FailedExpectation] = []
    for column in contract.columns:
        values = frame.get(column.name)
        if column.type not in ("float", "int") or values is None or pd.api.types.is_numeric_dtype(values):
            continue
        parsed = pd.to_numeric(values, errors="coerce")
        bad = values[values.notna() & parsed.isna()]
        frame = frame.copy(deep=False) if not failures else frame  # the caller's frame stays as it was
        frame[column.name] = parsed
        failures.append(
            FailedExpectation(
                expectation=_UNPARSED,
                column=column.name,
                unexpected_count=len(bad),
                unexpected_percent=len(bad) / max(len(values), 1) * 100,
                sample_values=tuple(map(str, bad.head(SAMPLE_SIZE))),
                details=f"type={column.type}: these values are not numbers (they are counted as nulls below)",
                severity=column.severity_of("type"),
            )
        )
    return frame, tuple(failures)


def check_with_report(
    frame: pd.DataFrame, contract_path: str | Path | None, *, scope: Scope, source: str, report_path: str | Path
) -> tuple[ValidationResult, Path]:
    """The gate every flow runs: validate ``frame`` (from ``source``) and write the HTML report."""
    result = replace(validate_with_contract(frame, contract_path, scope=scope), data_path=source)
    return result, write_html_report(result, report_path)


def validate_file_with_contract(
    path: str | Path, contract_path: str | Path, scope: Scope = "training"
) -> ValidationResult:
    """Read a CSV file (a :class:`~mlops.errors.DataError` if unreadable) and validate it against the contract."""
    load_contract(contract_path)  # a broken contract is reported before the data is read
    result = validate_with_contract(load_table(path), contract_path, scope)
    return replace(result, data_path=str(path))


# --- Large files ---------------------------------------------------------------------


def validate_file_in_chunks(
    path: str | Path, contract_path: str | Path, scope: Scope = "training", chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> ValidationResult:
    """Validate a CSV file of any length in memory bounded by ``chunk_rows``; the result is exact.

    Row-level checks (type, nulls, range, categories, columns) run on each chunk
    (:func:`mlops.contract.checks.check_frame`) and their failing-row counts are summed
    (samples: the first ones found); the whole-table checks (``min_rows``, a
    classification target's classes, constant features) are counted exactly over the
    stream, since a chunk cannot judge them. The file is read by pyarrow when it reads
    it as pandas would (:func:`mlops.data.iter_table_fast`), else by pandas from the start.
    """
    contract = load_contract(contract_path)
    numeric = [column.name for column in contract.columns if column.type in ("float", "int")]
    try:
        result = _validate_chunks(iter_table_fast(path, chunk_rows, numeric), contract, scope)
    except FastReadRefused:
        result = _validate_chunks(iter_table(path, chunk_rows), contract, scope)
    return replace(result, data_path=str(path), suite_path=str(contract_path))


def _validate_chunks(chunks: Iterator[pd.DataFrame], contract: Contract, scope: Scope) -> ValidationResult:
    suite = to_suite(contract, scope)
    # ``mostly`` is a share of the whole table: count every failing row per chunk, judge at the end.
    mostly = {
        (e["type"], e["kwargs"].get("column")): e["kwargs"]["mostly"]
        for e in suite["expectations"]
        if "mostly" in e["kwargs"]
    }
    row_level = {
        **suite,
        "expectations": [
            {**e, "kwargs": {k: v for k, v in e["kwargs"].items() if k != "mostly"}}
            for e in suite["expectations"]
            if e["meta"]["check"] not in _WHOLE_TABLE
        ],
    }
    merged: dict[tuple[str, str | None], FailedExpectation] = {}
    distinct: dict[str, set[Any]] = defaultdict(set)
    nonnull: dict[str, int] = defaultdict(int)
    rows, columns = 0, set()
    for chunk in chunks:
        chunk, unparsed = _parse_numbers(_in_scope(chunk, contract, scope), contract)
        for failure in unparsed + check_frame(chunk, row_level).failures:
            _merge(merged, failure)
        _count_distinct(chunk, distinct)
        for name, count in chunk.count().items():
            nonnull[str(name)] += int(count)
        rows, columns = rows + len(chunk), set(map(str, chunk.columns))
        # The progress spinner shows it; a collector sees how far a long file got.
        logging.getLogger(__name__).info("validated %s rows so far; %d checks failing", f"{rows:,}", len(merged))
    judged = [(failure, _denominator(failure, rows, nonnull)) for failure in merged.values()]
    failures = [_with_percent(failure, n) for failure, n in judged if not _tolerated(failure, mostly, n)]
    failures = [_with_mostly(failure, mostly) for failure in failures]
    failures += _whole_table_failures(suite, rows, distinct, columns)
    failures.sort(key=lambda failure: (failure.column is not None, failure.column or ""))
    success = not any(failure.severity == "block" for failure in failures)
    return ValidationResult(success, contract.name, rows, len(suite["expectations"]), tuple(failures))


def _merge(merged: dict[tuple[str, str | None], FailedExpectation], failure: FailedExpectation) -> None:
    key = (failure.expectation, failure.column)
    seen = merged.get(key)
    if seen is None:
        merged[key] = failure
    elif seen.unexpected_count is not None and failure.unexpected_count is not None:
        samples = (seen.sample_values + failure.sample_values)[:SAMPLE_SIZE]
        merged[key] = replace(
            seen, unexpected_count=seen.unexpected_count + failure.unexpected_count, sample_values=samples
        )


def _denominator(failure: FailedExpectation, rows: int, nonnull: Mapping[str, int]) -> int:
    """GX's: nulls (and unparsed numbers) count against every row; other row checks judge non-null values."""
    if failure.column is None or failure.expectation in ("expect_column_values_to_not_be_null", _UNPARSED):
        return rows
    return nonnull.get(failure.column, 0)


def _tolerated(failure: FailedExpectation, mostly: dict[tuple[str, str | None], float], denominator: int) -> bool:
    """GX's ``mostly`` rule, on the counts of the whole stream."""
    if failure.unexpected_count is None or denominator == 0:
        return failure.unexpected_count is not None
    share_met = (denominator - failure.unexpected_count) / denominator
    return share_met >= mostly.get((failure.expectation, failure.column), 1.0)


def _with_percent(failure: FailedExpectation, denominator: int) -> FailedExpectation:
    if failure.unexpected_count is None or denominator == 0:
        return failure
    return replace(failure, unexpected_percent=failure.unexpected_count / denominator * 100)


def _count_distinct(chunk: pd.DataFrame, distinct: dict[str, set[Any]]) -> None:
    """Up to two distinct non-null values per column: enough to tell "constant" from not."""
    for name in map(str, chunk.columns):
        if len(distinct[name]) >= 2:
            continue
        values = chunk[name].dropna()
        if len(values):
            # The first value and the first one unequal to it: the first two distinct, without hashing the column.
            distinct[name].update(values.head(1).tolist() + values[values != values.iloc[0]].head(1).tolist())


def _whole_table_failures(
    suite: dict[str, Any], rows: int, distinct: dict[str, set[Any]], columns: set[str]
) -> list[FailedExpectation]:
    failures = []
    for expectation in suite["expectations"]:
        if expectation["meta"]["check"] not in _WHOLE_TABLE:
            continue
        kind, kwargs, severity = expectation["type"], expectation["kwargs"], expectation["severity"]
        column = kwargs.get("column")
        observed = rows if column is None else len(distinct.get(column, ()))
        if column is not None and column not in columns:
            failures.append(failure_from_result(kind, kwargs, severity, {}, MISSING_COLUMN))
        elif observed < kwargs["min_value"]:
            failures.append(failure_from_result(kind, kwargs, severity, {"observed_value": observed}))
    return failures


def _with_mostly(failure: FailedExpectation, mostly: dict[tuple[str, str | None], float]) -> FailedExpectation:
    """Name the tolerance in the details, as GX does (it was left out of the per-chunk suite)."""
    tolerance = mostly.get((failure.expectation, failure.column))
    if tolerance is None:
        return failure
    return replace(failure, details=", ".join(filter(None, [f"mostly={tolerance!r}", failure.details])))
