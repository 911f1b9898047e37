"""Serve a registered MLflow model over HTTP with BentoML.

Three steps, each usable alone: find the version behind an alias, copy that version
into the BentoML model store, and run the project's service (``project.service``, default
``models/service.py``) in a subprocess::

    with tool_environment(settings):
        version = resolve_alias(settings.model.name, settings.serving.alias)
        tag = import_model(settings.model.name, version)
        with start_server(settings, tag, port=free_port()) as server:
            httpx.post(f"{server.url}/predict", json={"records": [...]})

The service loads the model with :func:`load_served_model`, which refuses at start-up
what it could not serve (no signature, a contract that does not fit it, a classifier
without ``predict_proba``, ...) and builds the model's one request check
(:mod:`mlops.request_check`); :func:`start_server` then fails with that reason, read
from the server log (:func:`startup_error`). The server is a process group (BentoML's
arbiter plus its workers), so it stops as one.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.config import Settings
from mlops.environment import tool_variables
from mlops.errors import RegistryError, ServingError

if TYPE_CHECKING:
    from mlops.request_check import RequestCheck

__all__ = [
    "ServedModel",
    "ServerProcess",
    "free_port",
    "import_model",
    "load_served_model",
    "resolve_alias",
    "start_server",
    "startup_error",
    "wait_until_ready",
]

_LOG_TAIL_LINES = 20
# uvicorn's message when the service's __init__ raised.
_STARTUP_FAILED = "Application startup failed"


def resolve_alias(model_name: str, alias: str) -> str:
    """Return the version of ``model_name`` that ``alias`` points at, e.g. ``"3"``."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, alias).version)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(f"Model {model_name!r} is not registered. Run `mlops train` first.") from None
        if exc.error_code == "INVALID_PARAMETER_VALUE":
            raise RegistryError(
                f"No version of model {model_name!r} has alias {alias!r}. Run `mlops train` first."
            ) from None
        raise


def import_model(model_name: str, version: str) -> str:
    """Copy ``models:/{model_name}/{version}`` into the BentoML store as
    ``{model_name}:v{version}-{run id prefix}``.

    The run id in the tag keeps versions of two registries apart when one process
    imports from both (tests, notebooks). Reuses the stored model when the tag exists.
    Labels record where it came from: ``mlflow_model``, ``mlflow_version`` and
    ``mlflow_run_id``. Returns the tag.
    """
    import bentoml
    from bentoml.exceptions import NotFound

    run_id = _run_id(model_name, version)
    tag = f"{model_name}:v{version}-{run_id[:8]}" if run_id else f"{model_name}:v{version}"
    try:
        return str(bentoml.models.get(tag).tag)
    except NotFound:
        pass
    labels = {"mlflow_model": model_name, "mlflow_version": str(version), "mlflow_run_id": run_id}
    uri = f"models:/{model_name}/{version}"
    bento_model = bentoml.mlflow.import_model(tag, uri, labels=labels, metadata={"mlflow_model_uri": uri})
    return str(bento_model.tag)


def _store_home(tag: str, settings: Settings) -> str:
    """The BentoML home whose store holds ``tag`` (default: the settings' own).

    BentoML fixes its home once per process, at first use, so a process that served
    another state folder before imported the model there; the server must look there.
    """
    import bentoml
    from bentoml.exceptions import BentoMLException

    try:
        return str(Path(bentoml.models.get(tag).path).parents[2])
    except BentoMLException:
        return str(settings.bentoml_home)


@dataclass(frozen=True)
class ServedModel:
    """What the service needs of one model version, checked before it answers anything.

    ``classes`` are the class labels in the order of ``predict_proba``'s columns (None
    for a regressor).
    """

    model: Any
    check: RequestCheck
    task: str
    classes: tuple[Any, ...] | None


