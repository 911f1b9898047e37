"""What a validation run found: small frozen dataclasses, free of GX objects.

Every evaluator (the fast one, :mod:`mlops.contract.checks`, and GX's,
:mod:`mlops.contract.gx`) reports through :func:`failure_from_result`, so a failure
reads the same whoever found it. This module imports nothing else of the package:
all of it can depend on these types.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MISSING_COLUMN",
    "SAMPLE_SIZE",
    "CheckedExpectation",
    "FailedExpectation",
    "ValidationResult",
    "checked_expectations",
    "failure_from_result",
]

# How many failing values a failure shows.
SAMPLE_SIZE = 5
MISSING_COLUMN = "the column is missing from the data"
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
