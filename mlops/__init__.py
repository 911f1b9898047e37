"""mlops: the whole ML loop as Prefect flows over MLflow, Great Expectations, BentoML and Evidently.

The public API, for scripts, notebooks and a project's own flows::

    import mlops
    from mlops import tasks

    settings = mlops.load_settings()          # mlops.yaml; MLflow, Prefect, BentoML bound to the state folder
    training = mlops.load_flow(settings, "training")   # the project's flow (flows/training.py)
    outcome = training(settings)

``mlops.tasks`` holds every stage as a Prefect task (validate, split, train candidates,
register, gate, package, deploy, monitor, decide retrain, alert), each a thin wrapper
over a plain function of the library. Names are imported on first use, so
``import mlops`` (and ``mlops --help``) stays instant.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlops import tasks
    from mlops.config import Settings
    from mlops.outcomes import MonitoringOutcome, ScoringOutcome, TrainingOutcome
    from mlops.project import load_flow, load_settings
    from mlops.scaffold import init_project
    from mlops.training import Candidate

__all__ = [
    "Candidate",
    "MonitoringOutcome",
    "ScoringOutcome",
    "Settings",
    "TrainingOutcome",
    "init_project",
    "load_flow",
    "load_settings",
    "tasks",
]

# Public name -> the module that defines it.
_HOMES = {
    "Candidate": "mlops.training",
    "MonitoringOutcome": "mlops.outcomes",
    "ScoringOutcome": "mlops.outcomes",
    "Settings": "mlops.config",
    "TrainingOutcome": "mlops.outcomes",
    "init_project": "mlops.scaffold",
    "load_flow": "mlops.project",
    "load_settings": "mlops.project",
}


def __getattr__(name: str) -> Any:
    if name == "tasks":
        return importlib.import_module("mlops.tasks")
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'mlops' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
