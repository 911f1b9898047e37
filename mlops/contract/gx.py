"""Great Expectations as the evaluator of a suite: the reference the fast checks are compared with.

A thin adapter over Great Expectations 1.x. A suite is a dict or a JSON file in GX's
``ExpectationSuite`` format (:func:`mlops.contract.suite.to_suite` generates the
contract's); each run builds a throw-away in-memory GX context, so nothing is written
to the home folder or the working directory. GX is imported inside the functions that
use it (it takes seconds), so importing this module stays light. Results come back as
:class:`~mlops.contract.results.ValidationResult`, so callers never touch GX objects.

Example::

    result = validate_frame(frame, "data/expectations/breast_cancer.json")
    print(result.summary())
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.contract.results import (
    MISSING_COLUMN,
    SAMPLE_SIZE,
    FailedExpectation,
    ValidationResult,
    checked_expectations,
    failure_from_result,
)
from mlops.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations import ExpectationSuite

__all__ = ["validate_frame"]

_RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE_SIZE}
_SUITE_FIX = "Fix the file, or regenerate it from the data contract with `mlops contract suite`."


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


def _error_message(info: Any) -> str | None:
    """GX nests exception info by metric when a metric failed, e.g. for a missing column."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return info.get("exception_message")
    nested = [value.get("exception_message") for value in info.values() if isinstance(value, dict)]
    return next((message for message in nested if message), None)
