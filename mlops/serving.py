"""Serve a registered MLflow model over HTTP with BentoML.

Three steps, each usable alone: find the version behind an alias, copy that version
into the BentoML model store, and run ``models/service.py`` in a subprocess::

    with tool_environment(settings):
        version = resolve_alias(settings.model.name, settings.serving.alias)
        tag = import_model(settings.model.name, version)
        with start_server(settings, tag, port=free_port()) as server:
            httpx.post(f"{server.url}/predict", json={"records": [...]})

The server is a process group (BentoML's arbiter plus its workers), so it stops as one.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from mlops.config import Settings
from mlops.environment import tool_variables
from mlops.errors import RegistryError, ServingError

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = [
    "SERVICE",
    "ServerProcess",
    "FrameCheck",
    "frame_check",
    "free_port",
    "import_model",
    "request_schema",
    "resolve_alias",
    "start_server",
    "wait_until_ready",
]

SERVICE = "models.service:Classifier"
# The folder holding the ``models`` package, whether a checkout or site-packages.
_SERVICE_ROOT = Path(__file__).resolve().parents[1]
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


def request_schema(model_dir: str | Path, contract_path: str | Path | None = None) -> type[BaseModel]:
    """The pydantic model one request record must satisfy.

    From the data contract when one is given and names the model's inputs: types,
    block-level ranges and categories (a value out of range is a 422 naming the
    field). Otherwise from the MLflow signature: every input a required, finite
    number. Strings are refused, not coerced; unknown keys are ignored.
    """
    import mlflow.models
    from pydantic import ConfigDict, Field, create_model

    signature = mlflow.models.Model.load(str(model_dir)).signature
    if signature is None:
        raise ServingError(f"The model at {model_dir} has no signature; log it with one (mlflow infer_signature).")
    inputs = signature.inputs.input_names()
    contract = _serving_contract(contract_path, inputs)
    if contract is not None:
        return contract.model
    number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
    fields: dict[str, Any] = {name: (number, ...) for name in inputs}
    return create_model("Record", __config__=ConfigDict(extra="ignore", frozen=True), **fields)


def request_validator(contract_path: str | Path | None, inputs: list[str]) -> Any:
    """The contract's record validator (for counting warn-level issues), or None."""
    return _serving_contract(contract_path, inputs)


