"""Reading tables, fingerprinting them, and the bundled sample data.

The sample data is scikit-learn's breast-cancer set (shipped with the package, no
download), with snake_case column names and a 0/1 ``target`` (1 = benign):

- ``train.csv``: 469 rows, the training and reference data.
- ``current.csv``: the other 100 rows, standing in for production traffic, with a
  documented, seeded shift: every ``mean_*`` and ``worst_*`` feature (20 of 30)
  multiplied by 1.3 plus 2 % Gaussian noise, as if an upstream system changed
  units. Labels are kept so later stages can measure quality on it.

``make demo`` sends :func:`make_production_traffic` instead: a shift the data contract
accepts and the champion suffers from (a scanner update under-reporting every
``worst_*`` measurement by 25 %), so retraining on the labeled traffic has something to learn.

Regenerate with ``python -m mlops.data data/`` (byte-identical for the same seed).
"""

from __future__ import annotations

import csv
import hashlib
import sys
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as compute
import pyarrow.csv as arrow_csv
import pyarrow.types as kinds
from sklearn.datasets import load_breast_cancer

from mlops.config import SAMPLE_DATASET
from mlops.errors import DataError

if TYPE_CHECKING:
    from mlops.config import Settings

__all__ = [
    "SHIFTED_PREFIXES",
    "FastReadRefused",
    "data_fingerprint",
    "iter_table",
    "iter_table_fast",
    "load_table",
    "make_production_traffic",
    "make_sample_data",
    "ProductionTraffic",
    "production_traffic",
    "write_sample_data",
]

SHIFTED_PREFIXES = ("mean_", "worst_")
SHIFT_FACTOR = 1.3
SHIFT_NOISE = 0.02
CURRENT_ROWS = 100
SAMPLE_SEED = 7
# The demo's production shift: a scanner software update under-reports these features.
SCANNER_PREFIX = "worst_"
SCANNER_FACTOR = 0.75


def load_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (or Parquet) file, turning every way it can be unreadable into a :class:`DataError`."""
    path = _existing(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        return _load_parquet(path)
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"Data file {path} is empty. Provide a CSV file with a header row and data rows.") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"Data file {path} is not a readable UTF-8 CSV file: {exc}") from None
    if frame.empty:
        raise DataError(f"Data file {path} has a header but no rows. Provide at least one data row.")
    _check_header(path, frame)
    return frame


def _load_parquet(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"Data file {path} is not a readable Parquet file: {exc}") from None
    if frame.empty:
        raise DataError(f"Data file {path} has no rows. Provide at least one data row.")
    return frame


def iter_table(path: str | Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Read a CSV file ``chunk_rows`` rows at a time (bounded memory), with :func:`load_table`'s checks.

    A problem found half-way (a ragged row, a bad byte) is a :class:`DataError` too.
    """
    path = _existing(path)
    chunks = 0
    try:
        with pd.read_csv(path, chunksize=chunk_rows) as reader:
            for index, chunk in enumerate(reader):
                if index == 0:
                    _check_header(path, chunk)
                if not chunk.empty:
                    chunks += 1
                    yield chunk
    except pd.errors.EmptyDataError:
        raise DataError(f"Data file {path} is empty. Provide a CSV file with a header row and data rows.") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"Data file {path} is not a readable UTF-8 CSV file: {exc}") from None
    if chunks == 0:
        raise DataError(f"Data file {path} has a header but no rows. Provide at least one data row.")


class FastReadRefused(Exception):
    """pyarrow cannot read this file exactly as pandas would: read it with :func:`iter_table`."""


# pandas' defaults, given to pyarrow so both read the same cells as nulls and booleans.
_NA_VALUES = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
              "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")
_TRUE, _FALSE = ("True", "TRUE", "true"), ("False", "FALSE", "false")


