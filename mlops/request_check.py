"""The one check every served request passes, built once per served model.

The model's MLflow signature decides which features a request carries and in which
order; the data contract, when it describes those features, adds each one's type,
nullability, range and categories with their severities (without one, the
signature's types decide). ``/predict``, ``/predict_batched`` and ``/arrow/predict``
all go through the same object::

    check = request_check(model_dir, "data/contracts/flowers.yaml")
    checked = check.records([{"sepal length (cm)": 5.1, "garden": "north", ...}])
    model.predict_proba(checked.frame)   # columns in signature order, typed for the model
    checked.warnings                     # {"garden": 1}: warn-level findings, still scored

A refused request raises :class:`RequestRefused` (``status`` 400 or 422) whose
message names each failing column once, with up to three record indexes, e.g.
``records[3].garden: 'west' is not one of ['east', 'north', 'south']``. The work is
a few array operations per column, whatever the number of records, so a
10,000-record request costs milliseconds and a body of bad records costs no more than
a good one. The work is bounded before that, too: :class:`BodyLimits` counts a JSON
body's objects, nesting and values on its bytes before it is parsed, and more records
(or Arrow rows) than ``max_records`` are a 413 before any record is looked at.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import mlflow.models
import numpy as np
import pandas as pd
import pyarrow as pa

from mlops.contract import load_contract
from mlops.errors import MlopsError, ServingError

if TYPE_CHECKING:
    from mlops.contract import ColumnContract, Contract

__all__ = [
    "ARROW_STREAM",
    "BodyLimits",
    "Checked",
    "FeatureSpec",
    "RequestCheck",
    "RequestRefused",
    "check_from_contract",
    "check_from_signature",
    "request_check",
]

Kind = Literal["float", "int", "str", "bool"]
# MLflow signature types -> contract types (anything else cannot be served from JSON).
_SIGNATURE_KINDS: dict[str, Kind] = {
    "double": "float", "float": "float", "long": "int", "integer": "int", "boolean": "bool", "string": "str",
}  # fmt: skip
_JSON_TYPES = {"float": "number", "int": "integer", "str": "string", "bool": "boolean"}
_KIND_NAMES = {"float": "a number", "int": "an integer", "str": "text", "bool": "true or false"}
_SHOWN_INDEXES = 3
_SHOWN_COLUMNS = 10
ARROW_STREAM = "application/vnd.apache.arrow.stream"
_SHAPE = 'The body must be JSON {"records": [{"feature": value, ...}, ...]}'


class RequestRefused(MlopsError):
    """A request the model cannot score; ``status`` is its HTTP status (400 shape, 422 values)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class FeatureSpec:
    """What one feature's values must be; ``minimum``/``maximum`` and ``categories`` with their severities."""

    name: str
    type: Kind
    nullable: bool = False
    minimum: float | None = None
    maximum: float | None = None
    range_blocks: bool = True
    categories: tuple[Any, ...] | None = None
    categories_block: bool = False

    def json_schema(self) -> dict[str, Any]:
        """This feature as an OpenAPI 3.0 schema: type, range and categories (block ones enforced)."""
        schema: dict[str, Any] = {"type": _JSON_TYPES[self.type], "title": self.name}
        notes = []
        if self.minimum is not None or self.maximum is not None:
            bounds = {"minimum": self.minimum, "maximum": self.maximum}
            if self.range_blocks:
                schema.update({key: value for key, value in bounds.items() if value is not None})
            else:
                notes.append(f"expected range [{self.minimum}, {self.maximum}] (outside: scored and counted)")
        if self.categories is not None:
            if self.categories_block:
                schema["enum"] = list(self.categories) + ([None] if self.nullable else [])
            else:
                schema["x-categories"] = list(self.categories)
                notes.append(f"known values {list(self.categories)} (another value is scored and counted)")
        if self.nullable:
            schema["nullable"] = True
            notes.append("may be null or left out")
        if notes:
            schema["description"] = "; ".join(notes)
        return schema

    def example(self) -> Any:
        """A value the check accepts, for the OpenAPI document's example record."""
        if self.categories:
            return self.categories[0]
        if self.type == "str":
            return ""
        if self.type == "bool":
            return False
        low = self.minimum if self.minimum is not None else (self.maximum if self.maximum is not None else 0.0)
        high = self.maximum if self.maximum is not None else low
        middle = (low + high) / 2
        if self.type == "int":
            return min(max(round(middle), math.ceil(low)), math.floor(high)) if low <= high else math.ceil(low)
        return middle


