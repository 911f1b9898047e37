"""Deploy a registry alias as a managed background service, with safe swaps.

Layout: the swap proxy (:mod:`mlops.proxy`, under uvicorn) listens on
``serving.port`` and forwards to one BentoML process on a free port. ``deploy``:

1. resolves the alias and starts the new version beside the running one;
2. waits for its readiness, then smoke-tests it (reference rows in, predictions of the
   right shape and type out, within ``serving.smoke_timeout_seconds``);
3. only then moves traffic (the proxy's upstream file), waits for the old version's
   requests to finish, and stops it.

A version failing step 2 never gets traffic: it is stopped, the alias moves back to the
running version (or to ``previous``), the model version is tagged
``mlops.deploy.status=rejected`` and the event is appended to ``deploy/events.jsonl``.
Everything lives under ``state_dir/deploy``; ``state.json`` holds pids, ports and the
version. Example::

    state = deploy(settings)               # the champion
    deployment_status(settings).healthy    # True
    stop_deployment(settings)
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlops.config import Settings
from mlops.environment import tool_variables
from mlops.errors import MlopsError, ServingError
from mlops.proxy import STATUS_PATH, write_upstream
from mlops.serving import free_port, import_model, resolve_alias, start_server, wait_until_ready

__all__ = [
    "SMOKE_TEST_HEADER",
    "Backend",
    "DeploymentState",
    "DeploymentStatus",
    "deploy",
    "deployment_status",
    "read_events",
    "smoke_test",
    "stop_deployment",
]

# Requests carrying it are answered but not logged: reference rows would hide drift.
SMOKE_TEST_HEADER = "x-mlops-smoke-test"
_PROXY_START_SECONDS = 30.0
_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Backend:
    """One BentoML process serving one model version."""

    pid: int
    port: int
    url: str
    version: str
    tag: str
    log_path: str
    ready_seconds: float


@dataclass(frozen=True)
class DeploymentState:
    """What ``state.json`` records about the running deployment."""

    url: str
    proxy_pid: int
    model_name: str
    alias: str
    backend: Backend
    deployed_at: str
    replaced_version: str | None = None


@dataclass(frozen=True)
class DeploymentStatus:
    """Whether the deployment's processes live and the address answers ready."""

    state: DeploymentState | None
    proxy_alive: bool = False
    backend_alive: bool = False
    ready: bool = False

    @property
    def healthy(self) -> bool:
        return self.proxy_alive and self.backend_alive and self.ready


def deploy(settings: Settings, alias: str | None = None) -> DeploymentState:
    """Serve the version behind ``alias`` at ``serving.port``; swap without dropping requests.

    Redeploying the running version is a no-op. Raises :class:`ServingError` when the
    version fails readiness or the smoke test (after rolling back, see module doc).
    """
    alias = alias or settings.serving.alias
    with _deploy_lock(settings):
        current = _live_state(settings)
        version = resolve_alias(settings.model.name, alias)
        if current and current.backend.version == version and _alive(current.backend.pid):
            return current
        running = current.backend.version if current and _alive(current.backend.pid) else None
        backend = _start_checked(settings, alias, version, running)
        try:
            proxy_pid = _ensure_proxy(settings, current, backend.url)
        except ServingError:
            _stop_group(backend.pid)
            raise
        _move_traffic(settings, backend.url)
        if current and _alive(current.backend.pid):
            _drain(settings, current.backend)
        state = DeploymentState(
            url=_proxy_url(settings),
            proxy_pid=proxy_pid,
            model_name=settings.model.name,
            alias=alias,
            backend=backend,
            deployed_at=_now(),
            replaced_version=running,
        )
        _write_state(settings, state)
        _record(settings, "deployed", version=version, alias=alias, replaced=running, ready_seconds=backend.ready_seconds)
        _tag_version(settings, version, "serving", f"deployed at {state.url}")
        return state


def _start_checked(settings: Settings, alias: str, version: str, running: str | None) -> Backend:
    """Start ``version`` beside the running one; readiness and smoke test, or roll back."""
    server = None
    started = time.monotonic()
    try:
        tag = import_model(settings.model.name, version)
        server = start_server(settings, tag, port=free_port())
        ready_seconds = round(time.monotonic() - started, 2)
        smoke_test(server.url, settings, version)
    except BaseException as exc:
        if server is not None:
            server.stop()
        if not isinstance(exc, Exception):  # Ctrl-C: clean up, roll nothing back
            raise
        restored = _roll_back(settings, alias, version, running)
        # Any failure of the candidate (a model that cannot be imported included) rejects it.
        reason = str(exc) if isinstance(exc, MlopsError) else f"{type(exc).__name__}: {exc}"
        _record(settings, "rejected", version=version, alias=alias, restored=restored, reason=reason[:2000])
        _tag_version(settings, version, "rejected", reason.splitlines()[0][:500])
        moved = f" Alias {alias!r} moved back to version {restored}." if restored else ""
        serving = f" Version {running} keeps serving." if running else ""
        raise ServingError(f"Version {version} was rejected and got no traffic.{moved}{serving} {reason}") from None
    log_path = str(server.log_path)
    return Backend(server.process.pid, server.port, server.url, version, tag, log_path, ready_seconds)


