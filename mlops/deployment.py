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

**Supervision.** Every process here is started in a session of its own by
:mod:`mlops.processes` and stopped as a tree: the arbiter's group plus every worker recorded
in ``state.json`` (BentoML runs each worker in a session of its own, so a worker outlives a
killed arbiter); a pid read back is signalled only while it is still ours (same start
time). ``serving.instances`` servers of the version run behind the proxy, which spreads
requests over them and retries on another when one fails to answer. A watchdog
(:mod:`mlops.watchdog`, :func:`repair`) restarts a dead proxy on the same port and a dead
model server with the same version; ``deploy`` of the version already serving never
restarts a healthy server, it only starts a dead proxy or watchdog again.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from filelock import FileLock, Timeout
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlops import audit, processes
from mlops.config import Settings
from mlops.contract import load_contract
from mlops.data import load_table
from mlops.environment import tool_variables
from mlops.errors import MlopsError, RegistryError, ServingError
from mlops.processes import Member
from mlops.processes import alive as _alive
from mlops.processes import descendants as _descendants
from mlops.processes import process_start as _process_start
from mlops.proxy import STATUS_PATH, write_upstream
from mlops.service.guard import SMOKE_TEST_HEADER
from mlops.service.settings import proxy_settings
from mlops.serving import ServerProcess, client_host, free_port, import_model, resolve_alias, start_server, store_home

__all__ = [
    "SHADOW_NICE",
    "Backend",
    "DeploymentState",
    "DeploymentStatus",
    "Part",
    "deploy",
    "deploy_shadow",
    "deployment_state",
    "deployment_status",
    "read_events",
    "repair",
    "shadow_predictions_dir",
    "smoke_test",
    "stop_deployment",
    "stop_shadow",
]

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
    family: tuple[Member, ...] = ()  # its workers (pid, start time), refreshed by the watchdog


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
    replicas: tuple[Backend, ...] = ()  # more instances of the version (serving.instances - 1)
    watchdog_pid: int | None = None
    watchdog_started: str | None = None

    @property
    def instances(self) -> tuple[Backend, ...]:
        return (self.backend, *self.replicas)


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
    parts: tuple[Part, ...] = ()

    @property
    def healthy(self) -> bool:
        """Proxy and every instance's arbiter up, the address ready, no orphaned worker."""
        servers = [p for p in self.parts if p.name.startswith("model server")]
        return self.proxy_alive and self.backend_alive and self.ready and all(p.up and "ORPHANED" not in p.name for p in servers)


@dataclass(frozen=True)
class Part:
    """One process of the deployment and whether it runs (as the one that was started)."""

    name: str
    pid: int
    up: bool


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
            return _keep_running(settings, current)  # a healthy server of this version is never restarted
        running = current.backend.version if current and _running(current.backend) else None
        instances = _start_instances(settings, alias, version, running)
        backend, replicas = instances[0], tuple(instances[1:])
        try:
            proxy_pid, proxy_started = _ensure_proxy(settings, current, backend.url)
            shadow = current.shadow if current else None
            kept = shadow if shadow is not None and shadow.version != version and _running(shadow) else None
            _move_traffic(settings, backend.url, kept.url if kept else None, [r.url for r in replicas])
        except BaseException:
            for instance in instances:
                _stop_backend(instance)
            raise
        for old in current.instances if current else ():
            if _running(old):
                _drain(settings, old)
            else:
                _stop_backend(old)  # a killed arbiter's orphaned workers served until now
        if shadow is not None and kept is None:
            _stop_backend(shadow)
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
            replicas=replicas,
        )
        _write_state(settings, state)
        state = _ensure_watchdog(settings, state)
        _record(settings, "deployed", version=version, alias=alias, replaced=running, ready_seconds=backend.ready_seconds)
        audit.record(settings, "deploy", version=version, reason=f"alias {alias!r} at {state.url}", alias=alias, replaced=running)
        _tag_version(settings, version, "serving", f"deployed at {state.url}")
        return state