@dataclass(frozen=True)
class Checked:
    """An accepted request: the model's input frame and the warn-level findings per column."""

    frame: pd.DataFrame
    warnings: Mapping[str, int]


@dataclass(frozen=True)
class RequestCheck:
    """The features a served model takes, checked as whole columns (see the module doc).

    ``task`` is the contract's (None when the signature decided the types);
    ``source`` says where the types came from, for messages.
    """

    features: tuple[FeatureSpec, ...]
    task: str | None = None
    source: str = "the model's signature"
    max_records: int | None = None  # serving.max_records: more is refused before any per-record work

    @property
    def names(self) -> list[str]:
        return [feature.name for feature in self.features]

    def records(self, records: Any) -> Checked:
        """Check the JSON records of one request; the frame the model scores, or :class:`RequestRefused`."""
        rows = _record_list(records, self.max_records)
        try:
            frame = pd.DataFrame.from_records(rows, columns=self.names)
        except OverflowError:  # an integer too large for a float (10**400): keep the values as they are
            frame = pd.DataFrame({name: pd.Series([row.get(name) for row in rows], dtype=object) for name in self.names})
        return self.frame(frame, where="records")

    def arrow(self, body: bytes) -> Checked:
        """Check an Arrow IPC stream (one column per feature); same checks, same frame."""
        return self.frame(_arrow_frame(body, self.features, self.max_records), where="rows")

    def frame(self, frame: pd.DataFrame, where: str = "rows") -> Checked:
        """Check a frame holding (at least) every feature column; ``where`` names rows in messages."""
        missing = [name for name in self.names if name not in frame.columns]
        if missing:
            raise RequestRefused(f"Missing feature column(s): {', '.join(missing)}.")
        if len(frame) == 0:
            raise RequestRefused(f"No {where} to score: send at least one.")
        frame = frame[self.names] if list(frame.columns) != self.names else frame
        problems: dict[str, str] = {}
        warnings: dict[str, int] = {}
        numbers = [feature for feature in self.features if feature.type in ("float", "int")]
        others = [feature for feature in self.features if feature.type not in ("float", "int")]
        if numbers:
            frame = _check_numbers(frame, numbers, where, problems, warnings)
        for feature in others:
            given = frame[feature.name]
            values, problem, warned = _check_column(given, feature, where)
            if problem:
                problems[feature.name] = problem
            elif values is not given:
                frame = _replaced(frame, feature.name, values)
            if warned:
                warnings[feature.name] = warned
        if problems:
            raise RequestRefused(_refusal(problems, self.names))
        return Checked(frame, warnings)

    def json_schema(self) -> dict[str, Any]:
        """One record as an OpenAPI 3.0 schema: a property per feature, the required ones listed."""
        return {
            "type": "object",
            "title": "Record",
            "description": f"One record; features from {self.source}. Other keys are ignored.",
            "properties": {feature.name: feature.json_schema() for feature in self.features},
            "required": [feature.name for feature in self.features if not feature.nullable],
            "additionalProperties": True,
            "example": {feature.name: feature.example() for feature in self.features},
        }


# --- Building it -----------------------------------------------------------------------


