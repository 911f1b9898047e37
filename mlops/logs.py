"""The console's log lines: text for people, JSON lines for log collectors (``logs.format``).

A command (:func:`mlops.cli`) puts one handler on the root logger for its duration; the
library's loggers (``mlops.*``) and Prefect's run loggers reach it, the other tools stay at
their own (warning) levels. Prefect keeps a root handler that has a formatter, so its run
loggers propagate here instead of to its own console handler, which is set aside meanwhile.
Each JSON line carries the Prefect flow and task run it was logged in, and the model version
or request id it is about when the code logging it knows (``extra={"model_version": ...}``
or :func:`log_fields`). The library itself never configures logging: a notebook or a
script keeps its own.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlops.config import LogsConfig

__all__ = [
    "CONTEXT_FIELDS", "ConsoleLogHandler", "JsonLineFormatter", "TextFormatter", "console_logs", "context_of", "json_line",
    "log_fields", "resolved",
]  # fmt: skip

# The fields a line is about, in the order they appear in a JSON line.
CONTEXT_FIELDS = ("flow_run_id", "flow_run_name", "task_run_id", "task_run_name", "model_version", "request_id")
# Tools that print through their own stderr handler when imported before a command's.
_OWN_HANDLERS = ("mlflow",)
_bound: ContextVar[dict[str, str]] = ContextVar("mlops_log_fields", default={})  # noqa: B039 — never mutated


@contextmanager
def log_fields(**fields: object) -> Iterator[None]:
    """Every line logged in the block (this thread or task) carries ``fields`` (e.g. ``model_version``)."""
    token = _bound.set({**_bound.get(), **{name: str(value) for name, value in fields.items() if value is not None}})
    try:
        yield
    finally:
        _bound.reset(token)


def _run_fields() -> dict[str, str]:
    """The Prefect flow and task run this thread is in (nothing when Prefect was never imported)."""
    if "prefect.context" not in sys.modules:
        return {}
    from prefect.context import FlowRunContext, TaskRunContext

    fields: dict[str, str] = {}
    flow, task = FlowRunContext.get(), TaskRunContext.get()
    if flow is not None and flow.flow_run is not None:
        fields |= {"flow_run_id": str(flow.flow_run.id), "flow_run_name": flow.flow_run.name}
    if task is not None:
        fields |= {"task_run_id": str(task.task_run.id), "task_run_name": task.task_run.name}
    return fields


def context_of(record: logging.LogRecord) -> dict[str, str]:
    """The record's run, version and request fields: the block's (:func:`log_fields`), else the record's own
    (``extra``; BentoML's handlers set ``request_id`` to their trace's), else the Prefect run's."""
    found = _run_fields()
    for name in CONTEXT_FIELDS:
        value = getattr(record, name, None)
        if value not in (None, ""):
            found[name] = str(value)
    found |= _bound.get()
    return {name: found[name] for name in CONTEXT_FIELDS if name in found}


def json_line(level: str, logger: str, message: str, created: float | None = None, **fields: Any) -> str:
    """One JSON log line (the CLI's own ``error:`` lines use it too); ``created`` defaults to now."""
    when = datetime.fromtimestamp(created, UTC) if created is not None else datetime.now(UTC)
    line = {"time": when.isoformat(timespec="milliseconds"), "level": level, "logger": logger, "message": message}
    return json.dumps({**line, **fields}, default=str, ensure_ascii=False)


class JsonLineFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the context fields, the error if any.

    ``fields`` are on every line (a server's model version), unless a record has its own.
    """

    def __init__(self, **fields: str) -> None:
        super().__init__()
        self.fields = fields

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {**self.fields, **context_of(record)}
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            fields["error"] = record.exc_text
        return json_line(record.levelname.lower(), record.name, record.getMessage(), record.created, **fields)


class TextFormatter(logging.Formatter):
    """``warning: message`` (as the CLI's ``error:`` lines), with the time and the task at INFO and below."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno <= logging.INFO:
            task = getattr(record, "task_run_name", None) or _run_fields().get("task_run_name")
            text = f"{datetime.fromtimestamp(record.created).strftime('%H:%M:%S')} " + (f"[{task}] " if task else "") + text
        else:
            text = f"{record.levelname.lower()}: {text}"
        if record.name.startswith("prefect."):
            return text  # a run that failed: the command's own error line names the cause and the file and line
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        return f"{text}\n{record.exc_text}" if record.exc_text else text


def _not_a_failed_run(record: logging.LogRecord) -> bool:
    """On a terminal, a flow or task run's failure lines are left to the run's page: the command's own
    ``error:`` line names the cause and the fix, once."""
    return not (record.levelno >= logging.ERROR and record.name.startswith(("prefect.flow_runs", "prefect.task_runs")))


class ConsoleLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the current ``sys.stderr``: while a progress spinner runs, that is Rich's, which prints above it."""

    def __init__(self, level: int, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setLevel(level)
        self.setFormatter(formatter)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ sets it; the current stderr wins
        pass


def resolved(config: LogsConfig) -> tuple[str, int]:
    """(format, level): ``auto`` is JSON when standard error is not a terminal; the level defaults to
    INFO for JSON (a collector keeps the record) and WARNING for text (the progress spinner shows the stage)."""
    fmt = config.format if config.format != "auto" else ("text" if sys.stderr.isatty() else "json")
    level = config.level or ("INFO" if fmt == "json" else "WARNING")
    return fmt, logging.getLevelName(level)


@contextmanager
def console_logs(config: LogsConfig) -> Iterator[None]:
    """The command's log lines on standard error in the configured format, for the block's duration."""
    fmt, level = resolved(config)
    handler = ConsoleLogHandler(level, JsonLineFormatter() if fmt == "json" else TextFormatter())
    if fmt == "text":
        handler.addFilter(_not_a_failed_run)
    root = logging.getLogger()
    original = list(root.handlers)
    set_aside = [each for each in original if type(each).__name__ == "PrefectConsoleHandler"]
    library = logging.getLogger("mlops")
    library_level = library.level
    for each in set_aside:
        root.removeHandler(each)
    root.addHandler(handler)
    if library.getEffectiveLevel() > level:
        library.setLevel(level)
    logging.captureWarnings(True)  # the tools' warnings become lines of the same format (py.warnings)
    routed = {name: (logging.getLogger(name).handlers, logging.getLogger(name).propagate) for name in _OWN_HANDLERS}
    for name in routed:  # a tool that set up its own stderr handler before (see MLFLOW_CONFIGURE_LOGGING)
        logging.getLogger(name).handlers, logging.getLogger(name).propagate = [], True
    try:
        yield
    finally:
        for name, (handlers, propagate) in routed.items():
            logging.getLogger(name).handlers, logging.getLogger(name).propagate = handlers, propagate
        logging.captureWarnings(False)
        library.setLevel(library_level)
        added = [each for each in root.handlers if each not in original and each is not handler]
        root.handlers = [*original, *added]  # Prefect's console handler back in its place
