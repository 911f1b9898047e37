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

**Shadow mode** (:func:`deploy_shadow`): a challenger version runs beside the champion,
started and smoke-tested like a candidate but never touching aliases or the champion,
at the lowest CPU priority (``nice`` :data:`SHADOW_NICE`, scheduler autogroups included), its predictions logged apart
(:func:`shadow_predictions_dir`). The proxy copies every answered ``/predict`` to it;
clients only ever get the champion's answer. :func:`stop_shadow` stops it, and so do
:func:`stop_deployment` and a :func:`deploy` that makes the shadow's version the serving
one. Promotion stays the normal gate (``mlops promote VERSION``)::

    deploy_shadow(settings, "4")           # v4 sees a copy of every request
    stop_shadow(settings)

Every process here is started in its own process group and stopped as one; a pid read
back from ``state.json`` is signalled only while it is still ours (same start time).
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
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlops.config import Settings
from mlops.environment import tool_variables
from mlops.errors import MlopsError, RegistryError, ServingError
from mlops.proxy import STATUS_PATH, write_upstream
from mlops.serving import free_port, import_model, resolve_alias, start_server, wait_until_ready

__all__ = [
    "SHADOW_NICE",
    "SMOKE_TEST_HEADER",
    "Backend",
    "DeploymentState",
    "DeploymentStatus",
    "deploy",
    "deploy_shadow",
    "deployment_status",
    "read_events",
    "shadow_predictions_dir",
    "smoke_test",
    "stop_deployment",
    "stop_shadow",
]

# Requests carrying it are answered but not logged: reference rows would hide drift.
SMOKE_TEST_HEADER = "x-mlops-smoke-test"
# The shadow's CPU priority, for its processes and their scheduler autogroups (_lower_priority): competing
# for a core, the champion (nice 0) gets ~70x its share, so the shadow mostly runs on idle time.
SHADOW_NICE = 19
_PROXY_START_SECONDS = 30.0
_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Backend:
    """One BentoML process serving one model version; ``started`` tells its pid from a reused one."""

    pid: int
    port: int
    url: str
    version: str
    tag: str
    log_path: str
    ready_seconds: float
    started: str | None = None  # the process's start time; None: unknown (another OS, an older state file)


@dataclass(frozen=True)
class DeploymentState:
    """What ``state.json`` records about the running deployment; ``shadow`` is the version in shadow mode."""

    url: str
    proxy_pid: int
    model_name: str
    alias: str
    backend: Backend
    deployed_at: str
    replaced_version: str | None = None
    proxy_started: str | None = None
    shadow: Backend | None = None


@dataclass(frozen=True)
class DeploymentStatus:
    """Whether the deployment's processes live and the address answers ready.

    ``shadow_copies`` is the proxy's count of the copies for the shadow (sent, dropped,
    failed, refused, queued); the shadow never makes the deployment unhealthy.
    """

    state: DeploymentState | None
    proxy_alive: bool = False
    backend_alive: bool = False
    ready: bool = False
    shadow_alive: bool = False
    shadow_copies: dict[str, Any] | None = None

    @property
    def healthy(self) -> bool:
        return self.proxy_alive and self.backend_alive and self.ready


def deploy(settings: Settings, alias: str | None = None) -> DeploymentState:
    """Serve the version behind ``alias`` at ``serving.port``; swap without dropping requests.

    Redeploying the running version is a no-op. Raises :class:`ServingError` when the
    version fails readiness or the smoke test (after rolling back, see module doc). A
    shadow keeps its copies through the swap, unless its version is the one now serving:
    then it is stopped once the swap is done.
    """
    alias = alias or settings.serving.alias
    with _deploy_lock(settings):
        current = _live_state(settings)
        version = resolve_alias(settings.model.name, alias)
        if current and current.backend.version == version and _running(current.backend):
            return current
        running = current.backend.version if current and _running(current.backend) else None
        backend = _start_checked(settings, alias, version, running)
        try:
            proxy_pid, proxy_started = _ensure_proxy(settings, current, backend.url)
        except ServingError:
            _stop_group(backend.pid, backend.started)
            raise
        shadow = current.shadow if current else None
        kept = shadow if shadow is not None and shadow.version != version and _running(shadow) else None
        _move_traffic(settings, backend.url, kept.url if kept else None)
        if current and _running(current.backend):
            _drain(settings, current.backend)
        if shadow is not None and kept is None:
            _stop_group(shadow.pid, shadow.started)
            why = f"version {version} is serving now" if shadow.version == version else "it was not running"
            _record(settings, "shadow_stopped", version=shadow.version, reason=why)
        state = DeploymentState(
            url=_proxy_url(settings),
            proxy_pid=proxy_pid,
            model_name=settings.model.name,
            alias=alias,
            backend=backend,
            deployed_at=_now(),
            replaced_version=running,
            proxy_started=proxy_started,
            shadow=kept,
        )
        _write_state(settings, state)
        _record(settings, "deployed", version=version, alias=alias, replaced=running, ready_seconds=backend.ready_seconds)
        _tag_version(settings, version, "serving", f"deployed at {state.url}")
        return state