def request_check(model_dir: str | Path, contract_path: str | Path | None = None) -> RequestCheck:
    """The check for the MLflow model in ``model_dir``; :class:`ServingError` if it cannot be served.

    The contract is used when it describes the model's inputs; one naming none of them
    belongs to another dataset and is left aside (the signature's types decide).
    """
    signature = mlflow.models.Model.load(str(model_dir)).signature
    contract = None
    if contract_path is not None and Path(contract_path).is_file():
        contract = load_contract(contract_path)
    return check_from_signature(signature, contract, where=str(model_dir), contract_path=contract_path)


def check_from_signature(
    signature: Any, contract: Contract | None = None, *, where: str = "the model", contract_path: Any = None
) -> RequestCheck:
    """The check from an MLflow ``ModelSignature`` and, when it describes the inputs, the contract."""
    columns = _signature_columns(signature, where)
    if contract is None or not {column.name for column in contract.columns} & set(columns):
        return RequestCheck(tuple(_from_signature(name, kind, required) for name, (kind, required) in columns.items()))
    features = {column.name: column for column in contract.features}
    extra = [name for name in features if name not in columns]
    unknown = [name for name in columns if name not in features]
    if extra or unknown:
        problems = []
        if extra:
            problems.append(f"the contract's feature(s) {extra} are not inputs of the model")
        if unknown:
            problems.append(f"the model's input(s) {unknown} are not features of the contract")
        raise ServingError(
            f"The model at {where} does not fit the data contract {contract_path}: {'; '.join(problems)}. "
            "It was trained under another contract: train again (`mlops train`), or serve a version trained "
            "under this contract."
        )
    ordered = contract.model_copy(update={"columns": [features[name] for name in columns]})
    return check_from_contract(ordered)


def check_from_contract(contract: Contract) -> RequestCheck:
    """The check of the contract's features alone, in the contract's order (no model needed).

    For clients and tests that want the records a served model would accept.
    """
    specs = tuple(_from_contract(column) for column in contract.features)
    return RequestCheck(specs, task=contract.task, source=f"the data contract {contract.name!r}")


def _signature_columns(signature: Any, where: str) -> dict[str, tuple[Kind, bool]]:
    """Input name -> (type, required), in the signature's order."""
    if signature is None:
        raise ServingError(
            f"The model at {where} has no signature, so its inputs are unknown. Log it with one "
            "(mlflow.models.infer_signature), e.g. by training it with `mlops train`."
        )
    inputs = signature.inputs
    if inputs.is_tensor_spec() or not inputs.has_input_names():
        raise ServingError(f"The model at {where} takes an unnamed tensor; serving needs named columns (a DataFrame).")
    columns: dict[str, tuple[Kind, bool]] = {}
    for spec in inputs.inputs:
        kind = _SIGNATURE_KINDS.get(str(getattr(spec.type, "name", spec.type)))
        if kind is None:
            raise ServingError(
                f"The model at {where} takes input {spec.name!r} of type {spec.type}; serving takes numbers, "
                "integers, text and booleans only."
            )
        columns[spec.name] = (kind, bool(getattr(spec, "required", True)))
    return columns


def _from_signature(name: str, kind: Kind, required: bool) -> FeatureSpec:
    return FeatureSpec(name=name, type=kind, nullable=not required)


def _from_contract(column: ColumnContract) -> FeatureSpec:
    numeric = column.type in ("float", "int")
    return FeatureSpec(
        name=column.name,
        type=column.type,
        nullable=column.nullable or column.severity_of("nullable") == "warn",
        minimum=column.min if numeric else None,
        maximum=column.max if numeric else None,
        range_blocks=column.severity_of("range") == "block",
        categories=tuple(column.categories) if column.categories is not None else None,
        categories_block=column.severity_of("categories") == "block",
    )


# --- The shape of a request ------------------------------------------------------------


