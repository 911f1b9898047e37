"""The validation gate: check a table against a Great Expectations suite.

A thin adapter over Great Expectations 1.x. The suite is a plain JSON file in GX's
``ExpectationSuite`` format, kept in the repository and reviewed like code; each run
builds a throw-away in-memory GX context, so nothing is written to the home folder
or the working directory. Results come back as small dataclasses, so callers never
touch GX objects.

Example::

    result = validate_file("data/current.csv", "data/expectations/breast_cancer.json")
    print(result.summary())
    require_valid(result)  # raises ValidationFailed (exit code 1) when it failed

The project's own suite is generated from the data contract (:mod:`mlops.contract`,
``mlops contract suite``); expectations of severity ``warning`` are reported without
failing the run. A stand-alone suite can still be drafted from training data::

    python -m mlops.validation data/train.csv my_suite.json
"""

from __future__ import annotations

import html
import json
import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.data import load_table
from mlops.errors import ConfigError, ValidationFailed

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations import ExpectationSuite

__all__ = [
    "DEFAULT_MIN_ROWS",
    "CheckedExpectation",
    "FailedExpectation",
    "ValidationResult",
    "draft_suite",
    "failure_from_result",
    "checked_expectations",
    "require_valid",
    "validate_file",
    "validate_frame",
    "write_html_report",
    "write_suite",
]

# Fewer rows than this are too few to train on or to judge a batch by.
DEFAULT_MIN_ROWS = 50
# Any numeric column read from a CSV file is int64 or float64; GX maps these names to both.
NUMERIC_TYPES = ("float", "int")
# "str" matches text in object columns, "StringDtype" pandas' python-backed string dtype.
# No name matches the pyarrow-backed one (pandas 3's default) in GX 1.24.
TEXT_TYPES = ("str", "StringDtype")
SAMPLE_SIZE = 5
_RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE_SIZE}
_HIDDEN_KWARGS = {"column", "batch_id"}


@dataclass(frozen=True)
class FailedExpectation:
    """One expectation the data did not meet, with enough detail to find the bad rows."""

    expectation: str
    column: str | None
    unexpected_count: int | None
    unexpected_percent: float | None
    sample_values: tuple
    details: str
    severity: str = "block"

    def describe(self) -> str:
        """One line for a terminal: what failed, where, how often, with which values."""
        where = f" on column '{self.column}'" if self.column else ""
        line = f"[{self.severity}] {self.expectation}{where}"
        if self.unexpected_count is not None:
            percent = f" ({self.unexpected_percent:.1f}%)" if self.unexpected_percent is not None else ""
            rows = "row" if self.unexpected_count == 1 else "rows"
            line += f": {self.unexpected_count} failing {rows}{percent}"
        if self.details:
            line += f"; {self.details}"
        if self.sample_values:
            line += f"; sample values: {', '.join(map(str, self.sample_values))}"
        return line


@dataclass(frozen=True)
class CheckedExpectation:
    """One expectation that was evaluated, failed or not: the report lists every check, not only failures."""

    expectation: str
    column: str | None
    severity: str  # block | warn
    details: str  # what is expected, as a failure's details show it

    @property
    def key(self) -> tuple[str, str | None]:
        """What a failure of this check shares with it: the expectation and its column."""
        return self.expectation, self.column


