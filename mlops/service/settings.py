"""What a model server and the swap proxy are started with: one typed value each, in one variable.

The parent process builds it from the project's :class:`mlops.config.Settings`
(:func:`service_settings`, :func:`proxy_settings`) and hands it to the server as JSON in
one environment variable; the server parses it once, at start-up
(:meth:`ServiceSettings.from_environment`). No field has a default: every value comes
from the config (``serving.*``, ``logs.format``, the state folder), so each default
lives there alone. The API key stays a secret: the settings name its variable, never
its value::

    env = {**os.environ, **service_settings(settings, tag).as_environment()}
    # in the server: ServiceSettings.from_environment().max_records == settings.serving.max_records
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from mlops.errors import ServingError

if TYPE_CHECKING:
    from mlops.config import Settings

__all__ = ["PROXY_VARIABLE", "SERVICE_VARIABLE", "ProxySettings", "ServiceSettings", "proxy_settings", "service_settings"]

SERVICE_VARIABLE = "MLOPS_SERVICE_SETTINGS"
PROXY_VARIABLE = "MLOPS_PROXY_SETTINGS"


class _Handed(BaseModel):
    """Settings a parent process hands a server process in the environment variable ``variable``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    variable: ClassVar[str]

    @classmethod
    def from_environment(cls) -> Self:
        """The settings this process was started with; a one-line :class:`ServingError` naming the variable if not."""
        given = os.environ.get(cls.variable)
        if not given:
            raise ServingError(f"{cls.variable} is not set: start the server with `mlops serve` or `mlops deploy`, "
                               f"or set it to the JSON of mlops.service.settings.{cls.__name__}.")  # fmt: skip
        try:
            return cls.model_validate_json(given)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors()[:3])
            raise ServingError(f"{cls.variable} is not valid {cls.__name__} JSON ({problems}).") from None

    @classmethod
    def from_environment_or_exit(cls) -> Self:
        """:meth:`from_environment`, or the process ends with its message: a server cannot start without them.

        BentoML and uvicorn print an exception raised at import as a traceback; ``SystemExit``
        prints its one line (which :func:`mlops.serving.start_server` shows from the server log).
        """
        try:
            return cls.from_environment()
        except ServingError as exc:
            raise SystemExit(str(exc)) from None

    def as_environment(self) -> dict[str, str]:
        """The one variable to add to the server's environment."""
        return {self.variable: self.model_dump_json()}


class ServiceSettings(_Handed):
    """The BentoML service's settings (``models/service.py``, :mod:`mlops.service.guard`)."""

    variable: ClassVar[str] = SERVICE_VARIABLE

    bento_model: str  # the served model's tag in the BentoML store
    predictions_dir: Path  # where the prediction log goes
    labels_dir: Path  # the label store POST /labels writes to
    contract: Path | None  # the data contract requests and labels are checked against
    log_format: Literal["text", "json"]  # the server log's lines
    # serving.*, under the same names
    api_key_env: str
    max_request_bytes: int
    max_records: int
    max_json_depth: int
    max_json_values: int
    batch_max_size: int
    batch_max_latency_ms: int
    access_log: bool
    log_max_bytes: int
    log_backups: int


class ProxySettings(_Handed):
    """The swap proxy's settings (:mod:`mlops.proxy`)."""

    variable: ClassVar[str] = PROXY_VARIABLE

    upstream_file: Path  # where the deployer points it (mlops.proxy.write_upstream)
    max_request_bytes: int  # serving.max_request_bytes
    api_key_env: str  # serving.api_key_env: the key it sends the shadow, read from its environment


def service_settings(settings: Settings, tag: str, predictions_dir: Path | None = None) -> ServiceSettings:
    """The service's settings for BentoML model ``tag``; ``predictions_dir`` logs elsewhere (a shadow)."""
    serving = settings.serving
    return ServiceSettings(
        bento_model=tag,
        predictions_dir=predictions_dir or settings.predictions_dir,
        labels_dir=settings.labels_dir,
        contract=settings.data.contract,
        # The server log is a file people tail: JSON lines only when asked (logs.format: json).
        log_format="json" if settings.logs.format == "json" else "text",
        api_key_env=serving.api_key_env,
        max_request_bytes=serving.max_request_bytes,
        max_records=serving.max_records,
        max_json_depth=serving.max_json_depth,
        max_json_values=serving.max_json_values,
        batch_max_size=serving.batch_max_size,
        batch_max_latency_ms=serving.batch_max_latency_ms,
        access_log=serving.access_log,
        log_max_bytes=serving.log_max_bytes,
        log_backups=serving.log_backups,
    )


def proxy_settings(settings: Settings, upstream_file: Path) -> ProxySettings:
    """The swap proxy's settings: its upstream file and the service's body limit and API-key variable."""
    serving = settings.serving
    return ProxySettings(upstream_file=upstream_file, max_request_bytes=serving.max_request_bytes, api_key_env=serving.api_key_env)