def load_served_model(model_dir: str | Path, contract_path: str | Path | None = None) -> ServedModel:
    """Load the MLflow model in ``model_dir`` and its request check, or refuse it with a :class:`ServingError`.

    Refused here, at start-up, rather than answered 500 later: no signature, a contract
    that does not fit the signature, a model that does not load as scikit-learn, a
    classifier without ``predict_proba``, a model whose task contradicts the contract,
    and a model that cannot score its own logged input example.
    """
    import mlflow.sklearn
    from sklearn.base import is_classifier

    from mlops.request_check import request_check

    check = request_check(model_dir, contract_path)
    try:
        model = mlflow.sklearn.load_model(str(model_dir))
    except Exception as exc:  # an MLflow model without the sklearn flavour, a broken file, ...
        raise ServingError(
            f"The model at {model_dir} cannot be loaded as a scikit-learn model ({type(exc).__name__}: {exc}). "
            "Serve a model logged with mlflow.sklearn (as `mlops train` does)."
        ) from None
    classifier = is_classifier(model) or hasattr(model, "classes_")
    task = check.task or ("classification" if classifier else "regression")
    name = type(model).__name__
    if task == "classification" and not classifier:
        raise ServingError(f"The data contract says classification, but the model ({name}) is not a classifier. {_RETRAIN}")
    if task == "regression" and classifier:
        raise ServingError(f"The data contract says regression, but the model ({name}) is a classifier. {_RETRAIN}")
    if task == "classification" and not hasattr(model, "predict_proba"):
        raise ServingError(
            f"The classifier ({name}) has no predict_proba; serving answers class probabilities. "
            "Use an estimator with probability estimates (e.g. SVC(probability=True)) and train again."
        )
    served = ServedModel(model, check, task, tuple(model.classes_) if task == "classification" else None)
    _score_example(served, model_dir)
    return served


_RETRAIN = "Train again with `mlops train` (the contract decides the task), or serve another version."


def _score_example(served: ServedModel, model_dir: str | Path) -> None:
    """Score the input example logged with the model, so a model that cannot score fails now."""
    import mlflow.models

    try:
        example = mlflow.models.Model.load(str(model_dir)).load_input_example(str(model_dir))
        frame = None if example is None else served.check.frame(example).frame
    except Exception:  # an example the contract now refuses, or one MLflow cannot read: nothing to try
        frame = None
    if frame is None:
        return
    scorer = served.model.predict_proba if served.task == "classification" else served.model.predict
    try:
        scorer(frame)
    except Exception as exc:
        raise ServingError(
            f"The model at {model_dir} cannot score its own input example ({type(exc).__name__}: {exc}). "
            "Its preprocessing does not match its signature; train it again with `mlops train`."
        ) from None


def _run_id(model_name: str, version: str) -> str:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient().get_model_version(model_name, str(version)).run_id or ""
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(
                f"Model {model_name!r} has no version {version}. List versions with `mlflow models` or train one."
            ) from None
        raise