@dataclass(frozen=True)
class ValidationResult:
    """The outcome of one validation run, free of GX objects so it can be logged and compared.

    ``checks`` are the expectations evaluated (empty when the run did not record them,
    as a chunked validation does); the passed ones are those no failure names.
    """

    success: bool
    suite_name: str
    rows: int
    evaluated: int
    failures: tuple[FailedExpectation, ...]
    data_path: str | None = None
    suite_path: str | None = None
    checks: tuple[CheckedExpectation, ...] = field(default=(), compare=False, repr=False)

    @property
    def passed(self) -> tuple[CheckedExpectation, ...]:
        """The recorded checks that no failure names."""
        failed = {(failure.expectation, failure.column) for failure in self.failures}
        return tuple(check for check in self.checks if check.key not in failed)

    @property
    def blocking(self) -> tuple[FailedExpectation, ...]:
        """The failures that fail the gate (severity ``block``)."""
        return tuple(failure for failure in self.failures if failure.severity == "block")

    @property
    def warnings(self) -> tuple[FailedExpectation, ...]:
        """The failures that are reported but let the run continue (severity ``warn``)."""
        return tuple(failure for failure in self.failures if failure.severity != "block")

    def summary(self) -> str:
        """A report for humans: what failed, where, and how to fix or override it."""
        source = self.data_path or "the data"
        where = f"{source} ({self.rows} rows, suite '{self.suite_name}')"
        warned = f" with {len(self.warnings)} warning(s)" if self.warnings else ""
        if self.success:
            met = self.evaluated - len(self.failures)
            lines = [f"Validation passed{warned}: {met} of {self.evaluated} expectations met by {where}."]
        else:
            blocking = f"{len(self.blocking)} blocking of {self.evaluated} expectations"
            lines = [f"Validation FAILED: {blocking} not met by {where}{warned}."]
        lines += [f"  - {failure.describe()}" for failure in self.blocking + self.warnings]
        if self.failures:
            suite = self.suite_path or "the suite file"
            lines.append(
                f"Fix the data, or, if the change is intended, update {suite} "
                "(redraft it with `mlops contract draft DATA`, or set the check's severity to warn)."
            )
        return "\n".join(lines)


def validate_frame(frame: pd.DataFrame, suite: str | Path | Mapping[str, Any]) -> ValidationResult:
    """Run a suite (a file, or a suite dict) against ``frame`` in a throw-away in-memory GX context.

    The run fails only on expectations of severity ``critical`` (a contract's ``block``);
    ``warning`` ones are reported in :attr:`ValidationResult.warnings`.
    """
    loaded = _load_suite(suite)
    batch = _ephemeral_batch(frame)
    outcome = batch.validate(loaded, result_format=dict(_RESULT_FORMAT))
    failures = [_failure(item, set(map(str, frame.columns))) for item in outcome.results if not item.success]
    configs = [item.expectation_config for item in outcome.results]
    return ValidationResult(
        success=not any(failure.severity == "block" for failure in failures),
        suite_name=loaded.name,
        rows=len(frame),
        evaluated=int(outcome.statistics["evaluated_expectations"]),
        failures=tuple(sorted(failures, key=lambda failure: (failure.column is not None, failure.column or ""))),
        suite_path=None if isinstance(suite, Mapping) else str(suite),
        checks=checked_expectations(
            {"type": c.type, "kwargs": dict(c.kwargs), "severity": str(c.severity.value)} for c in configs
        ),
    )


def validate_file(path: str | Path, suite_path: str | Path) -> ValidationResult:
    """Validate a CSV file; an unreadable file raises :class:`DataError`, not a GX traceback."""
    frame = load_table(path)
    result = validate_frame(frame, suite_path)
    return replace(result, data_path=str(path))


def require_valid(result: ValidationResult) -> None:
    """The gate: stop the run with :class:`ValidationFailed` (exit code 1) unless the data passed."""
    if not result.success:
        raise ValidationFailed(result.summary(), result)


def checked_expectations(expectations: Iterable[Mapping[str, Any]]) -> tuple[CheckedExpectation, ...]:
    """The checks of a suite's expectations (GX-shaped dicts: ``type``, ``kwargs``, ``severity``), for the report."""
    return tuple(
        CheckedExpectation(
            expectation=item["type"],
            column=(item.get("kwargs") or {}).get("column"),
            severity="block" if item.get("severity", "critical") == "critical" else "warn",
            details=_details(dict(item.get("kwargs") or {}), {}, None),
        )
        for item in expectations
    )