def _keep_running(settings: Settings, current: DeploymentState) -> DeploymentState:
    """The running version stays: only a dead proxy or watchdog is started again (a kill, a reboot of one part)."""
    state = current
    if not _alive(current.proxy_pid, current.proxy_started):
        proxy_pid, proxy_started = _start_proxy(settings)
        state = replace(state, proxy_pid=proxy_pid, proxy_started=proxy_started)
    if state != current:
        _write_state(settings, state)
    return _ensure_watchdog(settings, state)


def _start_instances(settings: Settings, alias: str, version: str, running: str | None) -> list[Backend]:
    """``serving.instances`` servers of ``version``, each smoke-tested; all of them, or none and rejected."""
    started = [_start_checked(settings, alias, version, running)]
    try:
        for _ in range(settings.serving.instances - 1):
            started.append(_start_checked(settings, alias, version, running))
    except BaseException:
        for backend in started:
            _stop_backend(backend)
        raise
    return started


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
            _move_traffic(settings, current.backend.url, shadow.url, [r.url for r in current.replicas])
        except BaseException:
            _stop_backend(shadow)
            raise
        if old is not None:
            _stop_backend(old)
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
            _move_traffic(settings, state.backend.url, None, [r.url for r in state.replicas])
        _stop_backend(shadow)
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
    return _backend(server, version, ready_seconds)


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
        if restored:  # the automatic alias roll-back is audited like one by hand
            why = f"v{version} rejected: {reason[:1000]}"
            audit.record(settings, "deploy_rollback", version=restored, reason=why, alias=alias, rejected=version)
        _tag_version(settings, version, "rejected", reason.splitlines()[0][:500])
        moved = f" Alias {alias!r} moved back to version {restored}." if restored else ""
        serving = f" Version {running} keeps serving." if running else ""
        raise ServingError(f"Version {version} was rejected and got no traffic.{moved}{serving} {reason}") from None
    return _backend(server, version, ready_seconds)


def _backend(server: ServerProcess, version: str, ready_seconds: float) -> Backend:
    family = tuple(sorted(server.family or _descendants(server.process.pid)))
    return Backend(
        server.process.pid, server.port, server.url, version, server.model_tag, str(server.log_path), ready_seconds,
        server.started, family,
    )  # fmt: skip


def smoke_test(url: str, settings: Settings, version: str) -> None:
    """Send ``serving.smoke_rows`` reference rows to ``{url}/predict`` and check the answer.

    Checks status, model version, one prediction per row, integer labels and
    probability rows in [0, 1] summing to 1, all within ``serving.smoke_timeout_seconds``.
    Raises :class:`ServingError` naming what was wrong.
    """
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
    features = [column.name for column in load_contract(settings.data.contract).features]
    frame = load_table(settings.data.training)[features]
    sample = frame.sample(n=min(settings.serving.smoke_rows, len(frame)), random_state=settings.model.seed)
    return json.loads(sample.to_json(orient="records"))


def _answer_problems(response: httpx.Response, rows: int, version: str, settings: Settings | None = None) -> list[str]:
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
    name = settings.model.name
    target = running or _alias_version(name, "previous")
    if target is None or target == failed or _alias_version(name, alias) != failed:
        return None
    MlflowClient().set_registered_model_alias(name, alias, target)
    return target


def _alias_version(name: str, alias: str) -> str | None:
    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _tag_version(settings: Settings, version: str, status: str, reason: str) -> None:
    client = MlflowClient()
    client.set_model_version_tag(settings.model.name, version, "mlops.deploy.status", status)
    client.set_model_version_tag(settings.model.name, version, "mlops.deploy.reason", reason or "-")


def _ensure_proxy(settings: Settings, current: DeploymentState | None, upstream: str) -> tuple[int, str | None]:
    """The running proxy's pid and start time, or start one already pointing at ``upstream``."""
    if current and _alive(current.proxy_pid, current.proxy_started):
        return current.proxy_pid, current.proxy_started
    if current is None or not _upstream_file(settings).exists():
        write_upstream(_upstream_file(settings), upstream)
    return _start_proxy(settings)