def deploy_shadow(settings: Settings, version: str) -> DeploymentState:
    """Run ``version`` in shadow mode beside the serving version (or replace the running shadow).

    The shadow gets a copy of every request the champion answered; clients get the
    champion's answers only. Its predictions go to :func:`shadow_predictions_dir`, so
    ``mlops monitor`` can compare the two. Started and smoke-tested like a candidate; one
    that fails is stopped and recorded (``shadow_rejected``) without touching any alias or
    the champion. Raises :class:`ServingError` when nothing is deployed or the shadow
    fails, :class:`RegistryError` for an unknown version, :class:`MlopsError` for the
    version already serving. Deploying the running shadow's version again is a no-op.
    """
    version = str(version).strip()
    with _deploy_lock(settings):
        current = _live_state(settings)
        if current is None or not _running(current.backend):
            raise ServingError("No deployment is running: start one with `mlops deploy` first, then add a shadow.")
        if version == current.backend.version:
            raise MlopsError(
                f"Version {version} is the one serving; a shadow must be another version (list them with `mlops compare`)."
            )
        old = current.shadow
        if old is not None and old.version == version and _running(old):
            return current
        shadow = _start_shadow(settings, version, current.backend.version)
        try:
            _move_traffic(settings, current.backend.url, shadow.url)
        except Exception:
            _stop_group(shadow.pid, shadow.started)
            raise
        if old is not None:
            _stop_group(old.pid, old.started)
            _record(settings, "shadow_stopped", version=old.version, reason=f"replaced by version {version}")
        state = replace(current, shadow=shadow)
        _write_state(settings, state)
        _record(
            settings, "shadow_started", version=version, serving=current.backend.version,
            replaced=old.version if old else None, ready_seconds=shadow.ready_seconds,
        )  # fmt: skip
        return state


def stop_shadow(settings: Settings) -> Backend | None:
    """Stop the shadow (copies stop first, then its process); the champion keeps serving. None if none ran."""
    with _deploy_lock(settings):
        state = _read_state(settings)
        if state is None or state.shadow is None:
            return None
        shadow = state.shadow
        if _alive(state.proxy_pid, state.proxy_started):
            _move_traffic(settings, state.backend.url, None)
        _stop_group(shadow.pid, shadow.started)
        _write_state(settings, replace(state, shadow=None))
        _record(settings, "shadow_stopped", version=shadow.version, reason="stopped")
        return shadow


def shadow_predictions_dir(settings: Settings) -> Path:
    """Where the shadow logs its predictions: beside the champion's log, never in it."""
    return settings.state_dir / "predictions-shadow"


def _start_shadow(settings: Settings, version: str, serving: str) -> Backend:
    """Start ``version`` niced, logging to the shadow folder; readiness and smoke test, or stop it."""
    server = None
    started = time.monotonic()
    try:
        tag = import_model(settings.model.name, version)
        server = start_server(
            settings, tag, port=free_port(), predictions_dir=shadow_predictions_dir(settings), nice=SHADOW_NICE
        )
        _lower_priority(server.process.pid, SHADOW_NICE)
        ready_seconds = round(time.monotonic() - started, 2)
        smoke_test(server.url, settings, version)
    except RegistryError:
        raise  # an unknown version: nothing was started
    except BaseException as exc:
        if server is not None:
            server.stop()
        if not isinstance(exc, Exception):  # Ctrl-C: clean up, record nothing
            raise
        reason = str(exc) if isinstance(exc, MlopsError) else f"{type(exc).__name__}: {exc}"
        _record(settings, "shadow_rejected", version=version, serving=serving, reason=reason[:2000])
        raise ServingError(f"Shadow version {version} was not started; version {serving} serves alone. {reason}") from None
    pid = server.process.pid
    return Backend(pid, server.port, server.url, version, tag, str(server.log_path), ready_seconds, _process_start(pid))


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
    pid, log_path = server.process.pid, str(server.log_path)
    return Backend(pid, server.port, server.url, version, tag, log_path, ready_seconds, _process_start(pid))


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


