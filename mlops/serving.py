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
from the server log (:func:`startup_error`). The server is a process tree (BentoML's arbiter plus its
workers, each in a session of its own), started and stopped as one by :mod:`mlops.processes`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bentoml
import mlflow.artifacts
import mlflow.models
import mlflow.sklearn
from bentoml.exceptions import BentoMLException, NotFound
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.base import is_classifier

from mlops import processes
from mlops.config import Settings
from mlops.environment import tool_variables
from mlops.errors import RegistryError, ServingError
from mlops.project import entry_point
from mlops.request_check import request_check
from mlops.service.settings import service_settings

if TYPE_CHECKING:
    from mlops.request_check import RequestCheck

__all__ = [
    "ServedModel",
    "ServerProcess",
    "discard_model",
    "files_sha256",
    "free_port",
    "import_model",
    "load_served_model",
    "remove_server_home",
    "resolve_alias",
    "start_server",
    "stale_metrics_dirs",
    "startup_error",
    "store_home",
    "wait_until_ready",
]

_LOG_TAIL_LINES = 20
# uvicorn's message when the service's __init__ raised.
_STARTUP_FAILED = "Application startup failed"


def resolve_alias(model_name: str, alias: str) -> str:
    """Return the version of ``model_name`` that ``alias`` points at, e.g. ``"3"``."""
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


# The sha256 of the MLflow artifact's files, recorded on the BentoML model when it is imported.
CHECKSUM_LABEL = "mlflow_sha256"
_MLFLOW_MODEL_FOLDER = "mlflow_model"  # where bentoml.mlflow keeps the artifact inside a BentoML model
# Written by MLflow's models:/ download beside the artifact's files (the name and version), not one of them.
_NOT_ARTIFACT = {"registered_model_meta"}


def import_model(model_name: str, version: str) -> str:
    """Copy ``models:/{model_name}/{version}`` into the BentoML store as
    ``{model_name}:v{version}-{run id prefix}``, verified against the MLflow artifact.

    The run id in the tag keeps versions of two registries apart when one process
    imports from both (tests, notebooks). Labels record where it came from:
    ``mlflow_model``, ``mlflow_version``, ``mlflow_run_id`` and ``mlflow_sha256``, the
    checksum of the artifact's files. A stored model is reused only while both its label
    and its own files match the artifact as it is now; otherwise (the artifact was
    repaired or replaced, the stored copy damaged) it is deleted and imported again. An
    import that fails leaves nothing in the store. Returns the tag.
    """
    run_id = _run_id(model_name, version)
    tag = f"{model_name}:v{version}-{run_id[:8]}" if run_id else f"{model_name}:v{version}"
    uri = f"models:/{model_name}/{version}"
    with tempfile.TemporaryDirectory(prefix="mlops-import-") as folder:
        artifact = _download_model(uri, Path(folder))
        digest = files_sha256(artifact)
        try:
            stored = bentoml.models.get(tag)
        except NotFound:
            stored = None
        if stored is not None and _verified(stored, digest):
            return str(stored.tag)
        discard_model(tag)  # stale or damaged: a fresh copy replaces it
        labels = {"mlflow_model": model_name, "mlflow_version": str(version), "mlflow_run_id": run_id, CHECKSUM_LABEL: digest}
        try:
            bento_model = bentoml.mlflow.import_model(tag, str(artifact), labels=labels, metadata={"mlflow_model_uri": uri})
        except Exception as exc:  # an artifact BentoML cannot read (no MLmodel, a broken one, ...)
            discard_model(tag)
            raise ServingError(
                f"Version {version} of {model_name!r} cannot be imported into the BentoML store "
                f"({type(exc).__name__}: {exc}). Repair its artifact in the MLflow store, or train again."
            ) from None
    if not _verified(bento_model, digest):
        discard_model(tag)
        raise ServingError(f"The BentoML copy of {uri} does not match the artifact's checksum; nothing was kept. Try again.")
    return str(bento_model.tag)


def discard_model(tag: str) -> bool:
    """Delete ``tag`` from the BentoML store (a rejected or corrupt import); False when it was not there."""
    try:
        bentoml.models.delete(tag)
    except NotFound:
        return False
    return True


def files_sha256(folder: Path) -> str:
    """One sha256 over the model files under ``folder``: relative paths and contents, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(item for item in folder.rglob("*") if item.is_file() and item.name not in _NOT_ARTIFACT):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def _verified(bento_model: bentoml.Model, digest: str) -> bool:
    """The stored model was imported from this artifact (its label) and its files are still that artifact."""
    if bento_model.info.labels.get(CHECKSUM_LABEL) != digest:
        return False
    return files_sha256(Path(bento_model.path_of(_MLFLOW_MODEL_FOLDER))) == digest


def _download_model(uri: str, folder: Path) -> Path:
    """The registered model's files, downloaded to ``folder``; a missing artifact is a :class:`RegistryError`."""
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(folder)))
    except (MlflowException, OSError) as exc:
        raise RegistryError(
            f"The artifact of {uri} cannot be read from the MLflow store ({type(exc).__name__}: {exc}). "
            "Restore it, or train again."
        ) from None


def store_home(tag: str, settings: Settings) -> str:
    """The BentoML home whose store holds ``tag`` (default: the settings' own).

    BentoML fixes its home once per process, at first use, so a process that served
    another state folder before imported the model there; the server must look there.
    """
    try:
        return str(Path(bentoml.models.get(tag).path).parents[2])
    except BentoMLException:
        return str(settings.bentoml_home)


_SERVERS_DIR = "servers"
_PROMETHEUS_DIR = "prometheus_multiproc_dir"  # BentoML's name, under its home
_PROMETHEUS_FILE = re.compile(r"_(\d+)\.db$")  # prometheus_client's files: <kind>_<pid>.db