def _start_proxy(settings: Settings) -> tuple[int, str | None]:
    """Start the proxy on ``serving.port``, reading its upstreams from the upstream file; wait until it answers."""
    host, port = settings.serving.host, settings.serving.port
    command = [sys.executable, "-m", "uvicorn", "--factory", "mlops.proxy:create_app", "--host", host]
    command += ["--port", str(port), "--log-level", "warning", "--no-access-log", "--loop", "uvloop", "--http", "httptools"]
    env = {**os.environ, **tool_variables(settings), **proxy_settings(settings, _upstream_file(settings)).as_environment()}
    log_path = settings.state_dir / "logs" / f"proxy-{port}.log"
    process = processes.start(command, log_path=log_path, env=env, cwd=_ROOT, append=True)
    started = _process_start(process.pid)
    try:
        _wait_for_proxy(_proxy_url(settings), process)
    except ServingError as exc:
        processes.stop_tree(process.pid, started)
        raise ServingError(f"{exc} Is port {port} taken? Free it or set serving.port. Log: {log_path}") from None
    except BaseException:  # Ctrl-C while it starts: it must not outlive the command
        processes.stop_tree(process.pid, started)
        raise
    return process.pid, started


def _wait_for_proxy(url: str, process: subprocess.Popen[bytes]) -> None:
    # Another process already on the port answers too: only our own proxy counts.
    ours = lambda response: response.json().get("pid") == process.pid  # noqa: E731
    # The watchdog restarts a killed proxy through here: every 50 ms counts.
    if processes.wait_healthy(lambda: processes.answers(url + STATUS_PATH, ours), process, _PROXY_START_SECONDS, interval=0.05):
        return
    raise ServingError(f"The swap proxy at {url} did not start.")


def _move_traffic(settings: Settings, upstream: str, shadow: str | None = None, replicas: list[str] | None = None) -> None:
    """Point the proxy at ``upstream`` and ``replicas`` (and its copies at ``shadow``) and wait until it says so."""
    write_upstream(_upstream_file(settings), upstream, shadow=shadow, replicas=replicas or [])
    status = _proxy_status(settings)
    taken = status.get("upstreams", [status.get("upstream")]) == [upstream, *(replicas or [])]
    if not taken or (status.get("shadow") or {}).get("upstream") != shadow:
        raise ServingError(f"The swap proxy at {_proxy_url(settings)} did not take upstream {upstream} (shadow {shadow}).")


def _drain(settings: Settings, old: Backend) -> None:
    """Wait until no request is in flight to ``old`` (or the drain timeout), then stop it."""
    deadline = time.monotonic() + settings.serving.drain_timeout_seconds
    while time.monotonic() < deadline and _proxy_status(settings).get("in_flight", {}).get(old.url):
        time.sleep(0.05)
    _stop_backend(old)


def _proxy_status(settings: Settings) -> dict[str, Any]:
    return httpx.get(_proxy_url(settings) + STATUS_PATH, timeout=5.0).json()


def deployment_status(settings: Settings) -> DeploymentStatus:
    """The recorded deployment and whether it is alive and ready (through the proxy), with its shadow's copies."""
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
    return DeploymentStatus(state, proxy_alive, backend_alive, ready, shadow_alive, copies, _parts(state))


def _parts(state: DeploymentState) -> tuple[Part, ...]:
    """Each process of the deployment, as it runs now: proxy, watchdog, each server's arbiter and workers."""
    parts = [Part("proxy", state.proxy_pid, _alive(state.proxy_pid, state.proxy_started))]
    if state.watchdog_pid is not None:
        parts.append(Part("watchdog", state.watchdog_pid, processes.is_ours(state.watchdog_pid, state.watchdog_started)))
    servers = [(f"model server v{b.version} :{b.port}", b) for b in state.instances]
    servers += [(f"shadow v{state.shadow.version} :{state.shadow.port}", state.shadow)] if state.shadow else []
    for name, backend in servers:
        up = processes.is_ours(backend.pid, backend.started)
        parts.append(Part(f"{name} arbiter", backend.pid, up))
        workers = {*processes.left(backend.family), *(_descendants(backend.pid) if up else [])}
        role = "worker" if up else "worker ORPHANED (its arbiter is gone)"
        parts += [Part(f"{name} {role}", pid, True) for pid, _ in sorted(workers)]
    return tuple(parts)


