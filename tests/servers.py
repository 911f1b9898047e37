"""Real servers the tests start on 127.0.0.1: an MLflow tracking server, a webhook receiver."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx

from mlops import processes
from mlops.serving import free_port


class TrackingServer:
    """``mlflow server`` over a SQLite file that outlives it, so it can be killed and started again."""

    def __init__(self, folder: Path, template: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.started: str | None = None
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(template, folder / "mlflow.db")  # migrated already: a start takes seconds, not 20

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", "1", "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
            "--artifacts-destination", str(self.folder / "artifacts"),
        ]  # fmt: skip
        log = self.folder / "server.log"
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
        process = processes.start(command, log_path=log, env=env, append=True)
        self.process, self.started = process, processes.process_start(process.pid)
        if not processes.wait_healthy(lambda: processes.answers(f"{self.url}/health"), process, 120, interval=0.3):
            self.kill()
            raise RuntimeError(f"mlflow server did not start: {log.read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL (a server dying, not stopping): the leader and its workers, each only while still ours."""
        if self.process is None:
            return
        for pid, started in [(self.process.pid, self.started), *processes.descendants(self.process.pid)]:
            processes.signal_if_ours(pid, started, signal.SIGKILL)
        self.process.wait()
        self.process = None

    def get(self, path: str, **params: object) -> dict:
        return httpx.get(f"{self.url}/api/2.0/mlflow/{path}", params=params, timeout=10).json()


@contextmanager
def webhook_receiver(status: int = 204, path: str = "/hook") -> Iterator[tuple[str, list[dict]]]:
    """A receiver answering every POST with ``status``: yields its URL (``path`` appended) and the bodies it got."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}{path}", received
    finally:
        server.shutdown()