def _record_list(records: Any, max_records: int | None = None) -> list[dict[str, Any]]:
    if records is None:
        raise RequestRefused(f"{_SHAPE}; 'records' is missing.", status=400)
    if not isinstance(records, list):
        raise RequestRefused(f"{_SHAPE}; 'records' is {_json_type(records)}, not a list.", status=400)
    if max_records is not None and len(records) > max_records:
        raise RequestRefused(_too_many(len(records), max_records, "records"), status=413)
    if not records:
        raise RequestRefused("'records' is empty: send at least one record.")
    if set(map(type, records)) != {dict}:
        bad = [index for index, record in enumerate(records) if not isinstance(record, dict)]
        shown = ", ".join(f"records[{index}] is {_json_type(records[index])}" for index in bad[:_SHOWN_INDEXES])
        raise RequestRefused(f"{_SHAPE}; every record must be an object: {shown}.", status=400)
    return records


@dataclass(frozen=True)
class BodyLimits:
    """How much structure a JSON body may hold, checked on its bytes before it is parsed.

    Parsing is the costly part of a hostile body: 32 MiB of ``{},`` become 11 million
    Python dicts (gigabytes, tens of seconds) before any check sees them. Counting
    brackets and commas costs a few milliseconds per megabyte; a body over a limit is
    refused with 413, so any body within ``serving.max_request_bytes`` parses into
    at most ``max_objects`` objects and lists and ``max_values`` values::

        BodyLimits(max_items=10_000, max_depth=32, max_values=2_000_000).check(body)

    Objects and lists may number twice ``max_items`` plus ``max_depth``: the records
    (or labels), the body, and as many again for nested values (a record's extra keys
    may hold lists).
    """

    max_items: int  # records (or labels) per request
    max_depth: int  # nesting of objects and lists (a record in the body is at depth 3)
    max_values: int  # values and keys, as commas count them
    what: str = "records"  # what the endpoint takes, for the message

    @property
    def max_objects(self) -> int:
        return 2 * self.max_items + self.max_depth

    def check(self, body: bytes) -> None:
        """Refuse (:class:`RequestRefused`, 413) a body over a limit; strings are not counted."""
        problem = self._problem(body.translate(None, _NOT_BRACKETS), body.count(b","))
        if problem and b'"' in body:  # brackets and commas inside strings are text, not structure
            problem = self._problem(*_structure_outside_strings(body))
        if problem:
            raise RequestRefused(problem, status=413)

    def _problem(self, brackets: bytes, commas: int) -> str | None:
        opened = brackets.count(b"{") + brackets.count(b"[")
        if opened > self.max_objects:
            return (
                f"The body holds {opened} JSON objects and lists, over the limit of {self.max_objects}: send at most "
                f"{self.max_items} {self.what} per request, each an object of plain values."
            )
        depth = _depth(brackets)
        if depth > self.max_depth:
            return f"The body nests objects and lists {depth} deep, over the limit of {self.max_depth} (serving.max_json_depth)."
        if commas + 1 > self.max_values:
            return (
                f"The body holds about {commas + 1} JSON values, over the limit of {self.max_values} "
                "(serving.max_json_values): split it into smaller requests."
            )
        return None


_NOT_BRACKETS = bytes(code for code in range(256) if code not in b"[]{}")


def _structure_outside_strings(body: bytes) -> tuple[bytes, int]:
    """The brackets and the number of commas outside JSON strings, in a few array passes.

    Escaped backslashes and quotes are blanked first; then every byte after an odd
    number of quotes is inside a string.
    """
    text = body.replace(b"\\\\", b"__").replace(b'\\"', b"__") if b"\\" in body else body
    codes = np.frombuffer(text, dtype=np.uint8)
    inside = np.bitwise_xor.accumulate(codes == ord('"'))
    outside = codes[~inside]
    return outside.tobytes().translate(None, _NOT_BRACKETS), int(np.count_nonzero(outside == ord(",")))


def _depth(brackets: bytes) -> int:
    """The deepest nesting of a run of brackets (``[{}]`` is 2)."""
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), np.int8(1), np.int8(-1))
    return int(np.cumsum(steps, dtype=np.int32).max())