def smoke_test(url: str, settings: Settings, version: str) -> None:
    """Send ``serving.smoke_rows`` reference rows to ``{url}/predict`` and check the answer.

    Checks status, model version, one prediction per row, integer labels and
    probability rows in [0, 1] summing to 1, all within ``serving.smoke_timeout_seconds``.
    Raises :class:`ServingError` naming what was wrong.
    """
    import httpx

    records = _reference_sample(settings)
    headers = {SMOKE_TEST_HEADER: "1"}
    api_key = os.environ.get(settings.serving.api_key_env)
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    try:
        response = httpx.post(
            f"{url}/predict", json={"records": records}, headers=headers, timeout=settings.serving.smoke_timeout_seconds
        )
    except httpx.HTTPError as exc:
        raise ServingError(f"The smoke test got no answer from {url} ({type(exc).__name__}).") from None
    problems = _answer_problems(response, len(records), version, settings)
    if problems:
        raise ServingError(f"The smoke test failed: {'; '.join(problems)}.")


def _reference_sample(settings: Settings) -> list[dict[str, Any]]:
    """Training rows as a client sends them: the contract's features, JSON nulls where values are missing."""
    from mlops.contract import load_contract
    from mlops.data import load_table

    features = [column.name for column in load_contract(settings.data.contract).features]
    frame = load_table(settings.data.training)[features]
    sample = frame.sample(n=min(settings.serving.smoke_rows, len(frame)), random_state=settings.model.seed)
    return json.loads(sample.to_json(orient="records"))


def _answer_problems(response: Any, rows: int, version: str, settings: Settings | None = None) -> list[str]:
    """What is wrong with a smoke-test answer: its status, version, and predictions for the task."""
    if response.status_code != 200:
        return [f"HTTP {response.status_code}: {response.text[:300]}"]
    body = response.json()
    problems = []
    if str(body.get("model_version")) != version:
        problems.append(f"model_version is {body.get('model_version')!r}, expected {version!r}")
    labels = body.get("predictions") or []
    if len(labels) != rows:
        problems.append(f"{len(labels)} predictions for {rows} records")
    if settings is not None and settings.model.task == "regression":
        if not all(isinstance(value, (int, float)) and math.isfinite(value) for value in labels):
            problems.append("predictions are not finite numbers")
        return problems
    probabilities, classes = body.get("probabilities") or [], body.get("classes")
    if len(probabilities) != rows:
        problems.append(f"{len(probabilities)} probability rows for {rows} records")
    if classes is not None and not all(label in classes for label in labels):
        problems.append(f"predictions are not among the classes {classes}")
    if not all(_is_distribution(row) for row in probabilities):
        problems.append("probability rows are not distributions over the classes")
    return problems


def _is_distribution(row: Any) -> bool:
    numbers = isinstance(row, list) and len(row) >= 2 and all(isinstance(p, (int, float)) for p in row)
    return numbers and all(0.0 <= p <= 1.0 for p in row) and abs(sum(row) - 1.0) < 1e-3


def _roll_back(settings: Settings, alias: str, failed: str, running: str | None) -> str | None:
    """Point ``alias`` back at the running version (else ``previous``) if it names ``failed``."""
    from mlflow import MlflowClient

    name = settings.model.name
    target = running or _alias_version(name, "previous")
    if target is None or target == failed or _alias_version(name, alias) != failed:
        return None
    MlflowClient().set_registered_model_alias(name, alias, target)
    return target


