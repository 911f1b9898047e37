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
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mlops.config import Settings
from mlops.environment import tool_variables
from mlops.errors import ServiceUnavailable

__all__ = ["LocalPrefectServer", "find_local_server", "start_local_server"]


@dataclass
class LocalPrefectServer:
    """A ``prefect server start`` process and its API URL."""

    api_url: str
    process: subprocess.Popen[bytes] | None = None

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def start_local_server(settings: Settings, port: int, timeout: float = 120.0) -> LocalPrefectServer:
    """Start a Prefect server on 127.0.0.1:``port`` and wait until its API answers."""
    log_path = settings.state_dir / "logs" / "prefect-server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, **tool_variables(settings)}
    env.pop("PREFECT_API_URL", None)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = LocalPrefectServer(f"http://127.0.0.1:{port}/api", process)
    if not _wait_healthy(server, timeout):
        server.stop()
        raise ServiceUnavailable(f"The local Prefect server did not start within {timeout:g} s; see {log_path}.")
    _record_path(settings).write_text(json.dumps({"api_url": server.api_url, "pid": process.pid}) + "\n")
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
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            return False
        try:
            if httpx.get(f"{server.api_url}/health", timeout=2.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def _record_path(settings: Settings) -> Path:
    settings.prefect_home.mkdir(parents=True, exist_ok=True)
    return settings.prefect_home / "server.json"