def _json_type(value: Any) -> str:
    names = {type(None): "null", bool: "a boolean", str: "a string", list: "a list", dict: "an object"}
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _too_many(count: int | str, limit: int, what: str) -> str:
    return f"The request has {count} {what}, over the limit of {limit} (serving.max_records): split it into smaller requests."


def _arrow_frame(body: bytes, features: tuple[FeatureSpec, ...], max_rows: int | None = None) -> pd.DataFrame:
    """The feature columns of an Arrow IPC stream as pandas columns; types checked on the schema.

    Rows are counted batch by batch before any value is converted: a few bytes of
    Arrow can declare a billion null or dictionary-encoded rows.
    """
    try:
        reader = pa.ipc.open_stream(body)
        batches, rows = [], 0
        for batch in reader:
            rows += batch.num_rows
            if max_rows is not None and rows > max_rows:
                raise RequestRefused(_too_many(f"more than {max_rows}", max_rows, "rows"), status=413)
            batches.append(batch)
        table = pa.Table.from_batches(batches, schema=reader.schema)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise RequestRefused(
            f"The body is not an Arrow IPC stream ({exc}); send one with content-type {ARROW_STREAM}.", status=400
        ) from None
    names = table.column_names
    missing = [feature.name for feature in features if feature.name not in names]
    if missing:
        raise RequestRefused(f"Missing feature column(s): {', '.join(missing)}.")
    twice = [feature.name for feature in features if names.count(feature.name) > 1]
    if twice:
        raise RequestRefused(f"Feature column(s) sent twice: {', '.join(twice)}.")
    columns, problems = [], {}
    for feature in features:
        column = table.column(feature.name)
        if pa.types.is_dictionary(column.type):  # a pandas category column
            column = column.cast(column.type.value_type)
        if not _arrow_fits(column.type, feature.type):
            problems[feature.name] = f"rows.{feature.name}: the column holds {column.type}, not {_KIND_NAMES[feature.type]}"
        columns.append(column)
    if problems:
        raise RequestRefused(_refusal(problems, [feature.name for feature in features]))
    return pa.Table.from_arrays(columns, names=[feature.name for feature in features]).to_pandas()


def _arrow_fits(kind: Any, expected: Kind) -> bool:
    if pa.types.is_null(kind):
        return True  # every value null: the nullability check decides
    if expected in ("float", "int"):
        return pa.types.is_integer(kind) or pa.types.is_floating(kind)
    if expected == "bool":
        return pa.types.is_boolean(kind)
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


# --- Column checks -----------------------------------------------------------------------


def _check_numbers(
    frame: pd.DataFrame, features: list[FeatureSpec], where: str, problems: dict[str, str], warnings: dict[str, int]
) -> pd.DataFrame:
    """Every number feature at once, as one float array: types, nulls, finiteness, integers, ranges.

    A valid request costs a conversion, ``isfinite`` and two comparisons over the
    array; only a refused column is looked at again, to name its records.
    """
    kinds = dict(zip(frame.columns, (dtype.kind for dtype in frame.dtypes)))
    for feature in features:
        if kinds[feature.name] not in "iuf":
            converted, problem = _as_numbers(frame[feature.name], feature, where)
            if problem:
                problems[feature.name] = problem
            else:
                frame = _replaced(frame, feature.name, converted)
    features = [feature for feature in features if feature.name not in problems]
    if not features:
        return frame
    names = [feature.name for feature in features]
    if len(names) == frame.shape[1]:
        array = frame.to_numpy(dtype="float64")
    else:  # column by column: selecting a sub-frame first costs more on small requests
        array = np.column_stack([frame[name].to_numpy(dtype="float64", na_value=np.nan) for name in names])
    plan = _number_plan(tuple(features))
    finite = np.isfinite(array)
    with np.errstate(invalid="ignore"):
        outside = (array < plan.low) | (array > plan.high)
    refused = outside.any(axis=0)
    nulls = infinite = fractional = None
    if not finite.all():
        nulls = np.isnan(array) & ~plan.nullable
        infinite = ~finite & ~np.isnan(array)
        refused |= nulls.any(axis=0) | infinite.any(axis=0)
    if plan.integers.any():
        with np.errstate(invalid="ignore"):
            fractional = finite & (array != np.floor(array)) & plan.integers
        refused |= fractional.any(axis=0)
    for position in np.flatnonzero(refused):
        problems[names[position]] = _number_problem(
            features[position], array[:, position], _column(nulls, position), _column(infinite, position),
            _column(fractional, position), outside[:, position], where,
        )  # fmt: skip
    if plan.warns:
        with np.errstate(invalid="ignore"):
            counts = ((array < plan.warn_low) | (array > plan.warn_high)).sum(axis=0)
        warnings.update({names[position]: int(counts[position]) for position in np.flatnonzero(counts)})
    return frame