def iter_table_fast(path: str | Path, chunk_rows: int, numeric: Collection[str] = ()) -> Iterator[pd.DataFrame]:
    """:func:`iter_table` through pyarrow's multi-threaded CSV reader (about twice pandas' speed).

    Only for files pyarrow types as pandas does: on a parse error, a header problem, no
    rows, a type other than int, float, text or bool (dates, bytes), or a ``numeric``
    column read as text (pandas trims spaces around numbers), it raises
    :class:`FastReadRefused`, possibly after some chunks: the caller starts over with
    :func:`iter_table`, whose messages and typing are the reference.
    """
    path = _existing(path)
    options = arrow_csv.ConvertOptions(
        null_values=list(_NA_VALUES), strings_can_be_null=True, true_values=list(_TRUE), false_values=list(_FALSE)
    )
    chunks = 0
    try:
        pending = None
        for batch in arrow_csv.open_csv(path, convert_options=options):
            block = pa.Table.from_batches([batch])
            pending = block if pending is None else pa.concat_tables([pending, block])
            while pending.num_rows >= chunk_rows:
                yield _arrow_chunk(path, pending.slice(0, chunk_rows), numeric, chunks == 0)
                pending, chunks = pending.slice(chunk_rows), chunks + 1
        if pending is not None and pending.num_rows:
            yield _arrow_chunk(path, pending, numeric, chunks == 0)
            chunks += 1
    except (pa.ArrowException, UnicodeDecodeError, DataError) as exc:
        raise FastReadRefused(str(exc)) from None
    if chunks == 0:
        raise FastReadRefused("no rows")


def _arrow_chunk(path: Path, table: Any, numeric: Collection[str], first: bool) -> pd.DataFrame:
    names = table.schema.names
    if "" in names or len(set(names)) != len(names):
        raise FastReadRefused("unnamed or duplicated columns")  # pandas renames them
    for field in table.schema:
        plain = kinds.is_int64(field.type) or kinds.is_float64(field.type)
        if not (plain or kinds.is_string(field.type) or kinds.is_boolean(field.type)) or (
            field.name in numeric and not plain
        ):
            raise FastReadRefused(f"column {field.name!r} is read as {field.type}")
        if kinds.is_float64(field.type) and not _pandas_reads_floats_alike(table.column(field.name)):
            raise FastReadRefused(f"column {field.name!r} has values pandas reads otherwise")
    frame = table.to_pandas()
    if first:
        _check_header(path, frame)
    for name in frame.columns[(frame.dtypes == object).to_numpy()]:  # noqa: E721 (pandas compares element-wise)
        if frame[name].isna().any():  # pyarrow's None, pandas' NaN
            frame[name] = frame[name].where(frame[name].notna(), np.nan)
    return frame


def _pandas_reads_floats_alike(column: Any) -> bool:
    """pyarrow also reads 'NAN', '+nan' or '1e400' as numbers, where pandas keeps the text;
    integers past 2**63 as floats, where pandas reads uint64; and '+7' as a float, where pandas
    reads an int: leave any such column (here: any whole-number one) to pandas."""
    if compute.any(compute.invert(compute.is_finite(column))).as_py():
        return False
    if compute.all(compute.equal(compute.trunc(column), column)).as_py():
        return False
    low, high = compute.min_max(column).values()
    return low.as_py() is None or max(-low.as_py(), high.as_py()) < 2.0**63


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Data file {path} does not exist. Check the path or the 'data' section of the config.")
    return path


_OTHER_DELIMITERS = (";", "\t", "|")


def _check_header(path: Path, frame: pd.DataFrame) -> None:
    """Catch what pandas hides: a duplicated name (renamed ``a.1``) or a non-comma delimiter."""
    with open(path, encoding="utf-8", newline="") as handle:
        names = next(csv.reader(handle), [])
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise DataError(f"Data file {path} has duplicated columns {duplicated}. Give every column a unique name.")
    if len(frame.columns) == 1:
        found = [mark for mark in _OTHER_DELIMITERS if mark in str(frame.columns[0])]
        if found:
            raise DataError(
                f"Data file {path} has a single column whose name contains {found[0]!r}: it looks delimited by "
                f"{found[0]!r}, not commas. Save it as a comma-separated file."
            )