def _ensure_proxy(settings: Settings, current: DeploymentState | None, upstream: str) -> tuple[int, str | None]:
    """The running proxy's pid and start time, or start one already pointing at ``upstream``."""
    import subprocess

    if current and _alive(current.proxy_pid, current.proxy_started):
        return current.proxy_pid, current.proxy_started
    write_upstream(_upstream_file(settings), upstream)
    host, port = settings.serving.host, settings.serving.port
    command = [sys.executable, "-m", "uvicorn", "--factory", "mlops.proxy:create_app", "--host", host]
    command += ["--port", str(port), "--log-level", "warning", "--no-access-log", "--loop", "uvloop", "--http", "httptools"]
    env = {**os.environ, **tool_variables(settings), "MLOPS_PROXY_UPSTREAM_FILE": str(_upstream_file(settings))}
    env["MLOPS_MAX_REQUEST_BYTES"] = str(settings.serving.max_request_bytes)
    env["MLOPS_API_KEY_ENV"] = settings.serving.api_key_env  # the key it sends the shadow, read from its environment
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
    return process.pid, _process_start(process.pid)


def _wait_for_proxy(url: str, process: Any) -> None:
    import httpx

    deadline = time.monotonic() + _PROXY_START_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        try:
            response = httpx.get(url + STATUS_PATH, timeout=2.0)
            # Another process already on the port answers too: only our own proxy counts.
            if response.status_code == 200 and response.json().get("pid") == process.pid:
                return
        except (httpx.TransportError, ValueError):
            pass
        time.sleep(0.2)
    raise ServingError(f"The swap proxy at {url} did not start.")


def _move_traffic(settings: Settings, upstream: str, shadow: str | None = None) -> None:
    """Point the proxy at ``upstream`` (and its copies at ``shadow``) and wait until it says so."""
    write_upstream(_upstream_file(settings), upstream, shadow=shadow)
    status = _proxy_status(settings)
    if status.get("upstream") != upstream or (status.get("shadow") or {}).get("upstream") != shadow:
        raise ServingError(f"The swap proxy at {_proxy_url(settings)} did not take upstream {upstream} (shadow {shadow}).")


def _drain(settings: Settings, old: Backend) -> None:
    """Wait until no request is in flight to ``old`` (or the drain timeout), then stop it."""
    deadline = time.monotonic() + settings.serving.drain_timeout_seconds
    while time.monotonic() < deadline and _proxy_status(settings).get("in_flight", {}).get(old.url):
        time.sleep(0.05)
    _stop_group(old.pid, old.started)


def _proxy_status(settings: Settings) -> dict[str, Any]:
    import httpx

    return httpx.get(_proxy_url(settings) + STATUS_PATH, timeout=5.0).json()


def deployment_status(settings: Settings) -> DeploymentStatus:
    """The recorded deployment and whether it is alive and ready (through the proxy), with its shadow's copies."""
    import httpx

    state = _read_state(settings)
    if state is None:
        return DeploymentStatus(None)
    try:
        ready = httpx.get(f"{state.url}/readyz", timeout=5.0).status_code == 200
    except httpx.HTTPError:
        ready = False
    copies = None
    if state.shadow is not None:
        try:
            copies = httpx.get(state.url + STATUS_PATH, timeout=5.0).json().get("shadow")
        except (httpx.HTTPError, ValueError):
            copies = None
    proxy_alive, backend_alive = _alive(state.proxy_pid, state.proxy_started), _running(state.backend)
    shadow_alive = state.shadow is not None and _running(state.shadow)
    return DeploymentStatus(state, proxy_alive, backend_alive, ready, shadow_alive, copies)


def stop_deployment(settings: Settings) -> DeploymentState | None:
    """Stop the shadow, the model server and the proxy and forget the deployment; None if none ran."""
    with _deploy_lock(settings):
        state = _read_state(settings)
        if state is None:
            return None
        if state.shadow is not None:
            _stop_group(state.shadow.pid, state.shadow.started)
            _record(settings, "shadow_stopped", version=state.shadow.version, reason="the deployment was stopped")
        _stop_group(state.backend.pid, state.backend.started)
        _stop_group(state.proxy_pid, state.proxy_started)
        _state_file(settings).unlink(missing_ok=True)
        _upstream_file(settings).unlink(missing_ok=True)
        _record(settings, "stopped", version=state.backend.version, alias=state.alias)
        return state


