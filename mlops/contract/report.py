"""The validation report: one self-contained HTML page per run, for a reviewer rather than a log.

Failures come first and open (blocking, then warnings), with counts, sample values and
the fix; the checks that passed follow, folded. The page needs no network and no
assets, so it can be attached to an MLflow run or a Prefect artifact as it is.

Example::

    write_html_report(validate_with_contract(frame, "data/contracts/breast_cancer.yaml"), "reports/validation.html")
"""

from __future__ import annotations

import html
from pathlib import Path

from mlops.contract.results import CheckedExpectation, FailedExpectation, ValidationResult

__all__ = ["write_html_report"]

_HTML_COLUMNS = ("Severity", "Expectation", "Column", "Failing rows", "Sample values", "Details")
_PASSED_COLUMNS = ("Severity", "Expectation", "Column", "Expected")
_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}"
    "table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}"
    ".pass{color:#1a7f37}.fail{color:#cf222e}summary{cursor:pointer;font-weight:600;margin:.8rem 0}"
)


def write_html_report(result: ValidationResult, path: str | Path) -> Path:
    """Write a self-contained HTML page listing every check: failures first and open, passed ones folded."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_render_html(result), encoding="utf-8")
    return path


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
