"""The columnar bulk endpoint: ``POST /arrow/predict`` with an Arrow IPC stream.

JSON decoding, not the model, dominates 10,000-row JSON requests; an Arrow IPC body
(one column per feature: numbers, booleans or text, nulls where the contract allows
them) is read without per-value parsing. The answer is an Arrow IPC stream too:
``prediction`` (the user's labels, in their type, or a regressor's numbers) and, for a
classifier, one ``probability_<class>`` column per class, with the model in the
``x-model-name`` / ``x-model-version`` headers::

    import pyarrow as pa, httpx
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    response = httpx.post(f"{url}/arrow/predict", content=sink.getvalue().to_pybytes(),
                          headers={"content-type": ARROW_STREAM})
    result = pa.ipc.open_stream(response.content).read_all()

The body passes the same request check as ``/predict``
(:meth:`mlops.request_check.RequestCheck.arrow`): a body that is not an Arrow stream
is a 400, a missing feature column, a column of the wrong type or a value the check
refuses a 422 naming the columns. Mounted on the service as a plain Starlette app, so
it is not batched (bulk requests must not be).
"""

from __future__ import annotations

import uuid
from typing import Any

import bentoml
import numpy as np
import pyarrow as pa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mlops.request_check import ARROW_STREAM, RequestRefused

__all__ = ["ARROW_STREAM", "app", "write_predictions"]


async def predict_arrow(request: Request) -> Response:
    service = bentoml.get_current_service()
    try:
        checked = service.check.arrow(await request.body())
    except RequestRefused as exc:  # the guard logs it, in one line
        return JSONResponse({"error": str(exc)}, status_code=exc.status)
    service.count_warnings(checked.warnings)
    labels, probabilities = await service.batcher.score(checked.frame)
    request_id = uuid.uuid4().hex
    service.log_predictions(checked.frame, labels, request_id)
    body = write_predictions(labels, probabilities, service.classes)
    headers = {"x-model-name": service.model_name, "x-model-version": service.model_version, "x-request-id": request_id}
    return Response(body, media_type=ARROW_STREAM, headers=headers)


def write_predictions(labels: Any, probabilities: Any, classes: list[Any] | None) -> bytes:
    """Labels (in their own type) and, for a classifier, one probability column per class, as Arrow IPC."""
    columns = {"prediction": pa.array(np.asarray(labels))}
    if probabilities is not None:
        probabilities = np.asarray(probabilities, dtype="float64")
        for index, label in enumerate(classes or ()):
            columns[f"probability_{label}"] = pa.array(probabilities[:, index])
    table = pa.table(columns)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


app = Starlette(routes=[Route("/predict", predict_arrow, methods=["POST"])])
