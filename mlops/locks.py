"""One lock per concern, held where every process that shares the concern can see it.

A file lock under the state folder serializes the processes of one machine. Processes
on several machines sharing servers need the servers to hold it:

- with a Prefect server (``prefect_api_url``): a Prefect global concurrency limit of one
  slot, leased (a holder that dies frees it when its lease ends) and shown in Prefect's UI;
- with a PostgreSQL tracking store (``tracking_uri: postgresql://...``): a session-level
  advisory lock, freed by PostgreSQL when the holder's connection ends.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from filelock import FileLock
from filelock import Timeout as FileLockTimeout
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists

from mlops.config import Settings

__all__ = ["LockTimeout", "shared_lock"]


class LockTimeout(Exception):
    """The lock stayed held by another process for longer than the timeout."""

    def __init__(self, where: str) -> None:
        super().__init__(where)
        self.where = where


@contextmanager
def shared_lock(settings: Settings, name: str, file: Path, timeout: float) -> Iterator[str]:
    """Hold lock ``name`` (a file lock at ``file`` on one machine); yield where it is held, for messages.

    Raises :class:`LockTimeout` after ``timeout`` seconds of waiting.
    """
    if settings.prefect_api_url:
        with _prefect_limit(_limit_name(name), timeout):
            yield f"the Prefect concurrency limit {_limit_name(name)}"
    elif settings.mlflow_tracking_uri.startswith("postgresql"):
        with _advisory_lock(settings.mlflow_tracking_uri, name, timeout):
            yield f"the PostgreSQL advisory lock '{name}'"
    else:
        file.parent.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(file), timeout=timeout):
                yield f"the lock file {file}"
        except FileLockTimeout:
            raise LockTimeout(f"the lock file {file}") from None


def _limit_name(name: str) -> str:
    return "mlops-" + re.sub(r"[^A-Za-z0-9_-]+", "-", name)


@contextmanager
def _prefect_limit(name: str, timeout: float) -> Iterator[None]:
    with get_client(sync_client=True) as client:
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1, active=True))
        except ObjectAlreadyExists:
            pass
    try:
        with concurrency(name, occupy=1, timeout_seconds=timeout, strict=True, lease_duration=60):
            yield
    except TimeoutError:
        raise LockTimeout(f"the Prefect concurrency limit {name}") from None


@contextmanager
def _advisory_lock(uri: str, name: str, timeout: float) -> Iterator[None]:
    """``pg_advisory_lock`` on the tracking database, waiting at most ``timeout`` (``lock_timeout``)."""
    dsn = re.sub(r"^postgresql\+\w+://", "postgresql://", uri)
    key = zlib.crc32(name.encode())  # a stable 32-bit key: Python's hash() differs per process
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(f"SET lock_timeout = '{int(timeout * 1000)}ms'")  # noqa: S608 — a number we computed
        try:
            db.execute("SELECT pg_advisory_lock(%s)", (key,))
        except psycopg.errors.LockNotAvailable:
            raise LockTimeout(f"the PostgreSQL advisory lock '{name}'") from None
        try:
            yield
        finally:
            db.execute("SELECT pg_advisory_unlock(%s)", (key,))