def _column(mask: np.ndarray | None, position: Any) -> np.ndarray | None:
    return None if mask is None else mask[:, position]


@dataclass(frozen=True)
class _NumberPlan:
    """Per number feature, as arrays to compare a request against."""

    low: np.ndarray
    high: np.ndarray
    warn_low: np.ndarray
    warn_high: np.ndarray
    integers: np.ndarray
    nullable: np.ndarray
    warns: bool


@lru_cache(maxsize=64)
def _number_plan(features: tuple[FeatureSpec, ...]) -> _NumberPlan:
    def bounds(block: bool) -> tuple[np.ndarray, np.ndarray]:
        low = [-np.inf if f.minimum is None or f.range_blocks != block else float(f.minimum) for f in features]
        high = [np.inf if f.maximum is None or f.range_blocks != block else float(f.maximum) for f in features]
        return np.array(low), np.array(high)

    (low, high), (warn_low, warn_high) = bounds(True), bounds(False)
    return _NumberPlan(
        low=low,
        high=high,
        warn_low=warn_low,
        warn_high=warn_high,
        integers=np.array([feature.type == "int" for feature in features]),
        nullable=np.array([feature.nullable for feature in features]),
        warns=bool(np.isfinite(warn_low).any() or np.isfinite(warn_high).any()),
    )


def _as_numbers(values: pd.Series, feature: FeatureSpec, where: str) -> tuple[pd.Series | None, str | None]:
    """An ``object`` or bool column of a number feature as floats, or the problem with it."""
    if values.dtype.kind == "b":
        return None, _named(feature, where, np.arange(len(values)), values, f"is not {_KIND_NAMES[feature.type]}")
    converted = np.empty(len(values), dtype="float64")
    bad: list[int] = []
    too_large: list[int] = []
    for index, value in enumerate(values.tolist()):
        if value is None or (isinstance(value, float) and value != value):
            converted[index] = np.nan
        elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
            try:
                converted[index] = float(value)
            except OverflowError:
                too_large.append(index)
        else:
            bad.append(index)
    if bad:
        return None, _named(feature, where, np.array(bad), values, f"is not {_KIND_NAMES[feature.type]}")
    if too_large:
        return None, _named(feature, where, np.array(too_large), values, "is too large for a number")
    return pd.Series(converted, index=values.index, name=values.name), None


def _number_problem(
    feature: FeatureSpec,
    values: np.ndarray,
    nulls: np.ndarray | None,
    infinite: np.ndarray | None,
    fractional: np.ndarray | None,
    outside: np.ndarray,
    where: str,
) -> str:
    """The first thing wrong with one number feature, named with its records."""
    if nulls is not None and nulls.any():
        return _named(feature, where, np.flatnonzero(nulls), None, "missing or null, but the feature is required")
    if infinite is not None and infinite.any():
        return _named(feature, where, np.flatnonzero(infinite), values, "is not a finite number")
    if fractional is not None and fractional.any():
        return _named(feature, where, np.flatnonzero(fractional), values, "is not an integer")
    low = "-inf" if feature.minimum is None else _number(feature.minimum)
    high = "inf" if feature.maximum is None else _number(feature.maximum)
    return _named(feature, where, np.flatnonzero(outside), values, f"is outside [{low}, {high}]")