@dataclass(frozen=True)
class FrameCheck:
    """Accept a request's records in one vectorised pass, or leave them to the schema.

    Accepts only what the per-record schema (:func:`request_schema`) accepts too: every
    feature present in every record as a finite number (an int where the contract says
    int), inside its block-level range. Anything else (a string, a bool, a null, a value
    out of range, a category feature) returns None, and the per-record schema decides
    and names the field. So a 10,000-row request costs a few array operations, not
    10,000 model validations, and error messages stay the schema's.
    """

    features: tuple[str, ...]
    integer: tuple[bool, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    warn_low: tuple[float, ...]
    warn_high: tuple[float, ...]
    usable: bool = True

    def accept(self, records: list[dict[str, Any]]) -> Any:
        """The records as a frame of the features (model column order), or None."""
        import numpy as np
        import pandas as pd

        if not self.usable or not records:
            return None
        frame = pd.DataFrame.from_records(records, columns=list(self.features))
        for kind, integer in zip(frame.dtypes, self.integer):
            if kind.kind not in ("i", "u") and (integer or kind.kind != "f"):
                return None  # object (str, bool mixed in, None), bool, or a float for an int
        values = frame.to_numpy(dtype="float64")
        if not np.isfinite(values).all() or (values < self.low).any() or (values > self.high).any():
            return None
        return frame

    def out_of_range(self, frame: Any) -> list[str]:
        """What breaks a block-level range in a frame of the features, by feature."""
        values = frame.to_numpy(dtype="float64")
        outside = ((values < self.low) | (values > self.high)).sum(axis=0)
        return [
            f"{name}: {count} value(s) outside [{low}, {high}]"
            for name, count, low, high in zip(self.features, outside, self.low, self.high)
            if count
        ]

    def warnings(self, frame: Any) -> dict[str, int]:
        """Records outside each feature's warn-level range, by feature (non-zero only)."""
        values = frame.to_numpy(dtype="float64")
        outside = ((values < self.warn_low) | (values > self.warn_high)).sum(axis=0)
        return {name: int(count) for name, count in zip(self.features, outside) if count}


def frame_check(model_dir: str | Path, contract_path: str | Path | None = None) -> FrameCheck:
    """The vectorised twin of :func:`request_schema` for the same model and contract."""
    import mlflow.models

    inputs = mlflow.models.Model.load(str(model_dir)).signature.inputs.input_names()
    validator = _serving_contract(contract_path, inputs)
    unbounded = (float("-inf"), float("inf"))
    if validator is None:
        bounds = {name: (False, unbounded, unbounded) for name in inputs}
        usable = True
    else:
        columns = {column.name: column for column in validator.contract.features}
        bounds = {name: _bounds(columns[name]) for name in inputs}
        usable = all(
            columns[name].type in ("float", "int") and columns[name].categories is None and not columns[name].nullable
            for name in inputs
        )
    return FrameCheck(
        features=tuple(inputs),
        integer=tuple(bounds[name][0] for name in inputs),
        low=tuple(bounds[name][1][0] for name in inputs),
        high=tuple(bounds[name][1][1] for name in inputs),
        warn_low=tuple(bounds[name][2][0] for name in inputs),
        warn_high=tuple(bounds[name][2][1] for name in inputs),
        usable=usable,
    )


def _bounds(column: Any) -> tuple[bool, tuple[float, float], tuple[float, float]]:
    """(is int, block range, warn range) of one contract column; unbounded where unset."""
    span = (
        float("-inf") if column.min is None else float(column.min),
        float("inf") if column.max is None else float(column.max),
    )
    unbounded = (float("-inf"), float("inf"))
    block = column.severity_of("range") == "block"
    return column.type == "int", span if block else unbounded, unbounded if block else span


def _serving_contract(contract_path: str | Path | None, inputs: list[str]) -> Any:
    if contract_path is None or not Path(contract_path).is_file():
        return None
    from mlops.contract import load_contract, record_validator

    contract = load_contract(contract_path)
    if sorted(column.name for column in contract.features) != sorted(inputs):
        return None  # a model trained under another contract: its signature decides
    return record_validator(contract, extra="ignore")


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


def start_server(settings: Settings, tag: str, *, port: int | None = None, host: str | None = None) -> ServerProcess:
    """Start the prediction service for BentoML model ``tag`` and wait until it is ready.

    Raises :class:`ServingError` with the end of the server log if it exits or is not
    ready within ``settings.serving.startup_timeout_seconds``.
    """
    host = host or settings.serving.host
    port = port or settings.serving.port
    log_path = settings.state_dir / "logs" / f"serve-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "bentoml", "serve", SERVICE, "--host", host, "--port", str(port)]
    command += ["--working-dir", str(_SERVICE_ROOT)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=_SERVICE_ROOT,
            env=_server_env(settings, tag),
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
        raise ServingError(f"{exc} Server log {log_path}:\n{_tail(log_path)}") from None
    return server


def _server_env(settings: Settings, tag: str) -> dict[str, str]:
    return {
        **os.environ,
        **tool_variables(settings),
        "MLOPS_BENTO_MODEL": tag,
        "MLOPS_PREDICTIONS_DIR": str(settings.predictions_dir),
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
    shows the service failed to start (BentoML respawns a failing worker forever).
    """
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServingError(f"The server at {url} exited with code {process.returncode} before it was ready.")
        if log_path is not None and _STARTUP_FAILED in log_path.read_text(encoding="utf-8", errors="replace"):
            raise ServingError(f"The service at {url} failed to start (is the model in the BentoML store?).")
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise ServingError(f"The server at {url} was not ready after {timeout:g} s; raise serving.startup_timeout_seconds.")


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