def stop_deployment(settings: Settings) -> DeploymentState | None:
    """Stop the watchdog, the shadow, the model servers and the proxy and forget the deployment; None if none ran."""
    recorded = _read_state(settings)
    if recorded is not None and recorded.watchdog_pid is not None:  # first, and outside the lock it may hold
        processes.stop_process(recorded.watchdog_pid, recorded.watchdog_started)
    with _deploy_lock(settings):
        state = _read_state(settings)
        if state is None:
            return None
        if state.watchdog_pid is not None:  # first: it would restart what is stopped next
            processes.stop_process(state.watchdog_pid, state.watchdog_started)
        if state.shadow is not None:
            _stop_backend(state.shadow)
            _record(settings, "shadow_stopped", version=state.shadow.version, reason="the deployment was stopped")
        for backend in state.instances:
            _stop_backend(backend)
        processes.stop_tree(state.proxy_pid, state.proxy_started)
        _state_file(settings).unlink(missing_ok=True)
        _upstream_file(settings).unlink(missing_ok=True)
        _record(settings, "stopped", version=state.backend.version, alias=state.alias)
        return state


def repair(settings: Settings, refresh_workers: bool = True) -> list[str]:
    """One round of the watchdog (:mod:`mlops.watchdog`): restart what died, keeping the same version.

    A dead proxy is started again on the same port (it reads its upstreams from the
    upstream file); a model server whose arbiter died is started again with the same
    model, smoke-tested, given its traffic, and only then are its leftovers (orphaned
    workers) stopped. With ``refresh_workers`` (a scan of /proc) the workers of each server
    are recorded again, as BentoML respawns them. Skipped while a deploy holds the lock.
    Returns what it did, for the log.
    """
    try:
        with _deploy_lock(settings, timeout=0.0):
            return _repair(settings, refresh_workers)
    except _LockBusy:
        return []


def _repair(settings: Settings, refresh_workers: bool) -> list[str]:
    state = _read_state(settings)
    if state is None:
        return []
    done = []
    if not _alive(state.proxy_pid, state.proxy_started):
        proxy_pid, proxy_started = _start_proxy(settings)
        _record(settings, "proxy_restarted", version=state.backend.version, old_pid=state.proxy_pid, pid=proxy_pid)
        done.append(f"proxy restarted: pid {proxy_pid} (was {state.proxy_pid})")
        state = replace(state, proxy_pid=proxy_pid, proxy_started=proxy_started)
        _write_state(settings, state)
    instances = list(state.instances)
    for index, dead in enumerate(instances):
        if _running(dead):
            continue
        instances[index] = _restart_instance(settings, dead)
        state = replace(state, backend=instances[0], replicas=tuple(instances[1:]))
        _move_traffic(settings, state.backend.url, state.shadow.url if state.shadow else None, [r.url for r in state.replicas])
        _write_state(settings, state)
        _stop_backend(dead)  # its orphaned workers served until the new one took over
        _record(settings, "server_restarted", version=dead.version, old_pid=dead.pid, pid=instances[index].pid)
        done.append(f"model server v{dead.version} restarted: pid {instances[index].pid} (was {dead.pid})")
    refreshed = _with_current_workers(state) if refresh_workers or done else state
    if refreshed != state:
        _write_state(settings, refreshed)
    return done


def _restart_instance(settings: Settings, dead: Backend) -> Backend:
    """A new server for ``dead``'s model, ready and smoke-tested, or a ServingError (nothing left running)."""
    started = time.monotonic()
    server = start_server(settings, dead.tag, port=free_port())
    try:
        smoke_test(server.url, settings, dead.version)
    except BaseException:
        server.stop()
        raise
    return _backend(server, dead.version, round(time.monotonic() - started, 2))


