"""A local Prefect server for schedules, when no server is configured.

Flows run on Prefect's ephemeral server by default, which lives only as long as
the command. Schedules need a server that stays up and runs Prefect's scheduler,
so ``mlops schedule`` starts ``prefect server start`` on 127.0.0.1 with its
database under the state folder, and records where it listens in
``<state>/prefect/server.json`` so ``mlops schedule --list`` can find it.
With ``prefect_api_url`` configured, that server is used instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL, temporary_settings

from mlops import processes
from mlops.config import Settings
from mlops.environment import one_shot_flow_runs, tool_variables
from mlops.errors import ServiceUnavailable

__all__ = ["LocalPrefectServer", "command_flow_runs", "ensure_database", "find_local_server", "start_local_server"]

DATABASE_LOCK_FILE = "prefect-db.lock"
DATABASE_LOCK_TIMEOUT_SECONDS = 300.0


@dataclass
class LocalPrefectServer:
    """A ``prefect server start`` process (pid and start time: :mod:`mlops.processes`) and its API URL."""

    api_url: str
    process: subprocess.Popen[bytes] | None = None
    started: str | None = None

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server's whole tree (SIGTERM, SIGKILL after ``timeout``), only while it is still ours."""
        if self.process is None:
            return
        processes.stop_tree(self.process.pid, self.started, processes.descendants(self.process.pid), timeout=timeout)
        self.process.wait()


@contextmanager
def _first_start(settings: Settings) -> Iterator[None]:
    """Hold the state folder's Prefect database lock while a server starts on a database not yet created.

    Why: a Prefect server creates and migrates its SQLite file when it starts, and two
    processes starting on a fresh state folder (two first ``mlops train``) both migrate it:
    one fails ("duplicate column name"). A server answers its health check only once its
    migrations and block registration are done, so holding a lock until then serializes
    them. A marker beside the file makes later starts skip the lock.
    """
    database = settings.prefect_home / "prefect.db"
    marker = database.with_name(database.name + ".ready")
    configured = os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL") or os.environ.get("PREFECT_SERVER_DATABASE_CONNECTION_URL")
    if configured or (marker.is_file() and database.is_file()):
        yield
        return

    settings.prefect_home.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(settings.prefect_home / DATABASE_LOCK_FILE), timeout=DATABASE_LOCK_TIMEOUT_SECONDS):
            yield
            if database.is_file():
                marker.touch()
    except Timeout:
        raise ServiceUnavailable(
            f"Another process held {settings.prefect_home / DATABASE_LOCK_FILE} for over "
            f"{DATABASE_LOCK_TIMEOUT_SECONDS:g} s while creating Prefect's database; if no mlops command runs, remove the file."
        ) from None


def ensure_database(settings: Settings) -> None:
    """Start this process's ephemeral Prefect server now, one process at a time on a fresh state folder.

    The flow runs of this process then use that server (Prefect keeps one per process).
    Nothing to do when a Prefect server is configured (``prefect_api_url``). The CLI calls it
    through :func:`command_flow_runs`; scripts on the Python API may call it before their
    first flow run.
    """
    if settings.prefect_api_url or os.environ.get("PREFECT_API_URL"):
        return
    with _first_start(settings):
        SubprocessASGIServer().start()


@contextmanager
def command_flow_runs(settings: Settings) -> Iterator[None]:
    """The flow runs of one command: on a server started first (:func:`ensure_database`), without heartbeats.

    Heartbeats: :func:`mlops.environment.one_shot_flow_runs`.
    """
    ensure_database(settings)
    with one_shot_flow_runs():
        yield


@contextmanager
def using_api(api_url: str) -> Iterator[None]:
    """Talk to the Prefect server at ``api_url``, in this process and in the flow-run processes it starts.

    Prefect reads its settings when first imported (this module imports it), so setting
    ``PREFECT_API_URL`` alone would reach only the child processes: the runner would talk
    to an ephemeral server of its own while its flow runs talk to ``api_url``.
    """
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            yield
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous


def start_local_server(settings: Settings, port: int, timeout: float = 120.0) -> LocalPrefectServer:
    """Start a Prefect server on 127.0.0.1:``port`` and wait until its API answers."""
    log_path = settings.state_dir / "logs" / "prefect-server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, **tool_variables(settings)}
    env.pop("PREFECT_API_URL", None)
    env["PREFECT_UI_API_URL"] = f"http://127.0.0.1:{port}/api"  # the UI's own API calls: 4200 unless told
    with _first_start(settings):
        process = processes.start(command, log_path=log_path, env=env)
        server = LocalPrefectServer(f"http://127.0.0.1:{port}/api", process, processes.process_start(process.pid))
        try:
            healthy = _wait_healthy(server, timeout)
        except BaseException:  # Ctrl-C or SIGTERM while it starts: it must not outlive the command
            server.stop()
            raise
    if not healthy:
        server.stop()
        raise ServiceUnavailable(f"The local Prefect server did not start within {timeout:g} s; see {log_path}.")
    record = {"api_url": server.api_url, "pid": process.pid, "started": server.started}
    _record_path(settings).write_text(json.dumps(record) + "\n")
    return server


def find_local_server(settings: Settings) -> LocalPrefectServer | None:
    """The server ``mlops schedule`` started for this state folder, if it still answers."""
    try:
        record = json.loads(_record_path(settings).read_text())
    except (OSError, ValueError):
        return None
    server = LocalPrefectServer(record["api_url"])
    return server if _wait_healthy(server, timeout=2.0) else None


def _wait_healthy(server: LocalPrefectServer, timeout: float) -> bool:
    return processes.wait_healthy(lambda: processes.answers(f"{server.api_url}/health"), server.process, timeout, interval=0.5)


def _record_path(settings: Settings) -> Path:
    settings.prefect_home.mkdir(parents=True, exist_ok=True)
    return settings.prefect_home / "server.json"