def data_fingerprint(frame: pd.DataFrame) -> str:
    """A content hash of the table (values, column names, order), stable across runs."""
    digest = hashlib.sha256()
    digest.update("\x1f".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def make_sample_data(seed: int = SAMPLE_SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return ``(train, current)`` built from scikit-learn's breast-cancer data."""
    train, current, rng = _bundled_split(seed)
    shifted = [column for column in current.columns if column.startswith(SHIFTED_PREFIXES)]
    noise = rng.normal(1.0, SHIFT_NOISE, size=(len(current), len(shifted)))
    current[shifted] = (current[shifted] * SHIFT_FACTOR * noise).round(6)
    return train, current


def make_production_traffic(seed: int = SAMPLE_SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The demo's production traffic, labels included: ``(before, after)`` a scanner update.

    ``before``: the 100 patients of ``current.csv`` as they were measured, traffic like the
    training data. ``after``: every patient of the set, in a seeded order, measured by a
    scanner whose software update under-reports each ``worst_*`` feature by 25 % (± 2 %
    noise), every value within the training data's ranges. The contract accepts every row (a
    shift it refused would never reach the model); the champion suffers (large tumours
    look smaller, so malignant ones pass as benign), and a model that also learns from
    the labeled new measurements does not.
    """
    train, before, _ = _bundled_split(seed)
    rng = np.random.default_rng(seed + 1)
    everyone = pd.concat([before, train], ignore_index=True)
    after = everyone.iloc[rng.permutation(len(everyone))].reset_index(drop=True)
    scanned = [column for column in after.columns if column.startswith(SCANNER_PREFIX)]
    noise = rng.normal(1.0, SHIFT_NOISE, size=(len(after), len(scanned)))
    after[scanned] = after[scanned] * SCANNER_FACTOR * noise
    features = [column for column in after.columns if column != "target"]
    # The new scanner reports within the range the old one did: no value the contract refuses.
    after[features] = after[features].clip(train[features].min(), train[features].max(), axis=1).round(6)
    return before, after


@dataclass(frozen=True)
class ProductionTraffic:
    """What the demo's client sends, labels included: ``before`` then ``after`` (cycled), and what ``after`` is."""

    before: pd.DataFrame
    after: pd.DataFrame
    after_is: str


def production_traffic(settings: Settings) -> ProductionTraffic:
    """The bundled sample's scanner story (:func:`make_production_traffic`); any other dataset's own rows.

    A project's own table has no shift the framework could invent honestly: its traffic
    is the training file's rows in a seeded order (the first 100, then all of them), so
    the demo shows the loop on the user's data; production traffic brings the drift.
    """
    if settings.data.name == SAMPLE_DATASET:
        before, after = make_production_traffic(settings.model.seed)
        return ProductionTraffic(before, after, "after the scanner update")
    frame = load_table(settings.data.training)
    frame = frame[frame[settings.data.target].notna()]
    order = frame.sample(frac=1.0, random_state=settings.model.seed).reset_index(drop=True)
    return ProductionTraffic(order.iloc[:CURRENT_ROWS], order, f"rows of {settings.data.training.name}, unchanged")


def _bundled_split(seed: int) -> tuple[pd.DataFrame, pd.DataFrame, Any]:
    """``(train, current rows before any shift, the generator)``: the seeded split of the bundled set."""
    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.rename(columns=lambda name: name.replace(" ", "_"))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(frame))
    current = frame.iloc[order[:CURRENT_ROWS]].reset_index(drop=True)
    train = frame.iloc[order[CURRENT_ROWS:]].reset_index(drop=True)
    return train, current, rng


def write_sample_data(folder: str | Path, seed: int = SAMPLE_SEED) -> tuple[Path, Path]:
    """Write ``train.csv`` and ``current.csv`` into ``folder``; return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    train, current = make_sample_data(seed)
    paths = folder / "train.csv", folder / "current.csv"
    for frame, path in zip((train, current), paths):
        frame.to_csv(path, index=False, float_format="%.6g", lineterminator="\n")
    return paths


if __name__ == "__main__":
    for written in write_sample_data(sys.argv[1] if len(sys.argv) > 1 else "data"):
        print(written)
