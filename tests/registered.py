"""Register model versions through the training code itself, for the serving-side tests.

A version made here is split, fitted, scored and logged by the same functions the
training flow calls (:func:`mlops.training.search_candidates`,
:func:`mlops.tracking.log_and_register`), so it cannot drift from what training registers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from mlops import tracking, training
from mlops.config import Settings
from mlops.contract import Contract, draft_contract, load_contract

TRAIN_CSV = Path(__file__).resolve().parents[1] / "data" / "train.csv"


def features() -> pd.DataFrame:
    return pd.read_csv(TRAIN_CSV).drop(columns="target")


def register(settings: Settings, C: float) -> str:
    """A logistic regression with inverse regularisation ``C`` on the bundled data, registered as challenger."""
    return register_fitted(settings, LogisticRegression(C=C, max_iter=1000))[0]


def register_fitted(
    settings: Settings, estimator: Any, *, frame: pd.DataFrame | None = None, contract: Contract | None = None
) -> tuple[str, Pipeline]:
    """``estimator`` trained on ``frame`` (the bundled data) under ``contract`` (the project's) and registered.

    Returns the version and its fitted pipeline (preprocessing included, as training builds it).
    """
    frame = pd.read_csv(TRAIN_CSV) if frame is None else frame
    contract = contract or load_contract(settings.data.contract)
    split = training.split_for_contract(frame, contract, settings.model)
    candidate = training.Candidate(type(estimator).__name__, estimator)
    found = training.search_candidates(split, settings.model, [candidate], training.contract_columns(contract))
    registered = tracking.log_and_register(
        found.best, split, frame, settings, data_path=Path(settings.data.training), tags={"trigger": "test"}, trials=found.trials
    )
    return registered.version, found.best.pipeline


def register_renamed(settings: Settings) -> str:
    """A sound model trained on the bundled data with its columns renamed: its signature mismatches what is served."""
    frame = pd.read_csv(TRAIN_CSV)
    frame.columns = [f"f{number}" if name != "target" else name for number, name in enumerate(frame.columns)]
    contract = draft_contract(frame, "target", "renamed")
    return register_fitted(settings, LogisticRegression(max_iter=1000), frame=frame, contract=contract)[0]


def set_champion(settings: Settings, version: str) -> None:
    MlflowClient().set_registered_model_alias(settings.model.name, "champion", version)


def register_unloadable(settings: Settings) -> str:
    """A version BentoML imports but the service cannot load: a pyfunc without the sklearn flavour."""
    import mlflow.pyfunc

    class Constant(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return [0] * len(model_input)

    with mlflow.start_run(experiment_id=tracking.ensure_experiment(settings)):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=Constant(), registered_model_name=settings.model.name, pip_requirements=[]
        )
    return str(info.registered_model_version)
