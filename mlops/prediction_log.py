"""The log of served predictions: JSONL files the endpoint appends and monitoring reads.

One line per predicted record::

    {"timestamp": "2026-11-26T23:59:59.123456+00:00", "request_id": "…", "record": 0,
     "model_name": "breast-cancer-classifier", "model_version": "3",
     "inputs": {"mean_radius": 13.1, …}, "prediction": 1}

``record`` is the record's position in its request, so ``(request_id, record)``
names one prediction: ground-truth labels that arrive later join on it. Inputs keep
their types (numbers, text, booleans, nulls: pandas' missing values become ``null``);
``prediction`` is the user's label in its own type (``"Yes"``, ``2``, ``true``) or a
regressor's number.

Files are named ``predictions-YYYYMMDD.jsonl`` (UTC) and rotate daily. Bulk requests
(``BULK_ROWS`` records or more) go to Parquet files beside them instead,
``predictions-YYYYMMDD-HHMMSS-<id>.parquet``, one per write, with the same columns as
:func:`read_prediction_log` returns: encoding 10,000 records as JSON lines costs more
than scoring them. The writer hands requests to a background thread through a bounded
queue, so a slow disk never slows a request: when the queue is full the request's
records are dropped and counted.

:class:`RequestIndex` answers "did the endpoint answer this request id?" for labels
that arrive later, reading only what the log gained since it last looked.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = [
    "BULK_ROWS", "METADATA_COLUMNS", "PredictionLogWriter", "RefusalLog", "RequestIndex", "read_prediction_log",
    "read_refusals",
]  # fmt: skip

logger = logging.getLogger(__name__)

# What the log adds to each record's inputs.
METADATA_COLUMNS = ("timestamp", "request_id", "record", "model_name", "model_version", "prediction")

_FILE_GLOB = "predictions-*.jsonl"
_BULK_GLOB = "predictions-*.parquet"
_REFUSED_GLOB = "refused-*.jsonl"
BULK_ROWS = 256  # a request this large is written as Parquet, not JSON lines


@dataclass(frozen=True)
class _Batch:
    """One request's records, encoded to lines by the writer thread, not the request."""

    timestamp: str
    request_id: str
    model_name: str
    model_version: str
    inputs: Any  # a DataFrame, or an iterable of mappings
    predictions: Any  # a sequence or array

    def lines(self) -> list[bytes]:
        columns, rows = _columns_and_rows(self.inputs)
        head = {"timestamp": self.timestamp, "request_id": self.request_id}
        model = {"model_name": self.model_name, "model_version": self.model_version}
        option = orjson.OPT_SERIALIZE_NUMPY
        return [
            orjson.dumps(
                {**head, "record": index, **model, "inputs": dict(zip(columns, row)) if columns else row, "prediction": prediction},
                default=_to_json,
                option=option,
            )
            for index, (row, prediction) in enumerate(zip(rows, self.predictions))
        ]

    def table(self) -> Any:
        """The records and their metadata as an Arrow table (columns as the reader gives them)."""
        frame = self.inputs if hasattr(self.inputs, "columns") else pd.DataFrame(list(self.inputs))
        table = pa.Table.from_pandas(frame, preserve_index=False, nthreads=1)  # no thread pool per call
        rows = table.num_rows

        def repeated(value: str) -> Any:  # one dictionary entry, not 10,000 strings
            return pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, dtype="int32")), pa.array([value]))

        metadata = {
            "timestamp": repeated(self.timestamp),
            "request_id": repeated(self.request_id),
            "record": pa.array(np.arange(rows, dtype="int64")),
            "model_name": repeated(self.model_name),
            "model_version": repeated(self.model_version),
            "prediction": pa.array(np.asarray(self.predictions)),
        }
        for name, column in metadata.items():
            table = table.append_column(name, column)
        return table