def read_events(settings: Settings) -> list[dict[str, Any]]:
    """The deployment history (``deployed``, ``rejected``, ``stopped``, ``shadow_started``,
    ``shadow_stopped``, ``shadow_rejected``), oldest first."""
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
    if state and not _alive(state.proxy_pid, state.proxy_started):
        _stop_group(state.backend.pid, state.backend.started)
        if state.shadow is not None:
            _stop_group(state.shadow.pid, state.shadow.started)
        return None
    return state


def _read_state(settings: Settings) -> DeploymentState | None:
    path = _state_file(settings)
    if not path.exists():
        return None
    values = json.loads(path.read_text(encoding="utf-8"))
    shadow = values.get("shadow")  # files written before shadow mode have none
    return DeploymentState(
        **{**values, "backend": Backend(**values["backend"]), "shadow": Backend(**shadow) if shadow else None}
    )


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


def _running(backend: Backend) -> bool:
    return _alive(backend.pid, backend.started)


def _alive(pid: int, started: str | None = None) -> bool:
    """Whether process group ``pid`` exists and is still the one we started (``started``: its leader's start time)."""
    _reap(pid)
    try:
        os.killpg(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return _ours(pid, started)


def _ours(pid: int, started: str | None) -> bool:
    """A group whose leader started at another time is someone else's (the pid was reused after a reboot).

    Linux never hands out a pid while a process group of that id exists, so a group whose
    leader has exited is still ours: its workers are what is left to stop.
    """
    if started is None:
        return True
    now = _process_start(pid)
    return now is None or now == started


def _process_start(pid: int) -> str | None:
    """The process's start time (clock ticks after boot, ``/proc/PID/stat`` field 22); None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces and parentheses
    return fields[19] if len(fields) > 19 else None


def _stop_group(pid: int, started: str | None = None, timeout: float = 15.0) -> None:
    """SIGTERM the process group (graceful), SIGKILL what is left after ``timeout``; only while it is ours.

    BentoML starts each worker in a session of its own, outside the arbiter's group: the
    arbiter stops them on SIGTERM, and whichever of them is still there at the deadline
    (the same process: pid and start time) is killed with the group.
    """
    if not _alive(pid, started):
        return
    family = _descendants(pid)
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while (_alive(pid, started) or _left(family)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid, started):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for child, _ in _left(family):
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _reap(pid)


def _lower_priority(pid: int, nice: int) -> None:
    """Run the process tree of ``pid`` at ``nice``, its scheduler autogroups included.

    With autogroups (``kernel.sched_autogroup_enabled``, the default of most distributions)
    every session is scheduled as one group and a task's own nice only counts inside it;
    the server and each BentoML worker run in sessions of their own, so ``nice`` alone left
    the shadow competing with the champion as an equal (measured: ~10 % of a core taken at
    8 clients). A worker BentoML restarts later gets a fresh autogroup at nice 0.
    """
    sessions = set()
    for process in [pid, *(child for child, _ in _descendants(pid))]:
        try:
            os.setpriority(os.PRIO_PROCESS, process, nice)
            session = os.getsid(process)
        except OSError:  # exited meanwhile
            continue
        if session not in sessions:
            sessions.add(session)
            _set_autogroup_nice(process, nice)


def _set_autogroup_nice(pid: int, nice: int) -> None:
    # Unprivileged writers get EAGAIN more often than every 100 ms (kernel/sched/autogroup.c).
    path = Path(f"/proc/{pid}/autogroup")
    for _ in range(10):
        try:
            path.write_text(str(nice), encoding="ascii")
            return
        except BlockingIOError:
            time.sleep(0.11)
        except OSError:  # no autogroups (another OS, a kernel without them): nice alone applies
            return


def _descendants(pid: int) -> list[tuple[int, str]]:
    """Every process below ``pid`` (children, theirs...) with its start time; empty where /proc is unknown."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text(encoding="ascii", errors="replace").rpartition(")")[2].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], list(parents.get(pid, []))
    while todo:
        child = todo.pop()
        if (start := _process_start(child)) is not None:
            found.append((child, start))
        todo += parents.get(child, [])
    return found


def _left(family: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The processes of ``family`` still running as themselves (not exited, not a reused pid)."""
    return [(pid, start) for pid, start in family if _process_start(pid) == start and not _zombie(pid)]


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace").rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def _reap(pid: int) -> None:
    # A child of this process (tests, the demo) lingers as a zombie until waited for.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()
