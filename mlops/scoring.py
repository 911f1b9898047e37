"""Batch scoring: predict a table with a registered model and write the scores.

The gate runs first (in :mod:`flows.scoring`); this module only loads the model
behind a registry alias, predicts, and writes the result atomically, so a failed
run never leaves a half-written file::

    model, version = load_registered_model("breast-cancer-classifier", "champion")
    scores = score_frame(model, frame, load_contract("data/contracts/breast_cancer.yaml"))
    write_scores(scores, ".mlops/scores/current-scores.csv")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.exceptions import MlflowException

from mlops.errors import RegistryError
from mlops.training import feature_frame

if TYPE_CHECKING:
    import pandas as pd

    from mlops.contract import Contract

__all__ = ["PREDICTION_COLUMN", "load_registered_model", "score_frame", "write_scores"]

PREDICTION_COLUMN = "prediction"


def load_registered_model(name: str, alias: str) -> tuple[Any, str]:
    """The scikit-learn model behind ``alias`` and its version; :class:`RegistryError` if none."""
    try:
        version = str(mlflow.MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            raise RegistryError(
                f"Model {name!r} has no version with alias {alias!r}. Run `mlops train` first."
            ) from None
        raise
    return mlflow.sklearn.load_model(f"models:/{name}/{version}"), version


def score_frame(model: Any, frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """The input rows with a ``prediction`` column (and ``probability_<class>`` for classifiers).

    Predictions are the user's labels (text stays text) or numbers for a regressor; the
    features reach the model in the types it was trained on (:func:`mlops.training.feature_frame`).
    """
    inputs = feature_frame(frame, contract)
    scored = frame.copy()
    if contract.task == "regression" or not hasattr(model, "predict_proba"):
        scored[PREDICTION_COLUMN] = model.predict(inputs)
        return scored
    probabilities = model.predict_proba(inputs)
    scored[PREDICTION_COLUMN] = model.classes_[probabilities.argmax(axis=1)]
    for index, label in enumerate(model.classes_):
        scored[f"probability_{label}"] = probabilities[:, index]
    return scored


def write_scores(scores: pd.DataFrame, path: str | Path) -> Path:
    """Write CSV through a temporary file and an atomic rename: all of it or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        scores.to_csv(partial, index=False, lineterminator="\n")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