def write_html_report(result: ValidationResult, path: str | Path) -> Path:
    """Write a self-contained HTML page listing every check: failures first and open, passed ones folded."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_render_html(result), encoding="utf-8")
    return path


def draft_suite(
    frame: pd.DataFrame,
    target: str,
    name: str,
    margin: float = 0.1,
    *,
    min_rows: int = DEFAULT_MIN_ROWS,
) -> dict[str, Any]:
    """Draft a GX suite from training data, as a JSON-ready dict to review and commit.

    - the columns must match the training columns exactly (names, not order);
    - at least ``min_rows`` rows (or all the training rows, if fewer);
    - each feature: no nulls, a numeric type, values within the observed range widened
      by ``margin`` x range on each side, never below zero for a column that never was
      (non-numeric features: a text or ``bool`` type);
    - the target: no nulls, values among the observed labels.

    Load the result with ``great_expectations.ExpectationSuite(**suite)``.
    """
    if target not in frame.columns:
        raise ConfigError(f"Target column '{target}' is not in the training data. Fix data.target in the config.")
    expectations = [
        # exact_match defaults to True; GX drops default kwargs when it saves a suite.
        _expectation("expect_table_columns_to_match_set", column_set=sorted(map(str, frame.columns))),
        _expectation("expect_table_row_count_to_be_between", min_value=min(min_rows, len(frame))),
    ]
    for column in sorted(map(str, frame.columns)):
        drafted = _target_expectations if column == target else _feature_expectations
        expectations += drafted(frame[column], column, margin)
    meta = {"great_expectations_version": _gx_version(), "generated_by": "mlops.validation.draft_suite"}
    notes = f"Drafted from {len(frame)} training rows with margin {margin}; review before committing."
    return {"name": name, "id": None, "expectations": expectations, "meta": meta, "notes": notes}


def write_suite(suite: dict[str, Any], path: str | Path | None) -> Path:
    """Write a suite as pretty, key-sorted JSON, so regenerating it gives a readable diff."""
    from mlops.contract import contract_file

    path = contract_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(suite, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


# --- GX plumbing ---------------------------------------------------------------------

_SUITE_FIX = "Fix the file, or draft a new one with `python -m mlops.validation <train.csv> <suite.json>`."


def _load_suite(source: str | Path | Mapping[str, Any]) -> ExpectationSuite:
    """Read and check the suite; GX itself would log and silently drop a bad expectation."""
    import great_expectations as gx

    path = Path("<suite>") if isinstance(source, Mapping) else Path(source)
    raw = json.loads(json.dumps(source)) if isinstance(source, Mapping) else _read_suite_json(path)
    for index, item in enumerate(raw.get("expectations") or []):
        _check_expectation(path, index, item)
    try:
        return gx.ExpectationSuite(**raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Suite file {path} is not a valid expectation suite: {exc}. {_SUITE_FIX}") from None


def _read_suite_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"Suite file {path} does not exist. Check data.suite in the config. {_SUITE_FIX}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Suite file {path} is not valid JSON: {exc}. {_SUITE_FIX}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"Suite file {path} must hold a JSON object, not {type(raw).__name__}. {_SUITE_FIX}")
    return raw


def _check_expectation(path: Path, index: int, item: Any) -> None:
    from great_expectations.exceptions import GreatExpectationsError
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    try:
        ExpectationConfiguration(**item).to_domain_obj()
    except (TypeError, ValueError, GreatExpectationsError) as exc:
        kind = item.get("type", "?") if isinstance(item, dict) else "?"
        problem = " ".join(str(exc).split())
        message = f"Suite file {path}: expectation #{index} ({kind}) is invalid: {problem}. {_SUITE_FIX}"
        raise ConfigError(message) from None


def _ephemeral_batch(frame: pd.DataFrame) -> Any:
    """A whole-dataframe batch in an in-memory context: no files, no progress bars, no analytics."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    asset = context.data_sources.add_pandas("mlops").add_dataframe_asset("table")
    definition = asset.add_batch_definition_whole_dataframe("whole_table")
    return definition.get_batch(batch_parameters={"dataframe": frame})


def _failure(item: Any, columns: set[str]) -> FailedExpectation:
    """Flatten one GX ``ExpectationValidationResult`` into our dataclass."""
    config = item.expectation_config
    kwargs = dict(config.kwargs)
    # GX's own errors for a missing column vary by expectation (some say "list index out of range").
    missing = kwargs.get("column") is not None and kwargs["column"] not in columns
    error = MISSING_COLUMN if missing else _error_message(item.exception_info)
    return failure_from_result(config.type, kwargs, str(config.severity.value), item.result or {}, error)


