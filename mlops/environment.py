"""Point every tool at the project's state folder, with telemetry off.

The tools read their locations from environment variables, some at import time,
so :func:`tool_environment` must be entered before mlflow, prefect or bentoml are
imported. Nothing here runs at import: the CLI (or a test) enters the context.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from urllib.parse import urlsplit

from mlops.config import Settings
from mlops.errors import MlopsError, ServiceUnavailable
from mlops.processes import connection_problem

__all__ = [
    "TELEMETRY_OFF",
    "bind_tools",
    "check_services",
    "one_shot_flow_runs",
    "redact",
    "redact_logs",
    "tool_environment",
    "tool_variables",
    "tracking_faults",
    "tracking_unavailable",
]

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
    # MLflow's own stderr handler and format ("2026/12/02 05:49:11 INFO mlflow…"): its lines go
    # to the root logger instead, where a command's handler (mlops.logs) formats them.
    "MLFLOW_CONFIGURE_LOGGING": "false",
    "GIT_PYTHON_REFRESH": "quiet",
    "TQDM_DISABLE": "1",
    # MLflow prints "View run ... at <tracking URI>" on every run end: the URI may hold a password.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    # A tracking server that stops answering: a few retries over seconds, then a clean error
    # (exit 4), not MLflow's 7 retries with a 2x backoff and 120 s timeouts (an 8-minute hang).
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
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
    variables |= _run_log_variables()
    _remember_secrets(settings)
    return variables


# The library's loggers (``mlops.*``), shipped by Prefect to the run they log in.
_LIBRARY_LOGGER = "mlops"


def _run_log_variables() -> dict[str, str]:
    """Prefect's logging settings that put every run's lines in its UI while the console stays quiet.

    Why: ``PREFECT_LOGGING_LEVEL=WARNING`` (a quiet console) also held back the INFO lines of
    the run loggers from the API, so every run showed "This run didn't generate logs". The run
    loggers and the library's loggers now send INFO to the API; the console handler keeps the
    console's level. A user's own values win; their extra loggers are kept beside ours.
    """
    extra = [name for name in os.environ.get("PREFECT_LOGGING_EXTRA_LOGGERS", "").split(",") if name.strip()]
    console = os.environ.get("PREFECT_LOGGING_LEVEL", _DEFAULTS["PREFECT_LOGGING_LEVEL"])
    defaults = {
        "PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL": "INFO",
        "PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL": "INFO",
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": console,
        # The library also logs outside runs (serving, the CLI): those lines just stay local.
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    }
    variables = {name: os.environ.get(name, value) for name, value in defaults.items()}
    variables["PREFECT_LOGGING_EXTRA_LOGGERS"] = ",".join(dict.fromkeys([*extra, _LIBRARY_LOGGER]))
    return variables


def _send_run_logs() -> dict[str, int]:
    """The ``mlops`` logger at INFO, its lines sent to the Prefect run they are logged in; the levels it replaced.

    Prefect attaches its API handler to the extra loggers, and sets the run loggers' levels,
    when it is imported (after :func:`tool_variables`); a process that imported Prefect
    earlier (a test session, a notebook) gets the same here.
    """
    names = [_LIBRARY_LOGGER]
    configured = "prefect.logging.configuration" in sys.modules
    if configured:
        names += ["prefect.flow_runs", "prefect.task_runs"]
        library, extra = logging.getLogger(_LIBRARY_LOGGER), logging.getLogger("prefect.extra")
        for handler in extra.handlers:
            if not any(type(own) is type(handler) for own in library.handlers):
                library.addHandler(handler)
    replaced = {name: logging.getLogger(name).level for name in names}
    for name, level in replaced.items():
        if level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.INFO)
    return replaced


# --- Secrets: never printed -------------------------------------------------------------

# user:password@ (or token@) in any URL.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^\s/@:]+(?::[^\s/@]*)?@")
_SECRETS: set[str] = set()  # the values of this process's secrets, longest first when masked
_MASK = "***"


def redact(text: str) -> str:
    """``text`` with URL credentials and every known secret (API key, webhook URL, tracking URI) masked.

    The one place secrets are masked: log records (:func:`redact_logs`) and the CLI's messages
    pass through it. ``redact("http://me:pw@host:5000/x")`` is ``"http://***@host:5000/x"``.
    """
    text = _URL_CREDENTIALS.sub(lambda match: match.group("scheme") + _MASK + "@", text)
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, _MASK)
    return text


def _remember_secrets(settings: Settings) -> None:
    """The secret values ``settings`` names: the API key's value, the webhook URL, URL credentials."""
    values = [os.environ.get(settings.serving.api_key_env, "")]
    if settings.alerts.webhook_url is not None:
        url = settings.alerts.webhook_url.get_secret_value()
        parts = urlsplit(url)
        # A webhook's token is a long part of its path or query (chat incoming-webhooks); the host is not secret.
        values += [url, *(part for part in re.split(r"[/?&=]", f"{parts.path}?{parts.query}") if len(part) >= 12)]
    for uri in (settings.mlflow_tracking_uri, settings.prefect_api_url or ""):
        parts = urlsplit(uri)
        values += [parts.password or "", f"{parts.username}:{parts.password}" if parts.password else ""]
    _SECRETS.update(value for value in values if len(value) >= 4)