def _server_home(settings: Settings, tag: str, port: int | None) -> Path:
    """A BentoML home of the server's own: the store's models (a link) and a Prometheus folder no one else clears.

    BentoML empties ``$BENTOML_HOME/prometheus_multiproc_dir`` whenever a server starts, so
    servers sharing a home zero each other's ``/metrics`` counters for good. Each server gets
    ``<bentoml home>/servers/<port>``, made fresh here and removed when it stops (after a
    kill: by the next start, or ``mlops doctor``, see :func:`stale_metrics_dirs`).
    """
    stale_metrics_dirs(settings, remove=True)
    home = settings.bentoml_home / _SERVERS_DIR / str(port or os.getpid())
    shutil.rmtree(home, ignore_errors=True)  # a server stopped on this port: the port was free
    home.mkdir(parents=True)
    models = Path(store_home(tag, settings)) / "models"
    models.mkdir(parents=True, exist_ok=True)  # a dangling link would stop BentoML before it can say the model is missing
    (home / "models").symlink_to(models, target_is_directory=True)
    return home


def remove_server_home(bentoml_home: Path, port: int) -> None:
    """Remove a stopped server's own home (:func:`_server_home`): its metrics die with it."""
    shutil.rmtree(Path(bentoml_home) / _SERVERS_DIR / str(port), ignore_errors=True)


def stale_metrics_dirs(settings: Settings, *, remove: bool) -> list[Path]:
    """Servers' own homes whose processes are all gone (a killed server); removed when ``remove``.

    A home is in use while any process that wrote its Prometheus files runs, or while it is
    younger than the start-up timeout (a server still starting has written none yet).
    """
    root = settings.bentoml_home / _SERVERS_DIR
    grace = settings.serving.startup_timeout_seconds + 30
    stale = []
    for home in sorted(root.iterdir()) if root.is_dir() else []:
        files = (home / _PROMETHEUS_DIR).glob("*.db")
        pids = {int(match.group(1)) for path in files if (match := _PROMETHEUS_FILE.search(path.name))}
        try:
            young = time.time() - home.stat().st_mtime < grace
        except FileNotFoundError:
            continue
        if any(processes.is_ours(pid, None) for pid in pids) or (young and not pids):
            continue
        stale.append(home)
        if remove:
            shutil.rmtree(home, ignore_errors=True)
    return stale


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
    """A running ``bentoml serve``; stop it with :meth:`stop` or a ``with`` block.

    ``started`` is the arbiter's start time and ``family`` its workers when it became
    ready (:mod:`mlops.processes`): workers run in sessions of their own and outlive an
    arbiter killed with SIGKILL, so they are stopped by their recorded pids too.
    """

    url: str
    port: int
    process: subprocess.Popen[bytes]
    model_tag: str
    log_path: Path
    started: str | None = None
    family: list[processes.Member] = field(default_factory=list)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the whole tree, wait up to ``timeout``, then SIGKILL what is left of it."""
        family = [*self.family, *processes.descendants(self.process.pid)]
        processes.stop_tree(self.process.pid, self.started, family, timeout=timeout)
        self.process.wait()
        remove_server_home(self.log_path.parents[1] / "bentoml", self.port)

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

    service = entry_point(settings, "service")  # the project's service file, imported from its folder
    command = [sys.executable, "-m", "bentoml", "serve", service.import_string, "--host", host, "--port", str(port)]
    if nice:
        command = ["nice", "-n", str(nice), *command]  # set before exec: every worker inherits it
    command += ["--working-dir", str(service.root)]
    process = processes.start(command, log_path=log_path, env=_server_env(settings, tag, predictions_dir, port), cwd=service.root)
    url = f"http://{client_host(host)}:{port}"
    server = ServerProcess(url, port, process, tag, log_path, processes.process_start(process.pid))
    try:
        wait_until_ready(server.url, settings.serving.startup_timeout_seconds, process=process, log_path=log_path)
        server.family = processes.descendants(process.pid)
    except ServingError as exc:
        server.stop()
        if isinstance(exc, _StartupFailed):  # the reason is in the message: the log has the details
            discard_model(tag)  # the service refused this import: the next one starts from the artifact again
            raise ServingError(f"{exc} Server log: {log_path}") from None
        raise ServingError(f"{exc} Server log {log_path}:\n{_tail(log_path)}") from None
    except BaseException:  # Ctrl-C or SIGTERM during the wait: nothing of it may be left serving
        with processes.interrupts_deferred():
            server.stop()
        raise
    return server


def _server_env(
    settings: Settings, tag: str, predictions_dir: Path | None = None, port: int | None = None
) -> dict[str, str]:
    """The server's environment: the tools' variables, its own BentoML home and its settings in one variable."""
    return {
        **os.environ,
        **tool_variables(settings),
        "BENTOML_HOME": str(_server_home(settings, tag, port)),
        **service_settings(settings, tag, predictions_dir).as_environment(),
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

    def ready() -> bool:
        if log_path is not None:
            log = log_path.read_text(encoding="utf-8", errors="replace")
            if _STARTUP_FAILED in log:
                raise _StartupFailed(f"The service at {url} failed to start: {startup_error(log) or 'see the server log'}")
        return processes.answers(f"{url}/readyz")

    if processes.wait_healthy(ready, process, timeout):
        return
    if process is not None and process.poll() is not None:
        raise ServingError(f"The server at {url} exited with code {process.returncode} before it was ready.")
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


def client_host(host: str) -> str:
    """The address a client on this machine reaches a server bound to ``host`` at (loopback for the wildcards)."""
    # The wildcards are compared here, never bound.
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104  # nosec B104


def _tail(path: Path) -> str:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(lines[-_LOG_TAIL_LINES:])