MISSING_COLUMN = "the column is missing from the data"


def failure_from_result(
    kind: str, kwargs: Mapping[str, Any], severity: str, result: Mapping[str, Any], error: str | None = None
) -> FailedExpectation:
    """One failed expectation from GX-shaped parts, so GX and the vectorised checks report alike.

    ``severity`` is GX's (``critical`` or ``warning``); ``result`` holds GX's result keys
    (``unexpected_count``, ``unexpected_percent``, ``partial_unexpected_list``, ``observed_value``,
    ``details``).
    """
    percent = result.get("unexpected_percent")
    return FailedExpectation(
        expectation=kind,
        column=kwargs.get("column"),
        severity="block" if severity == "critical" else "warn",
        unexpected_count=result.get("unexpected_count"),
        unexpected_percent=None if percent is None else float(percent),
        sample_values=tuple(map(_native, result.get("partial_unexpected_list") or ()))[:SAMPLE_SIZE],
        details=_details(dict(kwargs), dict(result), error),
    )


def _details(kwargs: dict[str, Any], result: dict[str, Any], error: str | None) -> str:
    parts = [f"{key}={_short(value)}" for key, value in kwargs.items() if key not in _HIDDEN_KWARGS]
    mismatched = (result.get("details") or {}).get("mismatched") or {}
    parts += [f"{kind} columns={sorted(names)}" for kind, names in sorted(mismatched.items()) if names]
    if "observed_value" in result and not mismatched:
        parts.append(f"observed={_short(result['observed_value'])}")
    if error:
        parts.append(f"error: {error}")
    return ", ".join(parts)


def _short(value: Any) -> str:
    if isinstance(value, (list, tuple, set)) and len(value) > SAMPLE_SIZE:
        return f"[{len(value)} values]"
    return repr(value)


def _native(value: Any) -> Any:
    """numpy scalars to Python ones, so a result can be dumped as JSON."""
    return value.item() if hasattr(value, "item") else value