_record_factory = logging.getLogRecordFactory()


def _redacted_record(*args: object, **kwargs: object) -> logging.LogRecord:
    record = _record_factory(*args, **kwargs)
    try:
        message = record.getMessage()
    except Exception:  # a malformed record: let the handler report it as logging does
        return record
    cleaned = redact(message)
    if cleaned != message:
        record.msg, record.args = cleaned, None
    if record.exc_info and isinstance(record.exc_info[1], MlopsError):
        record.exc_info = None  # an error the user can fix: its message names the fix, no traceback
    if record.exc_info and record.exc_info[1] is not None:
        formatted = logging.Formatter().formatException(record.exc_info)
        record.exc_text = redact(formatted)
    return record


def redact_logs() -> None:
    """Mask secrets in every log record of this process, whichever library logs it (MLflow, httpx, Prefect).

    A record factory rather than a handler filter: the tools add their handlers later, and
    Prefect ships records to its API (and database) from its own handler. httpx's per-request
    INFO line (the full URL) is turned down to warnings.
    """
    if logging.getLogRecordFactory() is not _redacted_record:
        logging.setLogRecordFactory(_redacted_record)
    logging.getLogger("httpx").setLevel(logging.WARNING)


@contextmanager
def tool_environment(settings: Settings) -> Iterator[dict[str, str]]:
    """Set :func:`tool_variables` for the duration of the block, then restore."""
    variables = tool_variables(settings)
    redact_logs()
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    levels = _send_run_logs()
    try:
        with _prefect_settings_read_again(variables["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"]):
            yield variables
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _prefect_settings_read_again(when_missing_flow: str) -> Iterator[None]:
    """Prefect, imported before the block, reads the logging settings of :func:`tool_variables` too."""
    if "prefect.settings" not in sys.modules:
        yield
        return
    from prefect.settings import temporary_settings

    with temporary_settings(updates={"logging.to_api.when_missing_flow": when_missing_flow}):  # type: ignore[dict-item]
        yield


def bind_tools(settings: Settings) -> None:
    """Bind the tools to ``settings`` for the rest of the process (scripts, notebooks: :func:`mlops.load_settings`).

    Tools already imported are told too: MLflow's tracking and registry URIs, Prefect's
    settings (re-read from the environment). BentoML reads its home once, at import.
    """
    variables = tool_variables(settings)
    redact_logs()
    os.environ.update(variables)
    _send_run_logs()
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
    parts = urlsplit(tracking)
    if settings.tracking_uri is not None and parts.scheme.split("+")[0] in ("postgresql", "mysql", "mssql") and parts.hostname:
        _probe_database(parts.scheme.split("+")[0], parts.hostname, parts.port or _DATABASE_PORTS[parts.scheme.split("+")[0]], timeout)


_DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


def _probe_database(kind: str, host: str, port: int, timeout: float) -> None:
    """A database tracking store that accepts no connection: the same one message and exit 4 as a server."""
    problem = connection_problem(host, port, timeout)
    if problem is not None:
        raise ServiceUnavailable(
            f"The {kind} tracking database at {host}:{port} does not answer ({problem}). "
            "Start it (`mlops stack up` runs one), or fix or remove 'tracking_uri' in the config (MLOPS_TRACKING_URI)."
        )


# MLflow's words for a request that got no answer (after its retries), or a 5xx one.
_NO_ANSWER = re.compile(r"API request to \S+ failed with (?:timeout )?exception|failed with error code 5\d\d")


def tracking_unavailable(exc: BaseException, settings: Settings) -> ServiceUnavailable | None:
    """The clean error for ``exc`` when it says the MLflow tracking server stopped answering, else None.

    MLflow retries each request (``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and ``_BACKOFF_FACTOR``,
    set by :func:`tool_variables`), then raises an ``MlflowException`` quoting the URL: this
    names the server without its credentials and says what to do.
    """
    if isinstance(exc, ServiceUnavailable):
        return exc
    names = {type(error).__name__ for error in _chain(exc)}
    message = " ".join(str(error) for error in _chain(exc))
    if not (_NO_ANSWER.search(message) or names & {"ConnectionError", "MaxRetryError", "ConnectTimeout", "ReadTimeout"}):
        return None

    parts = urlsplit(settings.mlflow_tracking_uri)
    where = f"{parts.scheme}://{parts.hostname}:{parts.port or ''}" if parts.hostname else "the tracking store"
    retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", _DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
    return ServiceUnavailable(
        f"The MLflow tracking server at {where} stopped answering (after {retries} retries). Start it again "
        "(or fix 'tracking_uri', MLOPS_TRACKING_URI) and rerun the command; a version it left half-registered is "
        "marked incomplete and cleaned by `mlops doctor` or the next `mlops train`."
    )


@contextmanager
def tracking_faults(settings: Settings) -> Iterator[None]:
    """Raise :class:`ServiceUnavailable` (exit 4, no traceback) when MLflow's server stops answering in the block."""
    try:
        yield
    except MlopsError:
        raise
    except Exception as exc:
        unavailable = tracking_unavailable(exc, settings)
        if unavailable is None:
            raise
        raise unavailable from None


def _chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    while exc is not None and exc not in chain and len(chain) < 10:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return chain


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
