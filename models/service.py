"""The prediction endpoint: a BentoML service over one MLflow model version.

Started by :func:`mlops.serving.start_server`, which names the model in the BentoML
store (``MLOPS_BENTO_MODEL``), the prediction log folder (``MLOPS_PREDICTIONS_DIR``),
the API key variable (``MLOPS_API_KEY_ENV``), the request size limit
(``MLOPS_MAX_REQUEST_BYTES``), batching (``MLOPS_BATCH_MAX_SIZE``,
``MLOPS_BATCH_MAX_LATENCY_MS``) and the access log (``MLOPS_ACCESS_LOG``)::

    curl -X POST http://127.0.0.1:3000/predict -H 'Content-Type: application/json' \\
         -d '{"records": [{"mean_radius": 13.1, "mean_texture": 19.6, ...}]}'
    {"model_name": "breast-cancer-classifier", "model_version": "3",
     "predictions": [1], "probabilities": [[0.02, 0.98]]}

Endpoints: ``/predict`` scores any number of records; requests arriving while the model
is busy share its next call (:mod:`models.batching`, no wait window);
``/predict_batched`` takes the same body and answers per record, merged by BentoML's
adaptive batching (which waits for more requests, so it adds latency at low load);
``/arrow/predict`` scores an Arrow IPC stream (columnar bulk, see :mod:`models.arrow`). A record
failing the request schema is answered 422 naming the field, before any batching, so
one client's bad record never fails another's. ``/readyz``, ``/livez``, ``/metrics``
(Prometheus) and ``/docs.json`` (OpenAPI) come from BentoML.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import uuid
from typing import Annotated, Any

import bentoml
from pydantic import AfterValidator, BaseModel, TypeAdapter

from mlops.deployment import SMOKE_TEST_HEADER
from models import arrow
from models.batching import GreedyBatcher
from models.guard import RequestGuard
from mlops.prediction_log import PredictionLogWriter

logger = logging.getLogger(__name__)

# serving.batch_max_latency_ms / batch_max_size. The latency is a deadline, not a wait
# window: BentoML answers 503 to queued requests expected to miss it, so it is generous.
MAX_LATENCY_MS = int(os.environ.get("MLOPS_BATCH_MAX_LATENCY_MS", "1000"))
MAX_BATCH_SIZE = int(os.environ.get("MLOPS_BATCH_MAX_SIZE", "64"))

# Warn-level contract findings are served, and counted here (Prometheus, /metrics).
CONTRACT_WARNINGS = bentoml.metrics.Counter(
    name="mlops_contract_warnings",
    documentation="Served records with a warn-level data-contract finding, by column.",
    labelnames=["column"],
)


class Prediction(BaseModel):
    model_name: str
    model_version: str
    request_id: str  # with the record's position, the key ground-truth labels join on
    predictions: list[int]
    probabilities: list[list[float]]


class RecordPrediction(BaseModel):
    model_name: str
    model_version: str
    request_id: str
    prediction: int
    probabilities: list[float]


def _validated(records: list[dict[str, Any]]) -> list[dict[str, float]]:
    # Runs while BentoML parses the request, in the worker holding the service.
    return bentoml.get_current_service().validate(records)


Records = Annotated[list[dict[str, Any]], AfterValidator(_validated)]


# BentoML's access log costs ~1 ms of CPU per request (a third of a small model's latency);
# the prediction log already records every answered request. serving.access_log turns it on.
ACCESS_LOG = os.environ.get("MLOPS_ACCESS_LOG", "false") == "true"


@bentoml.service(workers=1, traffic={"timeout": 60}, logging={"access": {"enabled": ACCESS_LOG}})
class Classifier:
    """Load the model once per worker; answer records with predictions and probabilities."""

    def __init__(self) -> None:
        import mlflow.models
        import mlflow.sklearn

        from mlops.serving import frame_check, request_schema, request_validator

        bento_model = bentoml.models.get(os.environ["MLOPS_BENTO_MODEL"])
        # bentoml.mlflow.import_model keeps the MLflow model as-is in this folder.
        model_dir = bento_model.path_of("mlflow_model")
        self.model = mlflow.sklearn.load_model(model_dir)
        self.schema = request_schema(model_dir, os.environ.get("MLOPS_CONTRACT"))
        signature_inputs = mlflow.models.Model.load(model_dir).signature.inputs.input_names()
        self.contract = request_validator(os.environ.get("MLOPS_CONTRACT"), signature_inputs)
        self.frame_check = frame_check(model_dir, os.environ.get("MLOPS_CONTRACT"))
        self._records = TypeAdapter(list[self.schema])
        self.features = signature_inputs  # the model's column order
        self.model_name = bento_model.info.labels["mlflow_model"]
        self.model_version = bento_model.info.labels["mlflow_version"]
        self.log = PredictionLogWriter(os.environ.get("MLOPS_PREDICTIONS_DIR", "predictions"))
        # This process serves: the event loop must get the GIL back quickly from the
        # model thread (Python's default 5 ms switch interval added ~3 ms at 1 client).
        sys.setswitchinterval(0.0005)
        self.batcher = GreedyBatcher(self.score, self.features, max_rows=MAX_BATCH_SIZE)
        # Everything loaded so far (mlflow, pandas, sklearn, the model) lives as long as the
        # process: out of the collector's sight, a full collection stops being a 200 ms pause
        # in the middle of requests (p99 at 32 clients fell from ~300 ms to ~100 ms).
        gc.freeze()

    def validate(self, records: list[dict[str, Any]]) -> list[dict[str, float]]:
        """Check each record against the schema; a 422 names the record and the field.

        All-numeric, in-range records pass one vectorised check (:class:`FrameCheck`);
        only the rest go through the per-record schema, which explains a refusal.
        """
        from bentoml.exceptions import UnprocessableEntity
        from pydantic import ValidationError

        frame = self.frame_check.accept(records)
        if frame is not None:
            for column, count in self.frame_check.warnings(frame).items():
                CONTRACT_WARNINGS.labels(column=column).inc(count)
            return ValidRecords(records, frame)
        try:
            valid = self._records.validate_python(records)
        except ValidationError as exc:
            problems = "; ".join(f"{_loc(error)}: {error['msg']}" for error in exc.errors()[:10])
            raise UnprocessableEntity(f"{exc.error_count()} invalid field(s): {problems}") from None
        rows = [row.model_dump() for row in valid]
        if self.contract is not None:
            for row in rows:
                for finding in self.contract.warnings(row):
                    CONTRACT_WARNINGS.labels(column=finding.split(":", 1)[0]).inc()
        return rows

    @bentoml.api
    async def predict(self, records: Records, ctx: bentoml.Context) -> Prediction:
        # The deployer's smoke test sends reference rows: logging them would hide drift.
        smoke = ctx.request.headers.get(SMOKE_TEST_HEADER) == "1"
        request_id = _request_id(ctx.request.headers.get("x-request-id"))
        ctx.response.headers["x-request-id"] = request_id
        frame = self.features_frame(records)
        # Concurrent requests share one model call (models/batching.py); one alone never waits.
        labels, probabilities = await self.batcher.score(frame)
        if not smoke:
            self.log_predictions(frame, labels, request_id)
        # Our own values of known types: constructed, not re-validated (10,000 rows cost ms).
        return Prediction.model_construct(
            model_name=self.model_name,
            model_version=self.model_version,
            request_id=request_id,
            predictions=labels.tolist(),
            probabilities=probabilities.tolist(),
        )

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def predict_batched(self, records: Records) -> list[RecordPrediction]:
        # Records of several clients share this call: each gets its own id (record 0).
        scored, probabilities = self.score(self.features_frame(records))
        labels = scored.tolist()
        ids = [uuid.uuid4().hex for _ in labels]
        for request_id, row, label in zip(ids, records, labels):
            self.log_predictions([{name: row[name] for name in self.features}], [label], request_id)
        return [
            RecordPrediction.model_construct(
                model_name=self.model_name,
                model_version=self.model_version,
                request_id=request_id,
                prediction=label,
                probabilities=proba,
            )
            for request_id, label, proba in zip(ids, labels, probabilities.tolist())
        ]

    @bentoml.on_shutdown
    def close_log(self) -> None:
        self.log.close()

    def features_frame(self, rows: list[dict[str, float]]) -> Any:
        """The checked records as a frame in the model's column order."""
        import pandas as pd

        frame = getattr(rows, "frame", None)  # built by the vectorised check
        if frame is None:  # checked one by one, or merged by BentoML's batcher
            frame = pd.DataFrame(rows, columns=self.features)
        return frame

    def score(self, frame: Any) -> tuple[Any, Any]:
        """Labels and class probabilities (numpy arrays) for a frame of valid features."""
        # One pass through the model: the label is the most probable class, as in predict.
        probabilities = self.model.predict_proba(frame)
        return self.model.classes_[probabilities.argmax(axis=1)], probabilities

    def log_predictions(self, rows: Any, predictions: Any, request_id: str) -> None:
        """Hand the records to the log's thread (a frame as is: the thread encodes it)."""
        # The log serves monitoring; losing a line must never cost a client its answer.
        try:
            self.log.log(
                request_id=request_id,
                model_name=self.model_name,
                model_version=self.model_version,
                inputs=rows,
                predictions=predictions,
            )
        except Exception:
            logger.exception("Could not log a prediction; the response is unaffected.")


class ValidRecords(list):
    """Checked records that keep the frame built while checking them (bulk requests)."""

    def __init__(self, records: list[dict[str, Any]], frame: Any) -> None:
        super().__init__(records)
        self.frame = frame


def _request_id(given: str | None) -> str:
    """The client's ``X-Request-ID`` when it is a sane token, else a fresh one."""
    if given and len(given) <= 64 and given.replace("-", "").replace("_", "").isalnum():
        return given
    return uuid.uuid4().hex


def _loc(error: Any) -> str:
    """``records[1].mean_radius`` from pydantic's location ``(1, "mean_radius")``."""
    index, *field = error["loc"]
    return f"records[{index}]" + "".join(f".{part}" for part in field)


# BentoML derives a list output's media type from its JSON schema on every response
# (12 % of the CPU at 32 clients); it is always JSON here.
Classifier.apis["predict_batched"].output_spec.media_type = "application/json"
Classifier.add_asgi_middleware(RequestGuard)
Classifier.mount_asgi_app(arrow.app, path="/arrow")
