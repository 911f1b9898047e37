"""The deployment's supervisor: a small process that restarts a dead proxy or model server.

``mlops deploy`` starts it in a session of its own and records its pid and start time in
``deploy/state.json``; ``mlops deploy stop`` stops it first. Every :data:`INTERVAL`
seconds it runs :func:`mlops.deployment.repair`: a killed proxy is back on the same port
in about a second, a killed model server is replaced by one of the same version (started,
smoke-tested, then given the traffic). It ends by itself once the state file is gone or
names another watchdog. Its log: ``<state>/logs/watchdog.log``.

The settings reach it once, as JSON on its standard input (secrets included, so never in
its command line or environment).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from pydantic import SecretStr

from mlops import deployment, processes
from mlops.config import Settings
from mlops.environment import tool_variables

__all__ = ["INTERVAL", "main", "start_watchdog"]

INTERVAL = 0.1  # seconds between two checks: a few /proc reads, no request
_REFRESH_EVERY = 50  # checks between two scans of /proc for the servers' current workers (5 s)
_BACKOFF = 5.0  # after a failed repair (a server that would not start), before the next try


def start_watchdog(settings: Settings, store: str) -> tuple[int, str | None]:
    """Start the watchdog for ``settings``' deployment; its pid and start time.

    ``store`` is the BentoML home holding the served model (:func:`mlops.serving.store_home`),
    so a server it restarts finds the model the deploying process imported.
    """
    env = {**os.environ, **tool_variables(settings), "BENTOML_HOME": store}
    log_path = settings.state_dir / "logs" / "watchdog.log"
    process = processes.start(
        [sys.executable, "-m", "mlops.watchdog"], log_path=log_path, env=env, stdin=subprocess.PIPE, append=True
    )
    with process.stdin or open(os.devnull, "wb") as handle:  # a pipe: Popen was given stdin=PIPE
        handle.write(json.dumps(settings.model_dump(), default=_plain).encode())
    return process.pid, processes.process_start(process.pid)


def main() -> None:
    """Run until the deployment is gone; SIGTERM stops it cleanly (a server it was starting included)."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupt)
    processes.become_subreaper()  # workers of a server it started stay in its tree
    settings = Settings(**json.loads(sys.stdin.read()))
    me = (os.getpid(), processes.process_start(os.getpid()))
    rounds = 0
    try:
        while _still_mine(deployment, settings, me):
            rounds += 1
            try:
                for line in deployment.repair(settings, refresh_workers=rounds % _REFRESH_EVERY == 1):
                    _log(line)
            except Exception as exc:  # noqa: BLE001 — logged, retried after a pause: the supervisor never dies of it
                _log(f"repair failed, retrying in {_BACKOFF:g} s: {type(exc).__name__}: {exc}")
                time.sleep(_BACKOFF)
            _reap_orphans()
            time.sleep(INTERVAL)
    except KeyboardInterrupt:
        _log("stopped")


def _still_mine(deployment: Any, settings: Settings, me: tuple[int, str | None]) -> bool:
    state = deployment.deployment_state(settings)
    return state is not None and (state.watchdog_pid, state.watchdog_started) in (me, (None, None))


def _reap_orphans() -> None:
    """Wait for exited children: as a subreaper it adopts orphans, which would linger as zombies."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _plain(value: Any) -> Any:
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def _log(line: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}", flush=True)


if __name__ == "__main__":
    main()
