"""The data contract: one readable YAML file per dataset, enforced at every stage.

A contract names the columns (type, nullability, range, allowed categories), the
target, the task type and the minimum row count, each check with a severity:
``block`` (the gate fails) or ``warn`` (reported, the run continues).
:func:`to_suite` turns the contract into a Great Expectations suite, which
:mod:`mlops.contract_checks` evaluates vectorised with GX's exact findings (GX itself
for what it does not cover); the same contract drives the training gate, batch
scoring, monitoring batches and the serving request check (:mod:`mlops.request_check`).

Defaults (documented in README, "Your data contract"):

- missing or extra columns, a wrong type, nulls in a non-nullable column, a value
  outside the range, fewer rows than ``min_rows`` and a classification target with a
  single class: ``block``;
- an unseen category and an all-constant feature: ``warn``;
- a target's labels (classification): ``block``.

Example::

    contract = draft_contract(load_table("data/train.csv"), target="target", name="breast_cancer")
    write_contract(contract, "data/contracts/breast_cancer.yaml")
    result = validate_with_contract(frame, "data/contracts/breast_cancer.yaml")
"""

from __future__ import annotations

import difflib
import logging
import math
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlops.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from mlops.config import Settings
    from mlops.validation import FailedExpectation, ValidationResult

__all__ = [
    "check_with_report",
    "DEFAULT_MARGIN",
    "DEFAULT_SEVERITY",
    "ColumnContract",
    "Contract",
    "contract_diff",
    "contract_files",
    "contract_to_yaml",
    "draft_contract",
    "excluded_columns_note",
    "infer_task",
    "load_contract",
    "to_suite",
    "validate_file_in_chunks",
    "validate_file_with_contract",
    "validate_with_contract",
    "write_contract",
]

Severity = Literal["block", "warn"]
Check = Literal["type", "nullable", "range", "categories", "constant"]
# What a column is for: a model input, or kept out of the features (and said so by the draft).
Role = Literal["feature", "id", "time", "ignore"]
Scope = Literal["training", "batch"]
DEFAULT_SEVERITY: dict[str, Severity] = {
    "type": "block",
    "nullable": "block",
    "range": "block",
    "categories": "warn",
    "constant": "warn",
}
# Observed ranges are widened by this share of the range on each side (never below 0
# for a column that never was negative).
DEFAULT_MARGIN = 0.1
# A text column with at most this many distinct values gets a category set.
MAX_CATEGORIES = 50
# An integer-valued target with at most this many distinct values is a class label.
MAX_CLASSES = 20
# Fewer rows than this and "unique per row" says nothing about being an identifier.
MIN_ROWS_FOR_ID = 20
_ID_NAMES = ("id", "uuid", "guid", "key", "index")
_GX_SEVERITY = {"block": "critical", "warn": "warning"}
_FIX = "Fix the file, or draft one with `mlops contract draft DATA`."


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ColumnContract(_Strict):
    """What one column must look like; ``severity`` overrides the default per check."""

    name: str
    type: Literal["float", "int", "str", "bool"]
    role: Role = Field("feature", description="feature, or id / time / ignore: checked, but not a model input.")
    nullable: bool = False
    max_null_rate: float | None = Field(None, ge=0.0, le=1.0, description="Tolerated share of nulls if nullable.")
    # int before float, so an integer column's bounds stay integers (pydantic tries in order).
    min: int | float | None = None
    max: int | float | None = None
    categories: list[str | int | float | bool] | None = None
    severity: dict[Check, Severity] = {}

    def severity_of(self, check: str) -> Severity:
        return self.severity.get(check, DEFAULT_SEVERITY[check])  # type: ignore[call-overload]