def _error_message(info: Any) -> str | None:
    """GX nests exception info by metric when a metric failed, e.g. for a missing column."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return info.get("exception_message")
    nested = [value.get("exception_message") for value in info.values() if isinstance(value, dict)]
    return next((message for message in nested if message), None)


# --- Drafting --------------------------------------------------------------------------


def _expectation(kind: str, **kwargs: Any) -> dict[str, Any]:
    return {"type": kind, "kwargs": kwargs, "meta": {}, "severity": "critical"}


def _feature_expectations(values: pd.Series, column: str, margin: float) -> list[dict[str, Any]]:
    import pandas as pd

    checks = [_expectation("expect_column_values_to_not_be_null", column=column)]
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        kinds = ["bool"] if pd.api.types.is_bool_dtype(values) else list(TEXT_TYPES)
        return checks + [_expectation("expect_column_values_to_be_in_type_list", column=column, type_list=kinds)]
    low, high = float(values.min()), float(values.max())
    spread = (high - low) * margin
    return checks + [
        _expectation("expect_column_values_to_be_in_type_list", column=column, type_list=list(NUMERIC_TYPES)),
        _expectation(
            "expect_column_values_to_be_between",
            column=column,
            min_value=min(low, _lower_bound(low, spread)),
            max_value=max(high, _round_out(high + spread, up=True)),
        ),
    ]


def _target_expectations(values: pd.Series, column: str, margin: float) -> list[dict[str, Any]]:
    # margin is unused: labels are a closed set; the signature matches _feature_expectations.
    labels = sorted(values.dropna().unique().tolist())
    return [
        _expectation("expect_column_values_to_not_be_null", column=column),
        _expectation("expect_column_values_to_be_in_set", column=column, value_set=labels),
    ]


def _lower_bound(low: float, spread: float) -> float:
    """Widen below the data, but never below zero for a column that was never negative."""
    bound = _round_out(low - spread, up=False)
    return max(bound, 0.0) if low >= 0 else bound


def _round_out(value: float, up: bool, digits: int = 6) -> float:
    """Round away from the data to ``digits`` significant digits, so the suite file stays readable."""
    if value == 0 or not math.isfinite(value):
        return value
    scale = 10.0 ** (digits - 1 - math.floor(math.log10(abs(value))))
    rounded = (math.ceil if up else math.floor)(value * scale)
    return rounded / scale


def _gx_version() -> str:
    from importlib.metadata import version

    return version("great_expectations")


# --- HTML ------------------------------------------------------------------------------

_HTML_COLUMNS = ("Severity", "Expectation", "Column", "Failing rows", "Sample values", "Details")
_PASSED_COLUMNS = ("Severity", "Expectation", "Column", "Expected")
_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}"
    "table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}"
    ".pass{color:#1a7f37}.fail{color:#cf222e}summary{cursor:pointer;font-weight:600;margin:.8rem 0}"
)


def _render_html(result: ValidationResult) -> str:
    """Every check with its outcome: failures first and open (blocking, then warnings), passed ones folded."""
    e = html.escape
    status = '<span class="pass">PASSED</span>' if result.success else '<span class="fail">FAILED</span>'
    failed = result.blocking + result.warnings
    passed = result.passed
    sections = []
    if failed:
        header = "".join(f"<th>{name}</th>" for name in _HTML_COLUMNS)
        rows = "".join(_html_row(failure) for failure in failed)
        sections.append(f'<details open><summary class="fail">Failed: {len(failed)} check(s)</summary>'
                        f"<table><tr>{header}</tr>{rows}</table></details>")
    if passed:
        header = "".join(f"<th>{name}</th>" for name in _PASSED_COLUMNS)
        rows = "".join(_passed_row(check) for check in passed)
        sections.append(f'<details><summary class="pass">Passed: {len(passed)} check(s)</summary>'
                        f"<table><tr>{header}</tr>{rows}</table></details>")
    elif not result.checks and result.evaluated > len(failed):
        sections.append(f"<p>{result.evaluated - len(failed)} check(s) passed (not listed: this run did not "
                        "record them one by one).</p>")
    met = max(result.evaluated - len(failed), 0) if not result.checks else len(passed)
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>Validation: {e(result.suite_name)}</title>'
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>Validation {status}</h1>"
        f"<p>Suite <b>{e(result.suite_name)}</b> on {e(result.data_path or 'a data frame')}: "
        f"{result.rows} rows, {result.evaluated} expectations: {met} passed, {len(failed)} failed "
        f"({len(result.blocking)} blocking, {len(result.warnings)} warnings).</p>"
        f"{''.join(sections)}{_html_fix(result)}</body></html>\n"
    )


def _passed_row(check: CheckedExpectation) -> str:
    cells = (check.severity, check.expectation, check.column or "", check.details)
    return "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>"


def _html_fix(result: ValidationResult) -> str:
    if not result.failures:
        return ""
    where = html.escape(result.suite_path or "the suite file")
    return (
        f"<p>Fix the data, or, if the change is intended, update <code>{where}</code>: redraft it with "
        "<code>mlops contract draft DATA</code>, or set the check's severity to <code>warn</code>.</p>"
    )


def _html_row(failure: FailedExpectation) -> str:
    e = html.escape
    count = "" if failure.unexpected_count is None else str(failure.unexpected_count)
    if failure.unexpected_percent is not None:
        count += f" ({failure.unexpected_percent:.1f}%)"
    samples = ", ".join(map(str, failure.sample_values))
    cells = (failure.severity, failure.expectation, failure.column or "", count, samples, failure.details)
    return "<tr>" + "".join(f"<td>{e(cell)}</td>" for cell in cells) + "</tr>"


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m mlops.validation <train.csv> <suite.json>")
    from mlops.config import load_settings

    target = load_settings().data.target
    drafted = draft_suite(load_table(sys.argv[1]), target=target, name=Path(sys.argv[2]).stem)
    print(write_suite(drafted, sys.argv[2]))
