"""The label store: ground truth that arrives after the predictions, kept under the state folder.

Labels come in as a file (``mlops labels add FILE``), a ``POST /labels`` to the served
model (the project's ``models/service.py``) or a frame (:func:`add_labels`, what both call), each row
a ``request_id``, an optional ``record`` (the record's position in its request, default
0) and the label, in a column ``label`` or named like the target. Each label is
converted to the data contract's target type and classes (:func:`as_target_type`: a
CSV's ``"1"`` is the class ``1``, ``"true"`` is ``True``); rows that cannot be used (no
request id, a record that is not a whole number, an empty label, a label of another
type or an unknown class, and with ``known`` a request id no logged prediction has) are
refused, counted and named, never a crash. Within one call, the later of two rows for
the same ``(request_id, record)`` wins and the earlier is counted in ``duplicates``::

    index = RequestIndex(settings.predictions_dir)   # mlops.prediction_log
    index.refresh()
    added = add_labels(frame, settings.labels_dir, contract.target_column, source="api", known=index)
    print(added.summary())      # "3 label(s) stored in …, 1 refused." + the problems

The store is append-only: each call writes one Parquet file
``labels-<UTC time>-<id>.parquet`` (columns ``request_id``, ``record``, ``label``,
``source``, ``received_at``). :func:`read_labels` reads them all in the order they
arrived; for the same ``(request_id, record)`` the later label wins.
:func:`label_status` counts the logged predictions that have a label, per model
version and day.
"""

from __future__ import annotations

import math
import numbers
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlops.data import load_table
from mlops.errors import DataError
from mlops.prediction_log import read_prediction_log

if TYPE_CHECKING:
    from collections.abc import Container, Iterable, Sequence

    from mlops.contract import ColumnContract

__all__ = [
    "LABEL_COLUMNS",
    "LabelsAdded",
    "add_label_file",
    "add_labels",
    "as_target_type",
    "describe_unusable",
    "label_key",
    "label_status",
    "read_label_file",
    "read_labels",
]

LABEL_COLUMNS = ("request_id", "record", "label", "source", "received_at")
_FILE_GLOB = "labels-*.parquet"
_EXAMPLES = 5  # values quoted per problem
_SHOWN_CHARS = 40  # a quoted value is cut past this: a client's megabyte string must not come back


@dataclass(frozen=True)
class LabelsAdded:
    """What one :func:`add_labels` call stored, and why rows were left out.

    ``accepted + refused + duplicates`` is the number of rows given: ``refused`` rows are
    unusable (``unknown`` of them name a request id no logged prediction has),
    ``duplicates`` were replaced by a later row for the same ``(request_id, record)``.
    """

    accepted: int
    refused: int
    path: Path | None = None
    problems: tuple[str, ...] = ()
    unknown: int = 0
    duplicates: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "refused": self.refused, "unknown": self.unknown,
                "duplicates": self.duplicates, "path": str(self.path) if self.path else None,
                "problems": list(self.problems)}

    def summary(self) -> str:
        line = f"{self.accepted} label(s) stored" + (f" in {self.path}" if self.path else "")
        line += f", {self.refused} refused." if self.refused else "."
        return "\n".join([line, *self.problems])


def read_label_file(path: str | Path, target: str | None = None) -> pd.DataFrame:
    """A labels file (CSV read as text, or Parquet) as written, the label column named ``label``.

    The label is the column ``label``, else the column named ``target``. A file lacking
    ``request_id`` or a label column is a :class:`~mlops.errors.DataError` naming what is missing.
    """
    frame = load_table(path)  # an unreadable file is a DataError naming it
    if Path(path).suffix.lower() not in (".parquet", ".pq"):
        # Typed by pandas, request id "0042" would become 42 and never match its request.
        frame = pd.read_csv(path, dtype=str)
    if "label" not in frame.columns and target is not None and target in frame.columns:
        frame = frame.rename(columns={target: "label"})
    missing = [column for column in ("request_id", "label") if column not in frame.columns]
    if missing:
        named = "label" + (f" (or {target})" if target else "")
        raise DataError(
            f"Labels file {path} lacks column(s) {', '.join(missing)}. "
            f"It needs request_id, {named} and optionally record (position in the request)."
        )
    return frame


