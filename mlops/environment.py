"""Point every tool at the project's state folder, with telemetry off.

The tools read their locations from environment variables, some at import time,
so :func:`tool_environment` must be entered before mlflow, prefect or bentoml are
imported. Nothing here runs at import: the CLI (or a test) enters the context.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from mlops.config import Settings
from mlops.errors import ServiceUnavailable

__all__ = ["TELEMETRY_OFF", "bind_tools", "check_services", "one_shot_flow_runs", "tool_environment", "tool_variables"]

# Each tool's own switch; DO_NOT_TRACK also covers Evidently.
TELEMETRY_OFF: Mapping[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "BENTOML_DO_NOT_TRACK": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}

# Quiet defaults a user may still override in their own environment.
_DEFAULTS: Mapping[str, str] = {
    # The ephemeral server takes ~15 s to start on 2 cores, close to the 20 s default.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "GIT_PYTHON_REFRESH": "quiet",
    "TQDM_DISABLE": "1",
}

# Prefect's names for the run heartbeat interval (the second is its legacy alias).
_HEARTBEAT_VARIABLES = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")


def tool_variables(settings: Settings) -> dict[str, str]:
    """The environment variables that bind each tool to ``settings``."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    variables = {
        **TELEMETRY_OFF,
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "MLFLOW_REGISTRY_URI": settings.mlflow_tracking_uri,
        "PREFECT_HOME": str(settings.prefect_home),
        "BENTOML_HOME": str(settings.bentoml_home),
        "MLOPS_STATE_DIR": str(settings.state_dir),
    }
    if settings.prefect_api_url:
        variables["PREFECT_API_URL"] = settings.prefect_api_url
    for name, value in _DEFAULTS.items():
        variables[name] = os.environ.get(name, value)
    return variables


@contextmanager
def tool_environment(settings: Settings) -> Iterator[dict[str, str]]:
    """Set :func:`tool_variables` for the duration of the block, then restore."""
    variables = tool_variables(settings)
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield variables
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def bind_tools(settings: Settings) -> None:
    """Bind the tools to ``settings`` for the rest of the process (scripts, notebooks: :func:`mlops.load_settings`).

    Tools already imported are told too: MLflow's tracking and registry URIs, Prefect's
    settings (re-read from the environment). BentoML reads its home once, at import.
    """
    import sys

    variables = tool_variables(settings)
    os.environ.update(variables)
    if "mlflow" in sys.modules:
        import mlflow

        mlflow.set_tracking_uri(variables["MLFLOW_TRACKING_URI"])
        mlflow.set_registry_uri(variables["MLFLOW_REGISTRY_URI"])
    if "prefect.context" in sys.modules:
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()


@contextmanager
def one_shot_flow_runs() -> Iterator[None]:
    """Flow runs the current process starts itself skip Prefect's run heartbeats.

    Why: Prefect 3.9 joins the heartbeat thread when a flow run ends, and that thread
    sleeps in 1-second steps, so each flow run's wall time is rounded up to the next
    whole second (the bundled training flow: ~2.05 s instead of ~1.05 s, see
    ``benchmarks/orchestration_overhead.py``). Heartbeats only let a server mark a run
    crashed when the process running it dies unseen; a CLI command runs its flow in
    the foreground and reports the outcome itself. Scheduled runs (``mlops schedule``)
    keep Prefect's default, and ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` set by the user
    (e.g. for a zombie-run automation) is respected. Enter after :func:`tool_environment`.
    """
    if any(name in os.environ for name in _HEARTBEAT_VARIABLES):
        yield
        return
    from prefect.settings import temporary_settings

    with temporary_settings(updates={"flows.heartbeat_frequency": None}):
        yield


def check_services(settings: Settings, timeout: float = 5.0) -> None:
    """Fail fast, with the fix, when a configured MLflow or Prefect server does not answer.

    The embedded defaults (SQLite, ephemeral Prefect) need no check.
    """
    checks = []
    tracking = settings.mlflow_tracking_uri
    if settings.tracking_uri is not None and tracking.startswith(("http://", "https://")):
        checks.append(("MLflow tracking server", tracking.rstrip("/") + "/health", "tracking_uri"))
    if settings.prefect_api_url:
        checks.append(("Prefect server", settings.prefect_api_url.rstrip("/") + "/health", "prefect_api_url"))
    for name, url, key in checks:
        _probe(name, url, key, timeout)


def _probe(name: str, url: str, key: str, timeout: float) -> None:
    import httpx

    try:
        status = httpx.get(url, timeout=timeout).status_code
    except httpx.HTTPError as exc:
        problem = f"does not answer ({type(exc).__name__})"
    else:
        if status < 400:
            return
        problem = f"answered HTTP {status}"
    address = httpx.URL(url)  # scheme, host and port only: the URL may carry credentials
    raise ServiceUnavailable(
        f"The {name} at {address.scheme}://{address.host}:{address.port or ''} {problem}. Start it, or fix or remove '{key}' "
        f"in the config (MLOPS_{key.upper()}) to use the embedded default."
    )
