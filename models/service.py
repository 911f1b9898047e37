"""The prediction endpoint: a BentoML service over the champion MLflow model.

Started by :func:`mlops.serving.start_server`, which names the model in the BentoML
store (``MLOPS_BENTO_MODEL``) and the prediction log folder (``MLOPS_PREDICTIONS_DIR``)::

    curl -X POST http://127.0.0.1:3000/predict -H 'Content-Type: application/json' \\
         -d '{"records": [{"mean_radius": 13.1, "mean_texture": 19.6, ...}]}'
    {"model_name": "breast-cancer-classifier", "model_version": "3",
     "predictions": [1], "probabilities": [[0.02, 0.98]]}

A record missing a feature is answered 400 with the field named in ``detail[].loc``.
"""

from __future__ import annotations

import logging
import os
import uuid

import bentoml
from pydantic import BaseModel, TypeAdapter, create_model

from mlops.prediction_log import PredictionLogWriter

logger = logging.getLogger(__name__)


class Prediction(BaseModel):
    model_name: str
    model_version: str
    predictions: list[int]
    probabilities: list[list[float]]


@bentoml.service(workers=1)
class Classifier:
    """Load the model once per worker; answer batches of feature records."""

    def __init__(self) -> None:
        import mlflow.models
        import mlflow.sklearn

        bento_model = bentoml.models.get(os.environ["MLOPS_BENTO_MODEL"])
        # bentoml.mlflow.import_model keeps the MLflow model as-is in this folder.
        model_dir = bento_model.path_of("mlflow_model")
        self.model = mlflow.sklearn.load_model(model_dir)
        self.features = mlflow.models.Model.load(model_dir).signature.inputs.input_names()
        self.model_name = bento_model.info.labels["mlflow_model"]
        self.model_version = bento_model.info.labels["mlflow_version"]
        # Every feature required and numeric: a ValidationError is BentoML's 400.
        record = create_model("Record", **{name: (float, ...) for name in self.features})
        self.schema = TypeAdapter(list[record])
        self.log = PredictionLogWriter(os.environ["MLOPS_PREDICTIONS_DIR"])

    @bentoml.api
    def predict(self, records: list[dict[str, float]]) -> Prediction:
        import pandas as pd

        rows = [row.model_dump() for row in self.schema.validate_python(records)]
        frame = pd.DataFrame(rows, columns=self.features)
        predictions = [int(label) for label in self.model.predict(frame)]
        self._log(rows, predictions)
        return Prediction(
            model_name=self.model_name,
            model_version=self.model_version,
            predictions=predictions,
            probabilities=self.model.predict_proba(frame).tolist(),
        )

    @bentoml.on_shutdown
    def close_log(self) -> None:
        self.log.close()

    def _log(self, rows: list[dict[str, float]], predictions: list[int]) -> None:
        # The log serves monitoring; losing a line must never cost a client its answer.
        try:
            self.log.log(
                request_id=uuid.uuid4().hex,
                model_name=self.model_name,
                model_version=self.model_version,
                inputs=rows,
                predictions=predictions,
            )
        except Exception:
            logger.exception("Could not log a prediction; the response is unaffected.")