def add_labels(
    frame: pd.DataFrame,
    store: str | Path,
    target: ColumnContract,
    source: str = "api",
    known: Container[str] | None = None,
) -> LabelsAdded:
    """Check labels against the target and append the usable ones to the store (one Parquet file).

    ``frame`` has ``request_id``, ``label`` (or a column named like the target) and optionally
    ``record``; ``store`` is the label folder (``settings.labels_dir``). With ``known`` (the
    request ids of the prediction log, e.g. a :class:`~mlops.prediction_log.RequestIndex`),
    a label for any other request is refused: it would never join a prediction. Refused
    rows are counted and described in ``problems``; nothing is written when no row is usable.
    """
    if "label" not in frame.columns and target.name in frame.columns:
        frame = frame.rename(columns={target.name: "label"})
    missing = [column for column in ("request_id", "label") if column not in frame.columns]
    if missing:
        raise DataError(f"Labels lack column(s) {', '.join(missing)}: send request_id, label "
                        f"(or {target.name}) and optionally record.")
    request_ids = frame["request_id"].map(lambda value: None if label_key(value) is None else str(value).strip())
    records = _records(frame)
    labels, label_ok = as_target_type(frame["label"], target)
    id_ok, record_ok = request_ids.notna().to_numpy(), records.notna().to_numpy()
    logged = [not ok or known is None or request_id in known for request_id, ok in zip(request_ids, id_ok)]
    usable = [a and b and c and d for a, b, c, d in zip(id_ok, record_ok, label_ok, logged)]
    problems = _id_problems(id_ok, record_ok) + describe_unusable(frame["label"], label_ok, target, "label")
    problems += _unknown_problems(request_ids, logged)
    kept = pd.DataFrame({
        "request_id": [value for value, ok in zip(request_ids, usable) if ok],
        "record": [int(value) for value, ok in zip(records, usable) if ok],
        "label": [value for value, ok in zip(labels, usable) if ok],
    })
    replaced = kept.duplicated(["request_id", "record"], keep="last")  # the later row of a call wins
    problems += _duplicate_problems(kept[replaced])
    kept = kept[~replaced].reset_index(drop=True)
    unknown, duplicates = logged.count(False), int(replaced.sum())
    refused = len(frame) - len(kept) - duplicates
    if kept.empty:
        return LabelsAdded(0, refused, None, tuple(problems), unknown, duplicates)
    now = datetime.now(UTC)
    kept = kept.assign(record=kept["record"].astype("int64"), source=source, received_at=now.isoformat())
    folder = Path(store)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"labels-{now:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
    temporary = path.with_suffix(".tmp")
    kept.to_parquet(temporary, index=False)
    temporary.replace(path)  # a reader never sees half a file
    return LabelsAdded(len(kept), refused, path, tuple(problems), unknown, duplicates)


def add_label_file(
    path: str | Path, store: str | Path, target: ColumnContract, known: Container[str] | None = None
) -> LabelsAdded:
    """:func:`add_labels` on a labels file (CSV or Parquet); the source recorded is the file's name."""
    return add_labels(read_label_file(path, target.name), store, target, source=f"file:{Path(path).name}", known=known)


def read_labels(store: str | Path) -> tuple[pd.DataFrame, int]:
    """Every stored label, the later one winning per ``(request_id, record)``, and how many were replaced."""
    files = sorted(Path(store).glob(_FILE_GLOB))  # names start with the UTC time: arrival order
    if not files:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in LABEL_COLUMNS}).astype({"record": "int64"}), 0
    frames = [pd.read_parquet(path).astype({"label": object}) for path in files]
    every = pd.concat(frames, ignore_index=True).astype({"request_id": str, "record": "int64"})
    latest = every.drop_duplicates(["request_id", "record"], keep="last").reset_index(drop=True)
    return latest, len(every) - len(latest)


def label_status(store: str | Path, predictions_dir: str | Path) -> tuple[pd.DataFrame, int]:
    """Logged predictions and how many have a label, per model version and day; and labels matching none.

    Columns: ``model_version``, ``day`` (UTC, from the prediction's timestamp), ``predictions``,
    ``labeled``, ``share``.
    """
    log = read_prediction_log(predictions_dir)
    labels, _ = read_labels(store)
    columns = ["model_version", "day", "predictions", "labeled", "share"]
    if log.empty:
        return pd.DataFrame(columns=columns), len(labels)
    keys = log[["request_id", "record", "model_version", "timestamp"]].astype({"request_id": str, "record": "int64"})
    keys = keys.assign(day=pd.to_datetime(keys["timestamp"], utc=True, format="ISO8601").dt.strftime("%Y-%m-%d"))
    joined = keys.merge(labels[["request_id", "record"]].assign(labeled=1), on=["request_id", "record"], how="left")
    joined["labeled"] = joined["labeled"].fillna(0).astype("int64")
    table = (joined.groupby(["model_version", "day"], as_index=False)
             .agg(predictions=("labeled", "size"), labeled=("labeled", "sum")))
    table["share"] = table["labeled"] / table["predictions"]
    unmatched = len(labels) - int(joined["labeled"].sum())
    return table[columns], unmatched


