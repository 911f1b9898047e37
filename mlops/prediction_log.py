"""The log of served predictions: JSONL files the endpoint appends and monitoring reads.

One line per predicted record::

    {"timestamp": "2026-11-26T23:59:59.123456+00:00", "request_id": "…", "record": 0,
     "model_name": "breast-cancer-classifier", "model_version": "3",
     "inputs": {"mean_radius": 13.1, …}, "prediction": 1}

``record`` is the record's position in its request, so ``(request_id, record)``
names one prediction: ground-truth labels that arrive later join on it.

Files are named ``predictions-YYYYMMDD.jsonl`` (UTC) and rotate daily. The writer
hands lines to a background thread through a bounded queue, so a slow disk never
slows a request: when the queue is full the record is dropped and counted.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["METADATA_COLUMNS", "PredictionLogWriter", "read_prediction_log"]

# What the log adds to each record's inputs.
METADATA_COLUMNS = ("timestamp", "request_id", "record", "model_name", "model_version", "prediction")

_FILE_GLOB = "predictions-*.jsonl"


@dataclass
class PredictionLogWriter:
    """Append prediction records to the day's JSONL file from a background thread."""

    folder: Path
    max_queued: int = 10_000
    dropped: int = 0
    _queue: queue.Queue[str | None] = field(init=False, repr=False)
    _thread: threading.Thread = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._queue = queue.Queue(maxsize=self.max_queued)
        self._thread = threading.Thread(target=self._drain, name="prediction-log", daemon=True)
        self._thread.start()

    def log(
        self,
        *,
        request_id: str,
        model_name: str,
        model_version: str,
        inputs: Iterable[Mapping[str, Any]],
        predictions: Iterable[Any],
    ) -> None:
        """Queue one line per record; never blocks and never raises on a full queue."""
        timestamp = datetime.now(timezone.utc).isoformat()
        for index, (record, prediction) in enumerate(zip(inputs, predictions)):
            line = json.dumps(
                {
                    "timestamp": timestamp,
                    "request_id": request_id,
                    "record": index,
                    "model_name": model_name,
                    "model_version": model_version,
                    "inputs": dict(record),
                    "prediction": prediction,
                },
                default=_to_json,
            )
            try:
                self._queue.put_nowait(line)
            except queue.Full:
                self.dropped += 1

    def close(self, timeout: float = 5.0) -> None:
        """Flush what is queued and stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _drain(self) -> None:
        while True:
            line = self._queue.get()
            if line is None:
                return
            lines = [line]
            while not self._queue.empty() and len(lines) < 1000:
                extra = self._queue.get_nowait()
                if extra is None:
                    self._write(lines)
                    return
                lines.append(extra)
            self._write(lines)

    def _write(self, lines: list[str]) -> None:
        day = datetime.now(timezone.utc).strftime("%Y%m%d")
        try:
            with open(self.folder / f"predictions-{day}.jsonl", "a", encoding="utf-8") as handle:
                handle.write("\n".join(lines) + "\n")
        except OSError:
            self.dropped += len(lines)


def read_prediction_log(folder: str | Path, last: int | None = None) -> pd.DataFrame:
    """Return logged predictions as a frame: one column per input feature, plus
    ``timestamp``, ``request_id``, ``record``, ``model_name``, ``model_version`` and ``prediction``.

    ``last`` keeps only the newest N records. An absent or empty folder gives an
    empty frame. Partially written trailing lines are skipped.
    """
    import pandas as pd

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
    if last is not None and len(frame) > last:
        frame = frame.iloc[-last:].reset_index(drop=True)
    return frame


def _to_json(value: Any) -> Any:
    # numpy scalars and arrays arrive from the model
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot log a value of type {type(value).__name__}")