def _with_current_workers(state: DeploymentState) -> DeploymentState:
    """The state with each running server's workers as they are now (BentoML replaces a dead worker)."""

    def current(backend: Backend) -> Backend:
        return replace(backend, family=tuple(sorted(_descendants(backend.pid)))) if _running(backend) else backend

    return replace(
        state, backend=current(state.backend), replicas=tuple(current(r) for r in state.replicas),
        shadow=current(state.shadow) if state.shadow else None,
    )  # fmt: skip


def _ensure_watchdog(settings: Settings, state: DeploymentState) -> DeploymentState:
    """The state with a running watchdog: the recorded one, or a new one (in a session of its own)."""
    if state.watchdog_pid is not None and processes.is_ours(state.watchdog_pid, state.watchdog_started):
        return state
    from mlops.watchdog import start_watchdog

    pid, started = start_watchdog(settings, store_home(state.backend.tag, settings))
    state = replace(state, watchdog_pid=pid, watchdog_started=started)
    _write_state(settings, state)
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
    """The recorded state, or None when neither its proxy nor any model server runs (a reboot, a kill).

    What is left of it then (orphaned workers, a shadow, the watchdog) is stopped. A dead proxy
    in front of a live server is the caller's to restart: the server keeps running.
    """
    state = _read_state(settings)
    if state is None or _alive(state.proxy_pid, state.proxy_started) or any(_running(b) for b in state.instances):
        return state
    if state.watchdog_pid is not None:
        processes.stop_process(state.watchdog_pid, state.watchdog_started)
    for backend in (*state.instances, *([state.shadow] if state.shadow else [])):
        _stop_backend(backend)
    return None


def deployment_state(settings: Settings) -> DeploymentState | None:
    """What ``state.json`` records (no process is checked); None when nothing is deployed."""
    return _read_state(settings)


def _read_state(settings: Settings) -> DeploymentState | None:
    path = _state_file(settings)
    if not path.exists():
        return None
    values = json.loads(path.read_text(encoding="utf-8"))
    shadow = values.get("shadow")  # files written before shadow mode have none
    return DeploymentState(**{
        **values,
        "backend": _read_backend(values["backend"]),
        "shadow": _read_backend(shadow) if shadow else None,
        "replicas": tuple(_read_backend(replica) for replica in values.get("replicas", [])),
    })  # fmt: skip


def _read_backend(values: dict[str, Any]) -> Backend:
    return Backend(**{**values, "family": tuple((int(pid), str(begun)) for pid, begun in values.get("family", []))})


def _write_state(settings: Settings, state: DeploymentState) -> None:
    path = _state_file(settings)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(state), indent=2), encoding="utf-8")
    os.replace(temporary, path)


class _LockBusy(ServingError):
    """Another deploy (or the watchdog's repair) holds the deployment's lock."""


@contextmanager
def _deploy_lock(settings: Settings, timeout: float = 5.0) -> Iterator[None]:
    try:
        with FileLock(_deploy_dir(settings) / "deploy.lock", timeout=timeout):
            yield
    except Timeout:
        busy = "Another `mlops deploy` (or the deployment's watchdog) is busy on this state folder; wait for it."
        raise _LockBusy(busy) from None


def _deploy_dir(settings: Settings) -> Path:
    folder = settings.state_dir / "deploy"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _state_file(settings: Settings) -> Path:
    return _deploy_dir(settings) / "state.json"


def _upstream_file(settings: Settings) -> Path:
    return _deploy_dir(settings) / "upstream.json"


def _proxy_url(settings: Settings) -> str:
    return f"http://{client_host(settings.serving.host)}:{settings.serving.port}"


def _running(backend: Backend) -> bool:
    """Whether the server's arbiter runs (its workers alone are a server nobody supervises)."""
    return processes.is_ours(backend.pid, backend.started)


def _stop_backend(backend: Backend) -> None:
    """Stop a model server's whole tree: the arbiter's group, its workers now, and the recorded ones."""
    processes.stop_tree(backend.pid, backend.started, backend.family)


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


def _now() -> str:
    return datetime.now(UTC).isoformat()