def _check_column(values: pd.Series, feature: FeatureSpec, where: str) -> tuple[pd.Series, str | None, int]:
    """A text or bool feature: (values for the model, the problem or None, warn-level count)."""
    nulls = values.isna().to_numpy()
    if values.dtype.kind == "b":
        kind_ok = feature.type == "bool"
    elif values.dtype == object:
        inferred = pd.api.types.infer_dtype(values, skipna=True)
        kind_ok = inferred == "empty" or inferred == ("string" if feature.type == "str" else "boolean")
    else:
        kind_ok = bool(nulls.all())  # a float column of NaN: every record left the feature out
    if not kind_ok:
        expected = str if feature.type == "str" else (bool, np.bool_)
        bad = np.flatnonzero(~nulls & ~np.fromiter((isinstance(v, expected) for v in values), bool, len(values)))
        return values, _named(feature, where, bad, values, f"is not {_KIND_NAMES[feature.type]}"), 0
    if nulls.any() and not feature.nullable:
        return values, _named(feature, where, np.flatnonzero(nulls), None, "missing or null, but the feature is required"), 0
    warned = 0
    if feature.categories is not None:
        unknown = ~nulls & ~_isin(values, feature.categories)
        if unknown.any():
            if feature.categories_block:
                what = f"is not one of {sorted(feature.categories, key=str)}"
                return values, _named(feature, where, np.flatnonzero(unknown), values, what), 0
            warned = int(unknown.sum())
    return _typed(values, feature, nulls), None, warned


def _isin(values: pd.Series, categories: tuple[Any, ...]) -> np.ndarray:
    """Membership per value; a set lookup beats pandas' hash table on small requests."""
    if len(values) <= 64:
        known = set(categories)
        return np.fromiter((value in known for value in values), bool, len(values))
    return values.isin(categories).to_numpy()


def _typed(values: pd.Series, feature: FeatureSpec, nulls: np.ndarray) -> pd.Series:
    """Text as objects with NaN for missing; bools as bool, or objects with NaN when some are missing."""
    if not nulls.any():
        return values.astype(bool) if feature.type == "bool" and values.dtype.kind != "b" else values
    array = values.to_numpy(dtype=object, copy=True)
    array[nulls] = np.nan
    return pd.Series(array, index=values.index, name=values.name)


# --- Messages -----------------------------------------------------------------------------


def _named(feature: FeatureSpec, where: str, indexes: Any, values: Any, what: str) -> str:
    """``records[3].garden: 'west' is not one of [...] (2 records: 3, 8)``."""
    first = int(indexes[0])
    shown = "" if values is None else _shown(values.iloc[first] if hasattr(values, "iloc") else values[first]) + " "
    message = f"{where}[{first}].{feature.name}: {shown}{what}"
    if len(indexes) > 1:
        listed = ", ".join(str(int(index)) for index in indexes[:_SHOWN_INDEXES])
        more = ", …" if len(indexes) > _SHOWN_INDEXES else ""
        message += f" ({len(indexes)} {where}: {listed}{more})"
    return message


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return _number(value)
    text = repr(value.item() if hasattr(value, "item") else value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(value: float | int) -> str:
    return repr(int(value)) if isinstance(value, int) else repr(float(value))


def _refusal(problems: dict[str, str], order: list[str]) -> str:
    listed = [problems[name] for name in order if name in problems]
    more = len(listed) - _SHOWN_COLUMNS
    text = "; ".join(listed[:_SHOWN_COLUMNS]) + (f"; and {more} more feature(s)" if more > 0 else "")
    return f"{len(listed)} feature(s) refused: {text}"


def _replaced(frame: pd.DataFrame, name: str, values: Any) -> pd.DataFrame:
    """``frame`` with one column replaced, without touching the caller's frame."""
    frame = frame.copy(deep=False)
    frame[name] = values
    return frame