def _alias_version(name: str, alias: str) -> str | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _tag_version(settings: Settings, version: str, status: str, reason: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    client.set_model_version_tag(settings.model.name, version, "mlops.deploy.status", status)
    client.set_model_version_tag(settings.model.name, version, "mlops.deploy.reason", reason or "-")


def _ensure_proxy(settings: Settings, current: DeploymentState | None, upstream: str) -> int:
    """The running proxy's pid, or start one already pointing at ``upstream``."""
    import subprocess

    if current and _alive(current.proxy_pid):
        return current.proxy_pid
    write_upstream(_upstream_file(settings), upstream)
    host, port = settings.serving.host, settings.serving.port
    command = [sys.executable, "-m", "uvicorn", "--factory", "mlops.proxy:create_app", "--host", host]
    command += ["--port", str(port), "--log-level", "warning", "--no-access-log", "--loop", "uvloop", "--http", "httptools"]
    env = {**os.environ, **tool_variables(settings), "MLOPS_PROXY_UPSTREAM_FILE": str(_upstream_file(settings))}
    env["MLOPS_MAX_REQUEST_BYTES"] = str(settings.serving.max_request_bytes)
    log_path = settings.state_dir / "logs" / f"proxy-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, cwd=_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        _wait_for_proxy(_proxy_url(settings), process)
    except ServingError as exc:
        _stop_group(process.pid)
        raise ServingError(f"{exc} Is port {port} taken? Free it or set serving.port. Log: {log_path}") from None
    return process.pid


def _wait_for_proxy(url: str, process: Any) -> None:
    import httpx

    deadline = time.monotonic() + _PROXY_START_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url + STATUS_PATH, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise ServingError(f"The swap proxy at {url} did not start.")


def _move_traffic(settings: Settings, upstream: str) -> None:
    """Point the proxy at ``upstream`` and wait until it says so."""
    write_upstream(_upstream_file(settings), upstream)
    if _proxy_status(settings).get("upstream") != upstream:
        raise ServingError(f"The swap proxy at {_proxy_url(settings)} did not take upstream {upstream}.")


def _drain(settings: Settings, old: Backend) -> None:
    """Wait until no request is in flight to ``old`` (or the drain timeout), then stop it."""
    deadline = time.monotonic() + settings.serving.drain_timeout_seconds
    while time.monotonic() < deadline and _proxy_status(settings).get("in_flight", {}).get(old.url):
        time.sleep(0.05)
    _stop_group(old.pid)


def _proxy_status(settings: Settings) -> dict[str, Any]:
    import httpx

    return httpx.get(_proxy_url(settings) + STATUS_PATH, timeout=5.0).json()


def deployment_status(settings: Settings) -> DeploymentStatus:
    """The recorded deployment and whether it is alive and ready (through the proxy)."""
    import httpx

    state = _read_state(settings)
    if state is None:
        return DeploymentStatus(None)
    try:
        ready = httpx.get(f"{state.url}/readyz", timeout=5.0).status_code == 200
    except httpx.HTTPError:
        ready = False
    return DeploymentStatus(state, _alive(state.proxy_pid), _alive(state.backend.pid), ready)


def stop_deployment(settings: Settings) -> DeploymentState | None:
    """Stop the model server and the proxy and forget the deployment; None if none ran."""
    with _deploy_lock(settings):
        state = _read_state(settings)
        if state is None:
            return None
        _stop_group(state.backend.pid)
        _stop_group(state.proxy_pid)
        _state_file(settings).unlink(missing_ok=True)
        _upstream_file(settings).unlink(missing_ok=True)
        _record(settings, "stopped", version=state.backend.version, alias=state.alias)
        return state


def read_events(settings: Settings) -> list[dict[str, Any]]:
    """The deployment history (``deployed``, ``rejected``, ``stopped``), oldest first."""
    path = _deploy_dir(settings) / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _record(settings: Settings, event: str, **details: Any) -> None:
    line = json.dumps({"timestamp": _now(), "event": event, "model_name": settings.model.name, **details})
    with open(_deploy_dir(settings) / "events.jsonl", "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def _live_state(settings: Settings) -> DeploymentState | None:
    """The recorded state, or None when nothing of it runs any more (a reboot, a kill)."""
    state = _read_state(settings)
    if state and not _alive(state.proxy_pid):
        _stop_group(state.backend.pid)
        return None
    return state


def _read_state(settings: Settings) -> DeploymentState | None:
    path = _state_file(settings)
    if not path.exists():
        return None
    values = json.loads(path.read_text(encoding="utf-8"))
    return DeploymentState(**{**values, "backend": Backend(**values["backend"])})


def _write_state(settings: Settings, state: DeploymentState) -> None:
    path = _state_file(settings)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(state), indent=2), encoding="utf-8")
    os.replace(temporary, path)


@contextmanager
def _deploy_lock(settings: Settings) -> Iterator[None]:
    from filelock import FileLock, Timeout

    try:
        with FileLock(_deploy_dir(settings) / "deploy.lock", timeout=5):
            yield
    except Timeout:
        raise ServingError("Another `mlops deploy` is running on this state folder; wait for it.") from None


def _deploy_dir(settings: Settings) -> Path:
    folder = settings.state_dir / "deploy"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _state_file(settings: Settings) -> Path:
    return _deploy_dir(settings) / "state.json"


def _upstream_file(settings: Settings) -> Path:
    return _deploy_dir(settings) / "upstream.json"


def _proxy_url(settings: Settings) -> str:
    host = settings.serving.host
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{settings.serving.port}"


def _alive(pid: int) -> bool:
    _reap(pid)
    try:
        os.killpg(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _stop_group(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM the process group (graceful), SIGKILL what is left after ``timeout``."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(pid)


def _reap(pid: int) -> None:
    # A child of this process (tests, the demo) lingers as a zombie until waited for.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()