class Contract(_Strict):
    """One dataset's contract: its columns, target, task type and minimum size."""

    version: int = Field(1, ge=1, description="Bump when the contract changes meaning.")
    name: str
    target: str
    task: Literal["classification", "regression"]
    min_rows: int = Field(1, ge=1)
    columns: list[ColumnContract]

    @property
    def features(self) -> list[ColumnContract]:
        """The model's inputs: every column but the target and those with another role."""
        return [column for column in self.columns if column.name != self.target and column.role == "feature"]

    @property
    def target_column(self) -> ColumnContract:
        return next(column for column in self.columns if column.name == self.target)

    @property
    def excluded(self) -> list[ColumnContract]:
        """Columns checked by the gate but kept out of the features (identifiers, dates, ignored)."""
        return [column for column in self.columns if column.name != self.target and column.role != "feature"]


# --- Files -------------------------------------------------------------------------


def contract_file(path: str | Path | None) -> Path:
    """``path`` as a Path; None (a config that was never loaded, so no default filled in) is a ConfigError."""
    if path is None:
        raise ConfigError(f"No data contract is configured: set data.contract in mlops.yaml. {_FIX}")
    return Path(path)


def load_contract(path: str | Path | None) -> Contract:
    """Read and check a contract file; every problem is a :class:`ConfigError` naming the fix."""
    import yaml

    path = contract_file(path)
    if not path.is_file():
        raise ConfigError(f"Contract file {path} does not exist. Check data.contract in the config. {_FIX}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        contract = Contract.model_validate(raw)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Contract file {path} is not valid YAML: {exc}. {_FIX}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"Contract file {path} is invalid: {problems}. {_FIX}") from None
    if contract.target not in {column.name for column in contract.columns}:
        raise ConfigError(f"Contract file {path}: target '{contract.target}' is not among its columns. {_FIX}")
    return contract


def contract_to_yaml(contract: Contract) -> str:
    """The contract as stable, readable YAML (keys in declaration order, defaults omitted)."""
    import yaml

    data = contract.model_dump(mode="json", exclude_defaults=True)
    data = {"version": contract.version, **data}
    data["columns"] = [column.model_dump(mode="json", exclude_defaults=True) for column in contract.columns]
    header = "# Data contract: see README, 'Your data contract'. Severities: block | warn.\n"
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def write_contract(contract: Contract, path: str | Path | None) -> Path:
    path = contract_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(contract_to_yaml(contract), encoding="utf-8")
    return path


def contract_diff(current: Contract, drafted: Contract, path: str | Path | None = "contract") -> str:
    """A unified diff of what a new draft would change; empty when nothing would."""
    lines = difflib.unified_diff(
        contract_to_yaml(current).splitlines(keepends=True),
        contract_to_yaml(drafted).splitlines(keepends=True),
        fromfile=f"{path} (current)",
        tofile=f"{path} (draft)",
    )
    return "".join(lines)


def contract_files(settings: Settings) -> list[Path]:
    """The contract and its generated GX suite, to log with every training run."""
    return [path for path in (settings.data.contract, settings.data.suite) if path is not None and path.is_file()]


# --- Drafting ----------------------------------------------------------------------


def draft_contract(
    frame: pd.DataFrame, target: str, name: str, *, margin: float = DEFAULT_MARGIN, min_rows: int = 50
) -> Contract:
    """Infer a contract from training data (GX 1.x has no profiler): review before committing.

    Types from dtypes; observed ranges widened by ``margin`` x range on each side
    (integers stay integers); category sets for text columns with few distinct values;
    nullable columns with twice the observed null rate tolerated; the task from the
    target (text, bool or few integer values: classification). Identifiers (unique per
    row), dates and all-null columns get a role other than ``feature``: checked, not
    used as model inputs (:attr:`Contract.excluded`).
    """
    if target not in frame.columns:
        known = ", ".join(map(str, list(frame.columns)[:20]))
        raise ConfigError(f"Target column '{target}' is not in the data (columns: {known}). Set data.target.")
    role = _role(frame[target], str(target))
    if role != "feature":  # a model would learn nothing, or a lookup table: refused before anything is trained
        what = "is unique per row (an identifier)" if role == "id" else "holds dates or times"
        raise ConfigError(f"'{target}' cannot be the target: it {what}. Choose the column to predict.")
    task = infer_task(frame[target])
    columns = [
        _draft_target(frame[column], str(column), task, margin) if column == target
        else _draft_column(frame[column], str(column), margin)
        for column in frame.columns
    ]
    return Contract(name=name, target=target, task=task, min_rows=min(min_rows, len(frame)), columns=columns)


def infer_task(labels: pd.Series) -> Literal["classification", "regression"]:
    """Text and bool labels, and numbers with few distinct integer values, are classes."""
    import pandas as pd

    values = labels.dropna()
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return "classification"
    integral = bool((values == values.round()).all())
    return "classification" if integral and values.nunique() <= MAX_CLASSES else "regression"


def _draft_target(values: pd.Series, name: str, task: str, margin: float) -> ColumnContract:
    column = _draft_column(values, name, margin, role_hints=False)
    if task == "regression":  # new data may well reach past the values seen so far: reported, not blocked
        return column.model_copy(update={"severity": {"range": "warn"}})
    labels = sorted(values.dropna().unique().tolist(), key=lambda label: (str(type(label)), label))
    return column.model_copy(
        update={"categories": labels, "min": None, "max": None, "severity": {"categories": "block"}}
    )


def _draft_column(values: pd.Series, name: str, margin: float, role_hints: bool = True) -> ColumnContract:
    import pandas as pd

    nulls = float(values.isna().mean())
    spec: dict[str, Any] = {"name": name, "nullable": nulls > 0}
    if nulls > 0:
        spec["max_null_rate"] = min(1.0, round(2 * nulls, 4))
    if nulls == 1.0:
        return ColumnContract(type="float", role="ignore" if role_hints else "feature", **spec)
    role = _role(values, name) if role_hints else "feature"
    if role != "feature":
        spec["role"] = role
    if pd.api.types.is_bool_dtype(values) or _all_bool(values):
        return ColumnContract(type="bool", **spec)
    if not pd.api.types.is_numeric_dtype(values):
        distinct = sorted(map(str, values.dropna().unique()))
        categories = distinct if len(distinct) <= MAX_CATEGORIES and role == "feature" else None
        return ColumnContract(type="str", categories=categories, **spec)
    present = values.dropna()
    # pandas reads an integer column with nulls as floats: integral values with nulls are ints.
    integral = pd.api.types.is_integer_dtype(values) or (nulls > 0 and bool((present == present.round()).all()))
    low, high = values.min(), values.max()
    if role == "id":
        return ColumnContract(type="int" if integral else "float", **spec)
    if integral:  # an int column (a float one too when it only has nulls among integers)
        low, high = int(low), int(high)
        spread = (high - low) * margin
        lowest = math.floor(low - spread)
        bound = min(low, max(lowest, 0) if low >= 0 else lowest)
        return ColumnContract(type="int", min=bound, max=math.ceil(high + spread), **spec)
    low, high = float(low), float(high)
    spread = (high - low) * margin
    return ColumnContract(type="float", min=_lower(low, spread), max=max(high, _round_out(high + spread, up=True)), **spec)


def _all_bool(values: pd.Series) -> bool:
    """An ``object`` column of True/False with nulls (pandas reads it so from CSV)."""
    present = values.dropna()
    return values.dtype == object and len(present) > 0 and all(isinstance(v, bool) for v in present.head(1000))


def _role(values: pd.Series, name: str) -> Role:
    """``id`` for a column unique per row, ``time`` for dates and times, else ``feature``."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(values) or _looks_like_time(values):
        return "time"
    present = values.dropna()
    unique = len(present) >= MIN_ROWS_FOR_ID and present.is_unique and len(present) == len(values)
    if not unique or pd.api.types.is_float_dtype(values) or pd.api.types.is_bool_dtype(values):
        return "feature"
    if not pd.api.types.is_numeric_dtype(values):
        return "id"  # a text value per row is a key, never a category
    words = name.lower().replace("-", "_").replace(" ", "_").split("_")
    steps = present.sort_values().diff().dropna()
    return "id" if any(word in _ID_NAMES for word in words) or bool((steps == 1).all()) else "feature"


def _looks_like_time(values: pd.Series) -> bool:
    """Text that parses as dates or times (ISO-like, with separators), on a sample."""
    import warnings

    import pandas as pd

    if values.dtype != object:
        return False
    sample = values.dropna().astype(str).head(200)
    if sample.empty or not sample.str.contains(r"^\d{1,4}[-/.:]\d{1,2}", regex=True).all():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    return bool(parsed.notna().mean() >= 0.95)


def excluded_columns_note(contract: Contract) -> str | None:
    """One line saying which columns the draft kept out of the features, and why."""
    reasons = {"id": "unique per row: an identifier", "time": "a date or time", "ignore": "no values"}
    if not contract.excluded:
        return None
    listed = "; ".join(f"{column.name} ({reasons[column.role]})" for column in contract.excluded)
    return f"Not used as features: {listed}. Set role: feature in the contract to use one."


def _lower(low: float, spread: float) -> float:
    bound = _round_out(low - spread, up=False)
    return min(low, max(bound, 0.0) if low >= 0 else bound)


def _round_out(value: float, up: bool, digits: int = 6) -> float:
    """Round away from the data to ``digits`` significant digits, so the file stays readable."""
    if value == 0 or not math.isfinite(value):
        return value
    scale = 10.0 ** (digits - 1 - math.floor(math.log10(abs(value))))
    return (math.ceil if up else math.floor)(value * scale) / scale


# --- The GX suite --------------------------------------------------------------------


def to_suite(contract: Contract, scope: Scope = "training") -> dict[str, Any]:
    """The GX suite that enforces ``contract``; ``batch`` checks features only, any row count.

    ``training`` covers every column, ``min_rows``, the target's classes and
    all-constant features; ``batch`` (scoring, monitoring) is what a batch of
    requests must meet, so no target and no row count.
    """
    columns = contract.columns if scope == "training" else contract.features
    names = sorted(column.name for column in columns)
    expectations = [_gx("expect_table_columns_to_match_set", "block", "columns", column_set=names)]
    if scope == "training":
        expectations.append(
            _gx("expect_table_row_count_to_be_between", "block", "min_rows", min_value=contract.min_rows)
        )
    for column in sorted(columns, key=lambda column: column.name):
        expectations += _column_expectations(column, scope)
    if scope == "training" and contract.task == "classification":
        kwargs = {"column": contract.target, "min_value": 2}
        expectations.append(_gx("expect_column_unique_value_count_to_be_between", "block", "classes", **kwargs))
    meta = {"generated_by": "mlops.contract.to_suite", "contract_version": contract.version, "scope": scope}
    return {"name": contract.name, "id": None, "expectations": expectations, "meta": meta, "notes": None}


def _column_expectations(column: ColumnContract, scope: Scope) -> list[dict[str, Any]]:
    from mlops.validation import NUMERIC_TYPES, TEXT_TYPES

    name = column.name
    types = {"float": NUMERIC_TYPES, "int": NUMERIC_TYPES, "str": TEXT_TYPES, "bool": ("bool",)}[column.type]
    nulls: dict[str, Any] = {"column": name}
    if column.nullable:
        nulls["mostly"] = round(1.0 - (column.max_null_rate if column.max_null_rate is not None else 1.0), 6)
    checks = [
        _gx(
            "expect_column_values_to_be_in_type_list",
            column.severity_of("type"),
            "type",
            column=name,
            type_list=list(types),
        ),
    ]
    if not column.nullable or nulls["mostly"] > 0:
        checks.insert(
            0, _gx("expect_column_values_to_not_be_null", column.severity_of("nullable"), "nullable", **nulls)
        )
    if column.min is not None or column.max is not None:
        bounds = {"min_value": column.min, "max_value": column.max}
        checks.append(
            _gx("expect_column_values_to_be_between", column.severity_of("range"), "range", column=name, **bounds)
        )
    if column.categories is not None:
        kwargs: dict[str, Any] = {"column": name, "value_set": list(column.categories)}
        checks.append(
            _gx("expect_column_values_to_be_in_set", column.severity_of("categories"), "categories", **kwargs)
        )
    if scope == "training" and column.type != "bool" and not column.categories:
        kwargs = {"column": name, "min_value": 2}
        checks.append(
            _gx("expect_column_unique_value_count_to_be_between", column.severity_of("constant"), "constant", **kwargs)
        )
    return checks


def _gx(kind: str, severity: Severity, check: str, **kwargs: Any) -> dict[str, Any]:
    kwargs = {key: value for key, value in kwargs.items() if value is not None}
    return {"type": kind, "kwargs": kwargs, "meta": {"check": check}, "severity": _GX_SEVERITY[severity]}


# --- Validation ----------------------------------------------------------------------


def validate_with_contract(
    frame: pd.DataFrame, contract_path: str | Path | None, scope: Scope = "training"
) -> ValidationResult:
    """Validate ``frame`` against the contract's GX suite; warn-level failures don't fail it.

    The suite is evaluated by :func:`mlops.contract_checks.check_frame` (GX's findings,
    vectorised; GX itself for anything it does not cover). In ``batch`` scope a target
    column, if present, is ignored (scoring files may carry labels).
    """
    from mlops.contract_checks import check_frame

    contract = load_contract(contract_path)
    frame, unparsed = _parse_numbers(_in_scope(frame, contract, scope), contract)
    result = check_frame(frame, to_suite(contract, scope))
    failures = unparsed + result.failures
    success = result.success and not any(failure.severity == "block" for failure in unparsed)
    return replace(result, failures=failures, success=success, suite_path=str(contract_path))


_UNPARSED = "values_parse_as_numbers"


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
    import pandas as pd

    from mlops.validation import SAMPLE_SIZE, FailedExpectation

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
    from mlops.validation import write_html_report

    result = replace(validate_with_contract(frame, contract_path, scope=scope), data_path=source)
    return result, write_html_report(result, report_path)


def validate_file_with_contract(
    path: str | Path, contract_path: str | Path, scope: Scope = "training"
) -> ValidationResult:
    """Read a CSV file (a :class:`DataError` if unreadable) and validate it against the contract."""
    from mlops.data import load_table

    load_contract(contract_path)  # a broken contract is reported before the data is read
    result = validate_with_contract(load_table(path), contract_path, scope)
    return replace(result, data_path=str(path))


# --- Large files ---------------------------------------------------------------------

# Checks about the whole table, computed exactly while streaming rather than per chunk.
_WHOLE_TABLE = ("min_rows", "classes", "constant")
DEFAULT_CHUNK_ROWS = 100_000


def validate_file_in_chunks(
    path: str | Path, contract_path: str | Path, scope: Scope = "training", chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> ValidationResult:
    """Validate a CSV file of any length in memory bounded by ``chunk_rows``; the result is exact.

    Row-level checks (type, nulls, range, categories, columns) run on each chunk
    (:func:`mlops.contract_checks.check_frame`) and their failing-row counts are summed
    (samples: the first ones found); the whole-table checks (``min_rows``, a
    classification target's classes, constant features) are counted exactly over the
    stream, since a chunk cannot judge them. The file is read by pyarrow when it reads
    it as pandas would (:func:`mlops.data.iter_table_fast`), else by pandas from the start.
    """
    from mlops.data import FastReadRefused, iter_table, iter_table_fast

    contract = load_contract(contract_path)
    numeric = [column.name for column in contract.columns if column.type in ("float", "int")]
    try:
        result = _validate_chunks(iter_table_fast(path, chunk_rows, numeric), contract, scope)
    except FastReadRefused:
        result = _validate_chunks(iter_table(path, chunk_rows), contract, scope)
    return replace(result, data_path=str(path), suite_path=str(contract_path))


def _validate_chunks(chunks: Iterator[pd.DataFrame], contract: Contract, scope: Scope) -> ValidationResult:
    from mlops.contract_checks import check_frame
    from mlops.validation import ValidationResult

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
    from mlops.validation import SAMPLE_SIZE

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
    from mlops.validation import MISSING_COLUMN, failure_from_result

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