@dataclass
class ServerProcess:
    """A running ``bentoml serve``; stop it with :meth:`stop` or a ``with`` block."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    model_tag: str
    log_path: Path

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, wait up to ``timeout``, then SIGKILL what is left."""
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Workers can outlive the arbiter; the group outlives neither.
        _signal_group(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_server(
    settings: Settings,
    tag: str,
    *,
    port: int | None = None,
    host: str | None = None,
    predictions_dir: Path | None = None,
    nice: int = 0,
) -> ServerProcess:
    """Start the prediction service for BentoML model ``tag`` and wait until it is ready.

    ``predictions_dir`` logs its predictions elsewhere than ``settings.predictions_dir``
    and ``nice`` lowers its CPU priority (the process group inherits it): a shadow
    version (:func:`mlops.deployment.deploy_shadow`) must neither mix its answers into
    the champion's log nor take the champion's cores.

    Raises :class:`ServingError` with the end of the server log if it exits or is not
    ready within ``settings.serving.startup_timeout_seconds``.
    """
    host = host or settings.serving.host
    port = port or settings.serving.port
    log_path = settings.state_dir / "logs" / f"serve-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    from mlops.project import entry_point

    service = entry_point(settings, "service")  # the project's service file, imported from its folder
    command = [sys.executable, "-m", "bentoml", "serve", service.import_string, "--host", host, "--port", str(port)]
    if nice:
        command = ["nice", "-n", str(nice), *command]  # set before exec: every worker inherits it
    command += ["--working-dir", str(service.root)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=service.root,
            env=_server_env(settings, tag, predictions_dir),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = ServerProcess(f"http://{_client_host(host)}:{port}", port, process, tag, log_path)
    try:
        wait_until_ready(server.url, settings.serving.startup_timeout_seconds, process=process, log_path=log_path)
    except ServingError as exc:
        server.stop()
        if isinstance(exc, _StartupFailed):  # the reason is in the message: the log has the details
            raise ServingError(f"{exc} Server log: {log_path}") from None
        raise ServingError(f"{exc} Server log {log_path}:\n{_tail(log_path)}") from None
    return server


def _server_env(settings: Settings, tag: str, predictions_dir: Path | None = None) -> dict[str, str]:
    return {
        **os.environ,
        **tool_variables(settings),
        "MLOPS_BENTO_MODEL": tag,
        "MLOPS_PREDICTIONS_DIR": str(predictions_dir or settings.predictions_dir),
        "MLOPS_LABELS_DIR": str(settings.labels_dir),
        "MLOPS_CONTRACT": str(settings.data.contract),
        "BENTOML_HOME": _store_home(tag, settings),
        "MLOPS_API_KEY_ENV": settings.serving.api_key_env,
        "MLOPS_MAX_REQUEST_BYTES": str(settings.serving.max_request_bytes),
        "MLOPS_BATCH_MAX_SIZE": str(settings.serving.batch_max_size),
        "MLOPS_BATCH_MAX_LATENCY_MS": str(settings.serving.batch_max_latency_ms),
        "MLOPS_ACCESS_LOG": "true" if settings.serving.access_log else "false",
    }


def wait_until_ready(
    url: str,
    timeout: float,
    *,
    process: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> None:
    """Poll ``{url}/readyz`` until it answers 200.

    Raises :class:`ServingError` on timeout, when ``process`` exits, or when ``log_path``
    shows the service failed to start (BentoML respawns a failing worker forever); then
    the message carries the reason the log gives (the exception the service raised).
    """
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServingError(f"The server at {url} exited with code {process.returncode} before it was ready.")
        if log_path is not None:
            log = log_path.read_text(encoding="utf-8", errors="replace")
            if _STARTUP_FAILED in log:
                reason = startup_error(log) or "see the server log"
                raise _StartupFailed(f"The service at {url} failed to start: {reason}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise ServingError(f"The server at {url} was not ready after {timeout:g} s; raise serving.startup_timeout_seconds.")


class _StartupFailed(ServingError):
    """The service raised while starting; the message says why."""


# The last line of a Python traceback: ``package.module.SomeError: message``.
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*(\w*(?:Error|Exception|NotFound|Refused))(?::\s?(.*))?$")


def startup_error(log: str) -> str | None:
    """Why the service did not start: the last exception line before uvicorn gave up, if any.

    Our own :class:`ServingError` is given as its message alone (it names the fix);
    another exception keeps its class name, e.g. ``NotFound: no Models with name ...``.
    """
    lines = log[: log.find(_STARTUP_FAILED)].splitlines() if _STARTUP_FAILED in log else log.splitlines()
    for line in reversed(lines):
        match = _EXCEPTION_LINE.match(line.strip())
        if match:
            name, message = match.group(1), (match.group(2) or "").strip()
            return message if name == "ServingError" and message else f"{name}: {message}".rstrip(": ")
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass


def _tail(path: Path) -> str:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(lines[-_LOG_TAIL_LINES:])
