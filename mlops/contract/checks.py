"""The contract's GX suite evaluated with vectorised pandas/numpy: GX's findings, ~50x faster.

Great Expectations builds a context, a batch and a metric graph per run, and checks a
million rows at ~100k rows/s. The expectations :func:`mlops.contract.suite.to_suite`
generates are simple column scans, so this module evaluates them directly and returns
the same :class:`ValidationResult` GX would: same expectations, columns, severities,
failing-row counts and percentages (GX's denominators), samples (the first failing
values, in row order), ``mostly`` tolerance and details (one formatter,
:func:`mlops.contract.results.failure_from_result`, serves both).

GX stays the reference and the fallback: an expectation this module does not know
exactly (another type, an unknown keyword, a dtype outside numpy's bool/int/float and
``object``, duplicated column names) is handed to GX (:func:`mlops.contract.gx.validate_frame`),
on the columns it needs. The
equivalence with GX is tested on the malformed-file corpus and on random frames.

Example::

    result = check_frame(frame, to_suite(contract, "training"))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from mlops.contract.gx import validate_frame
from mlops.contract.results import (
    MISSING_COLUMN,
    SAMPLE_SIZE,
    FailedExpectation,
    ValidationResult,
    checked_expectations,
    failure_from_result,
)

__all__ = ["check_frame"]

# Returned by a check that cannot reproduce GX exactly for this frame: GX evaluates it.
_DELEGATE = object()
# What a check returns: GX's result keys for a failure (plus "kwargs" as GX shows them), None when met,
# or _DELEGATE.
_Outcome = Any
# What GX's in_type_list accepts, per type name: dtype names (a typed column) or Python classes
# (each value of an ``object`` column); see ExpectColumnValuesToBeInTypeList._validate_pandas.
_DTYPES = {"float": {"float64"}, "int": {"int64"}, "bool": {"bool"}, "str": set(), "StringDtype": set()}
_MAP_KINDS = "biufO"


def check_frame(frame: pd.DataFrame, suite: Mapping[str, Any]) -> ValidationResult:
    """Evaluate ``suite`` (a suite dict) on ``frame``: the result GX's ``validate_frame`` gives."""
    expectations = list(suite["expectations"])
    failures: list[FailedExpectation] = []
    delegated: list[dict[str, Any]] = []
    for expectation in expectations:
        outcome = _evaluate(frame, expectation) if frame.columns.is_unique else _DELEGATE
        if outcome is _DELEGATE:
            delegated.append(expectation)
        elif isinstance(outcome, FailedExpectation):
            failures.append(outcome)
    if delegated:
        failures += validate_frame(_columns_for(frame, delegated), {**suite, "expectations": delegated}).failures
    return ValidationResult(
        success=not any(failure.severity == "block" for failure in failures),
        suite_name=suite["name"],
        rows=len(frame),
        evaluated=len(expectations),
        failures=tuple(sorted(failures, key=lambda failure: (failure.column is not None, failure.column or ""))),
        checks=checked_expectations(expectations),
    )


def _columns_for(frame: pd.DataFrame, expectations: list[dict[str, Any]]) -> pd.DataFrame:
    """Only the columns GX needs, unless a table-level expectation needs them all."""
    names = [e["kwargs"].get("column") for e in expectations]
    if None in names or not frame.columns.is_unique:
        return frame
    return frame[[name for name in dict.fromkeys(names) if name in frame.columns]]


def _evaluate(frame: pd.DataFrame, expectation: Mapping[str, Any]) -> FailedExpectation | None | object:
    """A :class:`FailedExpectation`, ``None`` when met, or ``_DELEGATE``."""
    kind, kwargs = expectation["type"], dict(expectation["kwargs"])
    check = _CHECKS.get(kind)
    if check is None or not set(kwargs) <= _KWARGS[kind]:
        return _DELEGATE
    severity = expectation.get("severity", "critical")
    column = kwargs.get("column")
    if column is not None and column not in frame.columns:
        return failure_from_result(kind, kwargs, severity, {}, MISSING_COLUMN)
    outcome = check(frame, kwargs)
    if outcome is _DELEGATE or outcome is None:
        return outcome
    shown = {**kwargs, **outcome.pop("kwargs", {})}
    return failure_from_result(kind, shown, severity, outcome)


# --- Table checks ----------------------------------------------------------------------


def _columns_match(frame: pd.DataFrame, kwargs: dict[str, Any]) -> _Outcome:
    if kwargs.get("exact_match", True) is not True:
        return _DELEGATE
    expected, observed = set(kwargs["column_set"]), list(map(str, frame.columns))
    if set(frame.columns) == expected:
        return None
    mismatched = {"unexpected": sorted(set(observed) - expected), "missing": sorted(expected - set(observed))}
    return {"observed_value": observed, "details": {"mismatched": mismatched}}


def _row_count(frame: pd.DataFrame, kwargs: dict[str, Any]) -> _Outcome:
    return _count_between(len(frame), kwargs)


def _unique_count(frame: pd.DataFrame, kwargs: dict[str, Any]) -> _Outcome:
    values = frame[kwargs["column"]]
    if values.dtype.kind not in _MAP_KINDS:
        return _DELEGATE
    # "Not constant" (the contract's only use) needs no hash table: a smallest and a largest value that differ.
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if high is None and type(low) is int and low <= 2 and values.dtype.kind in "biuf" and values.min() < values.max():
        return None
    return _count_between(int(values.nunique()), kwargs)


def _count_between(observed: int, kwargs: dict[str, Any]) -> _Outcome:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if not all(bound is None or type(bound) is int for bound in (low, high)):
        return _DELEGATE
    if (low is None or observed >= low) and (high is None or observed <= high):
        return None
    return {"observed_value": observed}