def as_target_type(values: Sequence[Any] | pd.Series, target: ColumnContract) -> tuple[list[Any], list[bool]]:
    """Each value as the target's class (or number), and whether it is one.

    With categories, a value is the category with the same :func:`label_key` (``"2"`` → ``2``);
    otherwise it is converted to the target's type (``"true"`` → ``True``, ``"1.5"`` → ``1.5``;
    ``1.5`` is no ``int``). Empty values are not usable.
    """
    if target.categories:
        lookup = {label_key(category): category for category in target.categories}
        converted = [lookup.get(label_key(value)) for value in values]
    else:
        converted = [_as_type(value, target.type) for value in values]
    return converted, [value is not None for value in converted]


def describe_unusable(values: Sequence[Any] | pd.Series, usable: list[bool], target: ColumnContract, what: str) -> list[str]:
    """One line naming how many ``values`` are not of the target's type or classes, with examples."""
    bad = [value for value, ok in zip(values, usable) if not ok]
    if not bad:
        return []
    shown = _examples(_shown(value) if label_key(value) is not None else "empty" for value in bad)
    expected = f"one of {list(target.categories)}" if target.categories else f"a {target.type} value"
    return [f"{len(bad)} {what}(s) left out: not {expected} (e.g. {shown})."]


def label_key(value: Any) -> str | None:
    """One text per value however it was read: ``1``, ``1.0``, ``"1"`` → ``"1"``; ``True``, ``"true"`` → ``"true"``.

    Nulls (None, NaN, pandas' NA) and empty text give None.
    """
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return None
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):  # exact, and no float of a 400-digit number
        return str(int(value))
    if isinstance(value, numbers.Number):
        number = float(value)  # type: ignore[arg-type]
        if math.isnan(number):
            return None
        return str(int(number)) if number.is_integer() else repr(number)
    text = str(value).strip()
    if not text:
        return None
    if text.lower() in ("true", "false"):
        return text.lower()
    try:
        number = float(text)
    except ValueError:
        return text
    return label_key(number) if math.isfinite(number) else text


def _as_type(value: Any, kind: str) -> Any:
    key = label_key(value)
    if key is None:
        return None
    if kind == "str":
        return str(value).strip()
    if kind == "bool":
        return {"true": True, "false": False}.get(key)
    try:
        number = float(key)
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    if kind == "int":
        return int(number) if number.is_integer() else None
    return number


def _records(frame: pd.DataFrame) -> pd.Series:
    """Each row's record as a whole number, None where it is not one (no column: record 0)."""
    if "record" not in frame.columns:
        return pd.Series([0] * len(frame), index=frame.index, dtype=object)
    return pd.Series([_record(value) for value in frame["record"]], index=frame.index, dtype=object)


def _record(value: Any) -> int | None:
    key = label_key(value)  # 1, 1.0 and "1" alike; a bool, a fraction or text is no position
    if key is None or not (key.isascii() and key.isdigit()):
        return None
    number = int(key)
    return number if number < 2**63 else None  # the store's column is int64


def _id_problems(id_ok: Any, record_ok: Any) -> list[str]:
    problems = []
    if (~id_ok).any():
        problems.append(f"{int((~id_ok).sum())} row(s) left out: no request_id.")
    if (~record_ok).any():
        problems.append(f"{int((~record_ok).sum())} row(s) left out: record is not a whole number ≥ 0 "
                        "(the record's position in its request).")
    return problems


def _unknown_problems(request_ids: pd.Series, logged: list[bool]) -> list[str]:
    unknown = [request_id for request_id, ok in zip(request_ids, logged) if not ok]
    if not unknown:
        return []
    return [f"{len(unknown)} label(s) left out: their request_id matches no logged prediction "
            f"(e.g. {_examples(map(_shown, unknown))}): send labels with the request_id /predict answered."]


def _duplicate_problems(replaced: pd.DataFrame) -> list[str]:
    if replaced.empty:
        return []
    keys = _examples(f"{_shown(request_id)} record {record}" for request_id, record in
                     zip(replaced["request_id"], replaced["record"]))
    return [f"{len(replaced)} label(s) replaced by a later one for the same request_id and record "
            f"in this call (e.g. {keys})."]


def _examples(shown: Iterable[str]) -> str:
    """The first few distinct texts, for a problem line (stops reading once it has them)."""
    distinct: dict[str, None] = {}
    for text in shown:
        distinct.setdefault(text)
        if len(distinct) == _EXAMPLES:
            break
    return ", ".join(distinct)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"
