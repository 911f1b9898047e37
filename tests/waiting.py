"""One way for a test to wait on something a server does in the background."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T],
    timeout: float = 20.0,
    what: str = "the condition",
    *,
    interval: float = 0.1,
    detail: Callable[[], str] | None = None,
) -> T:
    """Poll ``condition`` until it returns something truthy, and return that.

    At the deadline the test fails, naming ``what`` and the end of ``detail()`` (a log, say).
    """
    deadline = time.monotonic() + timeout
    while True:
        if value := condition():
            return value
        if time.monotonic() >= deadline:
            extra = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{extra}")
        time.sleep(interval)


def seconds_until(condition: Callable[[], object], timeout: float, what: str) -> float:
    """How long ``condition`` took to hold (a recovery time the test prints)."""
    started = time.monotonic()
    wait_for(condition, timeout, what)
    return time.monotonic() - started