# --- Row-level (map) checks -----------------------------------------------------------


def _not_null(frame: pd.DataFrame, kwargs: dict[str, Any]) -> _Outcome:
    """Nulls count against every row (GX: ``unexpected_percent`` over all rows)."""
    values = frame[kwargs["column"]]
    nulls = values.isna().to_numpy()
    count, rows = int(nulls.sum()), len(values)
    if rows == 0 or (rows - count) / rows >= kwargs.get("mostly", 1.0):
        return None
    return _unexpected(values, nulls, count, rows)


def _in_types(frame: pd.DataFrame, kwargs: dict[str, Any]) -> _Outcome:
    """A typed column is judged by its dtype; an ``object`` column value by value, like GX."""
    values, names = frame[kwargs["column"]], kwargs["type_list"]
    if not set(names) <= set(_DTYPES) or values.dtype.kind not in _MAP_KINDS:
        return _DELEGATE
    if values.dtype.kind != "O":
        accepted = set().union(*(_DTYPES[name] for name in names))
        return None if values.dtype.name in accepted else {"observed_value": values.dtype.type.__name__}
    classes = _python_types(names)
    return _map_check(values, kwargs, lambda present: _not_instances(present, classes))


def _between(frame: pd.DataFrame, kwargs: dict[str, Any]) -> _Outcome:
    values = frame[kwargs["column"]]
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    bounds = [bound for bound in (low, high) if bound is not None]
    if values.dtype.name not in ("int64", "float64") or not bounds or any(type(b) not in (int, float) for b in bounds):
        return _DELEGATE  # GX's other branches (dates, strings, strict bounds) are its own to judge
    if low is not None and high is not None and low > high:
        return _DELEGATE  # GX raises: its error message is the finding
    shown = {key: float(kwargs[key]) for key in ("min_value", "max_value") if kwargs.get(key) is not None}

    def outside(present: pd.Series) -> np.ndarray:
        numbers = present.to_numpy()
        inside = (numbers >= low if low is not None else True) & (numbers <= high if high is not None else True)
        return ~(inside if isinstance(inside, np.ndarray) else np.full(len(numbers), bool(inside)))

    outcome = _map_check(values, kwargs, outside)
    return None if outcome is None else {**outcome, "kwargs": shown}


def _in_set(frame: pd.DataFrame, kwargs: dict[str, Any]) -> _Outcome:
    values = frame[kwargs["column"]]
    if values.dtype.kind not in _MAP_KINDS or kwargs.get("value_set") is None:
        return _DELEGATE
    allowed = list(kwargs["value_set"])
    return _map_check(values, kwargs, lambda present: ~present.isin(allowed).to_numpy())


def _map_check(values: pd.Series, kwargs: dict[str, Any], failing: Callable[[pd.Series], np.ndarray]) -> _Outcome:
    """GX's column-map rules: nulls are skipped, shares are of the non-null rows, ``mostly`` applies.

    ``failing`` gets the non-null values and marks the failing ones.
    """
    nulls = values.isna().to_numpy()
    considered = len(values) - int(nulls.sum())
    if considered == 0:
        return None
    present = values[~nulls] if nulls.any() else values
    bad = np.asarray(failing(present), dtype=bool)
    count = int(bad.sum())
    if (considered - count) / considered >= kwargs.get("mostly", 1.0):
        return None
    return _unexpected(present, bad, count, considered)


def _unexpected(values: pd.Series, bad: np.ndarray, count: int, denominator: int) -> dict[str, Any]:
    first = np.flatnonzero(bad)[:SAMPLE_SIZE]
    return {
        "unexpected_count": count,
        "unexpected_percent": count / denominator * 100,
        "partial_unexpected_list": list(values.iloc[first]),
    }


def _python_types(names: list[str]) -> tuple[type, ...]:
    """GX's classes per type name for ``object`` columns: numpy's scalar type and the native one."""
    classes = {
        "float": (np.float64, float),
        "int": (np.int64, int),
        "bool": (np.bool_, bool),
        "str": (np.str_, str),
        "StringDtype": (pd.StringDtype,),
    }
    return tuple(cls for name in names for cls in classes[name])


def _not_instances(present: pd.Series, classes: tuple[type, ...]) -> np.ndarray:
    # Most text columns hold only str: one C-level pass proves it without a Python loop.
    if str in classes and pd.api.types.infer_dtype(present, skipna=True) == "string":
        return np.zeros(len(present), dtype=bool)
    return np.fromiter((not isinstance(value, classes) for value in present), dtype=bool, count=len(present))


_CHECKS: dict[str, Callable[[pd.DataFrame, dict[str, Any]], _Outcome]] = {
    "expect_table_columns_to_match_set": _columns_match,
    "expect_table_row_count_to_be_between": _row_count,
    "expect_column_values_to_not_be_null": _not_null,
    "expect_column_values_to_be_in_type_list": _in_types,
    "expect_column_values_to_be_between": _between,
    "expect_column_values_to_be_in_set": _in_set,
    "expect_column_unique_value_count_to_be_between": _unique_count,
}
_KWARGS = {
    "expect_table_columns_to_match_set": {"column_set", "exact_match"},
    "expect_table_row_count_to_be_between": {"min_value", "max_value"},
    "expect_column_values_to_not_be_null": {"column", "mostly"},
    "expect_column_values_to_be_in_type_list": {"column", "type_list"},
    "expect_column_values_to_be_between": {"column", "min_value", "max_value", "mostly"},
    "expect_column_values_to_be_in_set": {"column", "value_set", "mostly"},
    "expect_column_unique_value_count_to_be_between": {"column", "min_value", "max_value"},
}