@dataclass
class PredictionLogWriter:
    """Append prediction records to the day's JSONL file from a background thread.

    A request hands over its records as they are (a frame, or mappings); encoding and
    writing happen on the writer thread, so a 10,000-row request pays nothing per row
    here. ``max_queued`` bounds the records waiting; past it a request's records are
    dropped and counted in ``dropped``.

    Records written and dropped, and writes that failed, are counted (``written``,
    ``dropped``, ``failures``) and handed to ``count(kind, n)`` (the service exports them to
    Prometheus). A folder that cannot be written is one warning when it starts failing and
    one when it works again, never a line per request.
    """

    folder: Path
    max_queued: int = 100_000
    count: Callable[[str, int], None] | None = None
    dropped: int = 0
    written: int = 0
    failures: int = 0
    _failing: bool = field(default=False, init=False, repr=False)
    _queue: queue.Queue[_Batch | None] = field(init=False, repr=False)
    _thread: threading.Thread = field(init=False, repr=False)
    _queued: int = field(default=0, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # serve anyway: the writes fail, are counted, and say why once
            self._failed(exc, 0)
        self._queue = queue.Queue()
        self._thread = threading.Thread(target=self._drain, name="prediction-log", daemon=True)
        self._thread.start()

    def log(
        self,
        *,
        request_id: str,
        model_name: str,
        model_version: str,
        inputs: Any,
        predictions: Iterable[Any],
    ) -> None:
        """Queue one line per record; never blocks and never raises on a full queue."""
        if not hasattr(predictions, "__len__"):
            predictions = list(predictions)  # an array stays an array: no object per record
        count = len(predictions)  # type: ignore[arg-type]  # a list or an array by now
        timestamp = datetime.now(UTC).isoformat()
        with self._lock:
            full = self._queued + count > self.max_queued
            if not full:
                self._queued += count
        if full:
            self._drop(count)
            return
        self._queue.put(_Batch(timestamp, request_id, model_name, model_version, inputs, predictions))

    def close(self, timeout: float = 5.0) -> None:
        """Flush what is queued and stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _drain(self) -> None:
        while (batch := self._queue.get()) is not None:
            batches = [batch]
            while not self._queue.empty() and len(batches) < 1000:
                if (extra := self._queue.get_nowait()) is None:
                    self._write(batches)
                    return
                batches.append(extra)
            self._write(batches)

    def _write(self, batches: list[_Batch]) -> None:
        """Append the JSON lines and write the bulk files; a request that cannot be encoded
        (a value of an unknown type) is dropped and counted alone, not with its neighbours."""
        day = datetime.now(UTC).strftime("%Y%m%d")
        small = [batch for batch in batches if len(batch.predictions) < BULK_ROWS]
        bulk = [batch for batch in batches if len(batch.predictions) >= BULK_ROWS]
        try:
            encoded = [lines for lines in map(self._encoded, small) if lines]
            records = sum(map(len, encoded))
            try:
                if encoded:
                    self.folder.mkdir(parents=True, exist_ok=True)  # a folder removed meanwhile comes back
                    with open(self.folder / f"predictions-{day}.jsonl", "ab") as handle:
                        handle.write(b"\n".join(line for lines in encoded for line in lines) + b"\n")
                    self._wrote(records)
            except OSError as exc:
                self._failed(exc, records)
            tables = [table for table in map(self._table, bulk) if table is not None]
            try:
                if tables:
                    self._write_bulk(tables, day)
                    self._wrote(sum(table.num_rows for table in tables))
            except (OSError, TypeError, ValueError, ImportError) as exc:
                self._failed(exc, sum(table.num_rows for table in tables))
        finally:
            with self._lock:
                self._queued -= sum(len(batch.predictions) for batch in batches)

    def _encoded(self, batch: _Batch) -> list[bytes]:
        try:
            return batch.lines()
        except (TypeError, ValueError):
            self._drop(len(batch.predictions))
            return []

    def _table(self, batch: _Batch) -> Any:
        try:
            return batch.table()
        except (TypeError, ValueError, ImportError):  # pyarrow's type errors are both
            self._drop(len(batch.predictions))
            return None

    def _drop(self, records: int) -> None:
        self.dropped += records
        self._count("dropped", records)

    def _wrote(self, records: int) -> None:
        self.written += records
        self._count("written", records)
        if self._failing:
            self._failing = False
            logger.warning("The prediction log in %s is written again (%d records dropped so far).", self.folder, self.dropped)

    def _failed(self, exc: BaseException, records: int) -> None:
        """One failed write: its records dropped and counted; a warning only when the failures start."""
        self.failures += 1
        self._count("failures", 1)
        self._drop(records)
        if not self._failing:
            self._failing = True
            logger.warning(
                "Cannot write the prediction log in %s (%s: %s): answers are served but not logged, and their records "
                "counted in mlops_prediction_log_dropped_total, until the folder is writable again.",
                self.folder, type(exc).__name__, exc,
            )

    def _count(self, kind: str, n: int) -> None:
        if self.count is not None and n:
            try:
                self.count(kind, n)
            except Exception:  # a metric must never stop the log
                logger.debug("Could not count %s prediction-log records", kind, exc_info=True)

    def _write_bulk(self, tables: list[Any], day: str) -> None:
        table = pa.concat_tables(tables, promote_options="permissive")
        stamp = datetime.now(UTC).strftime("%H%M%S")
        path = self.folder / f"predictions-{day}-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
        partial = path.with_suffix(".parquet.partial")  # readers never see half a file
        pq.write_table(table, partial)  # Arrow and Parquet work without the GIL
        partial.rename(path)


# A line as _Batch.lines writes it starts with these keys: the id is read, the inputs are not parsed.
_LINE_HEAD = re.compile(rb'\{"timestamp":"[^"]*","request_id":"([^"\\]*)"')
_READ_BYTES = 8 * 1024 * 1024  # a day's file is read in blocks, never whole


@dataclass
class RefusalLog:
    """The scoring requests the request check refused (422), one JSON line each beside the predictions.

    Refused records never reach the prediction log, so without this a window of clean
    logged predictions hides the traffic the contract turned away (:func:`read_refusals`,
    monitoring's "refused at serving"). A line is ~200 bytes, written as the 422 is sent;
    past ``max_bytes`` in a day's file (``refused-YYYYMMDD.jsonl``) lines are only counted
    in the server's metrics, so a flood of bad requests cannot fill the disk.
    """

    folder: Path
    max_bytes: int = 10 * 1024 * 1024
    _full_day: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)

    def log(self, path: str, columns: list[str], message: str) -> bool:
        """Append one refusal; False when it was not written (the day's file is full, the disk refused)."""
        now = datetime.now(UTC)
        day = now.strftime("%Y%m%d")
        if self._full_day == day:
            return False
        line = json.dumps({"timestamp": now.isoformat(), "path": path, "columns": columns, "message": message[:300]})
        target = self.folder / f"refused-{day}.jsonl"
        try:
            if target.is_file() and target.stat().st_size >= self.max_bytes:
                self._full_day = day
                return False
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(target, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        except OSError as exc:
            logger.debug("Could not log a refused request in %s: %s", self.folder, exc)
            return False
        return True


def read_refusals(folder: str | Path, since: str | None = None) -> list[dict[str, Any]]:
    """The refusals :class:`RefusalLog` wrote in ``folder``, oldest first; only those at or after ``since`` (ISO time)."""
    found: list[dict[str, Any]] = []
    for path in sorted(Path(folder).glob(_REFUSED_GLOB)):
        if since is not None and path.stem.removeprefix("refused-") < since[:10].replace("-", ""):
            continue  # a day before the window
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash
                if isinstance(entry, dict) and (since is None or str(entry.get("timestamp", "")) >= since):
                    found.append(entry)
    return found


class RequestIndex:
    """The request ids of the prediction log, kept current by reading only what was appended.

    Labels must name a request the endpoint answered, and checking that must not mean
    reading the whole log on every call. :meth:`refresh` reads each JSONL file from the
    byte offset where it stopped (only the ``request_id`` of each new line) and the
    ``request_id`` column of bulk Parquet files it has not read yet. ``max_ids`` bounds
    memory (about 120 bytes an id): past it the oldest ids are forgotten and counted in
    ``evicted``; None keeps them all (a one-off command). A server calls :meth:`add` with
    the id it just answered, since its log line is written later, by a thread::

        index = RequestIndex(settings.predictions_dir)
        index.refresh()
        "3f2a9c…" in index
    """

    def __init__(self, folder: str | Path, max_ids: int | None = 500_000) -> None:
        self.folder = Path(folder)
        self.max_ids = max_ids
        self.evicted = 0
        self._ids: set[str] = set()
        self._order: deque[str] = deque()  # oldest first: the next to forget
        self._offsets: dict[str, int] = {}  # JSONL file name -> bytes read (whole lines)
        self._bulk_read: set[str] = set()
        self._lock = threading.Lock()  # the event loop adds ids while a thread refreshes
        self._refreshing = threading.Lock()  # two readers at once would read the same lines

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, request_id: str) -> None:
        """Remember one answered request id, as the newest."""
        self.update((request_id,))

    def update(self, request_ids: Iterable[str]) -> int:
        """Remember these ids (in order, the last the newest); returns how many were new."""
        added = 0
        with self._lock:
            for request_id in request_ids:
                if request_id not in self._ids:
                    self._ids.add(request_id)
                    self._order.append(request_id)
                    added += 1
            while self.max_ids is not None and len(self._order) > self.max_ids:
                self._ids.discard(self._order.popleft())
                self.evicted += 1
        return added

    def refresh(self) -> int:
        """Read what the log gained since the last call; returns how many new ids it held."""
        with self._refreshing:
            if not self.folder.is_dir():
                return 0
            paths = sorted(self.folder.glob("predictions-*"))  # by day; a day's bulk files first
            added = 0
            for path in paths:
                if path.suffix == ".jsonl":
                    added += sum(map(self.update, self._new_lines(path)))
                elif path.suffix == ".parquet" and path.name not in self._bulk_read:
                    added += self.update(_bulk_request_ids(path))
                    self._bulk_read.add(path.name)
            names = {path.name for path in paths}  # forget files that are gone
            self._offsets = {name: offset for name, offset in self._offsets.items() if name in names}
            self._bulk_read &= names
            return added

    def _new_lines(self, path: Path) -> Iterator[list[str]]:
        """The request ids of the whole lines appended since the last read, a block at a time."""
        offset = self._offsets.get(path.name, 0)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return
        if size < offset:  # the file was replaced: read it again
            offset = 0
        if size == offset:
            return
        with open(path, "rb") as handle:
            handle.seek(offset)
            rest = b""
            while block := handle.read(_READ_BYTES):
                block = rest + block
                end = block.rfind(b"\n") + 1  # a trailing line being written waits for the next read
                rest = block[end:]
                offset += end
                self._offsets[path.name] = offset
                yield [request_id for line in block[:end].splitlines() if (request_id := _line_request_id(line))]


def _line_request_id(line: bytes) -> str | None:
    match = _LINE_HEAD.match(line)
    if match:
        try:
            return match.group(1).decode()
        except UnicodeDecodeError:
            pass
    try:  # an id with escapes, or a line another writer formatted
        entry = json.loads(line)
    except ValueError:
        return None
    value = entry.get("request_id") if isinstance(entry, dict) else None
    return None if value is None else str(value)


def _bulk_request_ids(path: Path) -> list[str]:
    """The distinct request ids of a bulk file, reading that one column."""
    try:
        column = pq.read_table(path, columns=["request_id"]).column("request_id")
    except (OSError, pa.ArrowException) as exc:
        logger.warning("Could not read the request ids of %s (%s); labels for its predictions are refused.", path, exc)
        return []
    return [str(value) for value in pc.unique(column).to_pylist() if value is not None]


def read_prediction_log(folder: str | Path, last: int | None = None) -> pd.DataFrame:
    """Return logged predictions as a frame: one column per input feature, plus
    ``timestamp``, ``request_id``, ``record``, ``model_name``, ``model_version`` and ``prediction``.

    ``last`` keeps only the newest N records. An absent or empty folder gives an
    empty frame. Partially written trailing lines are skipped. JSON lines and bulk
    Parquet files are merged in timestamp order.
    """
    rows = []
    for path in sorted(Path(folder).glob(_FILE_GLOB)):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                inputs = entry.pop("inputs", {})
                rows.append({**inputs, **entry})
    frame = pd.DataFrame(rows)
    bulk = [_read_bulk(path) for path in sorted(Path(folder).glob(_BULK_GLOB))]
    if bulk:
        frame = pd.concat([frame, *bulk], ignore_index=True) if rows else pd.concat(bulk, ignore_index=True)
        frame = frame.sort_values("timestamp", kind="stable", ignore_index=True)
    if last is not None and len(frame) > last:
        frame = frame.iloc[-last:].reset_index(drop=True)
    return frame


def _read_bulk(path: Path) -> pd.DataFrame:
    """A bulk file as a frame, its repeated metadata back to plain strings."""
    frame = pd.read_parquet(path)
    repeated = [name for name in ("timestamp", "request_id", "model_name", "model_version") if name in frame]
    return frame.astype({name: object for name in repeated}) if repeated else frame


def _columns_and_rows(inputs: Any) -> tuple[list[str] | None, Iterable[Any]]:
    """Column names and row value lists of a frame (fast), or (None, dicts) for mappings."""
    if hasattr(inputs, "to_numpy") and hasattr(inputs, "columns"):
        return [str(column) for column in inputs.columns], inputs.to_numpy().tolist()
    return None, [dict(record) for record in inputs]


def _to_json(value: Any) -> Any:
    # numpy scalars and arrays arrive from the model; pandas' missing values from
    # nullable columns (pd.NA, NaT) are nulls; dates and times are ISO text.
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot log a value of type {type(value).__name__}")
