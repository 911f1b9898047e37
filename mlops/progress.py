"""Progress on the terminal: a spinner naming the stage a long command is in, with the time it has taken.

The stages come from what the command already logs (the library's ``mlops`` loggers
and Prefect's task runs), so no function takes a progress argument. Nothing is drawn
when standard error is not a terminal (CI, pipes, ``--json``): there the logs are the
record, and the output stays clean.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["STAGE_LOGGERS", "progress"]

# Where a stage's name comes from: our library, and Prefect's flow and task runs.
STAGE_LOGGERS = ("mlops", "prefect.task_runs", "prefect.flow_runs")
_WIDTH = 90  # characters of a log line shown as the stage


class _StageHandler(logging.Handler):
    """Shows each record of the stage loggers as the spinner's text: the task's name, or the line itself."""

    def __init__(self, update: object) -> None:
        super().__init__(logging.INFO)
        self._update = update

    def emit(self, record: logging.LogRecord) -> None:
        try:
            task = getattr(record, "task_name", None)
            text = f"task {task}" if task else record.getMessage().splitlines()[0]
            self._update(text[:_WIDTH])  # type: ignore[operator]
        except Exception:  # noqa: BLE001 — a progress line must never break the command
            self.handleError(record)


@contextmanager
def progress(title: str, *, enabled: bool | None = None) -> Iterator[None]:
    """A transient spinner ``title: <latest stage>  0:00:12`` on standard error while the block runs.

    ``enabled`` defaults to "standard error is a terminal". The loggers keep their levels
    and handlers: the spinner only listens, so what a log file or Prefect records is unchanged.
    """
    if not (sys.stderr.isatty() if enabled is None else enabled):
        yield
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = Progress(
        SpinnerColumn(), TextColumn("[bold]{task.fields[title]}[/]: {task.description}"), TimeElapsedColumn(),
        console=Console(stderr=True), transient=True,
    )  # fmt: skip
    task = bar.add_task("…", title=escape(title), total=None)
    handler = _StageHandler(lambda text: bar.update(task, description=escape(text)))
    loggers = [logging.getLogger(name) for name in STAGE_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.INFO:  # INFO records must reach the handler; others filter by their own level
            logger.setLevel(logging.INFO)
    try:
        with bar:
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
