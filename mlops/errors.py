"""Errors the user can fix, each naming the problem and the fix.

    MlopsError                 base; the CLI prints it and exits with ``exit_code``
    ├── ConfigError            bad config file, option or environment variable (exit 2)
    ├── DataError              a data file that cannot be read as a table (exit 2)
    ├── ValidationFailed       the validation gate blocked the run (exit 1)
    ├── RegistryError          no such registered model, version or alias (exit 2)
    ├── ServingError           the endpoint did not start or did not answer (exit 3)
    └── ServiceUnavailable     a configured server (MLflow, Prefect) does not answer (exit 4)
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "MlopsError",
    "RegistryError",
    "ServiceUnavailable",
    "ServingError",
    "ValidationFailed",
]


class MlopsError(Exception):
    """Base of every error the user can act on."""

    exit_code = 2


class ConfigError(MlopsError):
    """The configuration is invalid or points at something that does not exist."""

    exit_code = 2


class DataError(MlopsError):
    """A data file cannot be read as the table the pipeline expects."""

    exit_code = 2


class ValidationFailed(MlopsError):
    """The validation gate blocked the run; nothing downstream was touched."""

    exit_code = 1

    def __init__(self, message: str, result: object | None = None) -> None:
        super().__init__(message)
        self.result = result


class RegistryError(MlopsError):
    """The model registry has no such model, version or alias."""

    exit_code = 2


class ServingError(MlopsError):
    """The prediction endpoint failed to start or to answer."""

    exit_code = 3


class ServiceUnavailable(MlopsError):
    """A server the configuration points at (MLflow, Prefect) does not answer."""

    exit_code = 4
