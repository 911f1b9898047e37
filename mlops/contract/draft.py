"""Drafting a contract from training data (GX 1.x has no profiler): a first version to review.

Types from dtypes, observed ranges widened by a margin, category sets for text columns
with few distinct values, tolerated null rates, the task from the target, and a role
other than ``feature`` for identifiers, dates and all-null columns.

Example::

    contract = draft_contract(load_table("data/train.csv"), target="target", name="breast_cancer")
    write_contract(contract, "data/contracts/breast_cancer.yaml")
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import pandas as pd

from mlops.contract.spec import ColumnContract, Contract, Role
from mlops.errors import ConfigError

__all__ = ["DEFAULT_MARGIN", "MAX_CATEGORIES", "MAX_CLASSES", "draft_contract", "infer_task"]

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
    if values.dtype != object:
        return False
    sample = values.dropna().astype(str).head(200)
    if sample.empty or not sample.str.contains(r"^\d{1,4}[-/.:]\d{1,2}", regex=True).all():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    return bool(parsed.notna().mean() >= 0.95)


def _lower(low: float, spread: float) -> float:
    """Widen below the data, but never below zero for a column that was never negative."""
    bound = _round_out(low - spread, up=False)
    return min(low, max(bound, 0.0) if low >= 0 else bound)


def _round_out(value: float, up: bool, digits: int = 6) -> float:
    """Round away from the data to ``digits`` significant digits, so the file stays readable."""
    if value == 0 or not math.isfinite(value):
        return value
    scale = 10.0 ** (digits - 1 - math.floor(math.log10(abs(value))))
    return (math.ceil if up else math.floor)(value * scale) / scale
