"""The columnar bulk endpoint: ``POST /arrow/predict`` with an Arrow IPC stream.

JSON decoding, not the model, dominates 10,000-row JSON requests; an Arrow IPC body
(one column per feature) is read without per-value parsing. The answer is an Arrow IPC
stream too: ``prediction`` and one ``probability_<class>`` column per class, with the
model in the ``x-model-name`` / ``x-model-version`` headers::

    import pyarrow as pa, httpx
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    response = httpx.post(f"{url}/arrow/predict", content=sink.getvalue().to_pybytes(),
                          headers={"content-type": ARROW_STREAM})
    result = pa.ipc.open_stream(response.content).read_all()

A body that is not an Arrow stream, or lacks a feature, or has a non-numeric, null or
infinite feature value, or a value outside the contract's block-level range, is
answered 422 naming the columns. Mounted on the service as a
plain Starlette app, so it is not batched (bulk requests must not be).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ARROW_STREAM", "app", "read_frame", "write_predictions"]

ARROW_STREAM = "application/vnd.apache.arrow.stream"


async def predict_arrow(request: Request) -> Response:
    import uuid

    import bentoml

    service = bentoml.get_current_service()
    try:
        frame = read_frame(await request.body(), service.features)
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=422)
    if problems := service.frame_check.out_of_range(frame):
        return JSONResponse({"error": "Outside the data contract: " + "; ".join(problems)}, status_code=422)
    labels, probabilities = await service.batcher.score(frame)
    request_id = uuid.uuid4().hex
    service.log_predictions(frame, labels, request_id)
    body = write_predictions(labels, probabilities, list(service.model.classes_))
    headers = {"x-model-name": service.model_name, "x-model-version": service.model_version, "x-request-id": request_id}
    return Response(body, media_type=ARROW_STREAM, headers=headers)


def read_frame(body: bytes, features: list[str]) -> pd.DataFrame:
    """The feature columns of an Arrow IPC stream as a float frame; ValueError names what is wrong."""
    import numpy as np
    import pyarrow as pa

    try:
        table = pa.ipc.open_stream(body).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValueError(f"The body is not an Arrow IPC stream ({exc}); send content-type {ARROW_STREAM}.") from None
    missing = [name for name in features if name not in table.column_names]
    if missing:
        raise ValueError(f"Missing feature column(s): {', '.join(missing)}.")
    numeric = (pa.types.is_integer, pa.types.is_floating)
    wrong = [name for name in features if not any(check(table.schema.field(name).type) for check in numeric)]
    if wrong:
        raise ValueError(f"Feature column(s) not numeric: {', '.join(wrong)}.")
    frame = table.select(features).to_pandas().astype("float64", copy=False)
    finite = np.isfinite(frame.to_numpy()).all(axis=0)
    invalid = [name for name, ok in zip(features, finite) if not ok]
    if invalid:
        raise ValueError(f"Feature column(s) with null, NaN or infinite values: {', '.join(invalid)}.")
    return frame


def write_predictions(labels: Any, probabilities: Any, classes: list[Any]) -> bytes:
    """Labels and the (rows × classes) probability array as an Arrow IPC stream."""
    import numpy as np
    import pyarrow as pa

    probabilities = np.asarray(probabilities, dtype="float64")
    columns = {"prediction": pa.array(np.asarray(labels), type=pa.int64())}
    for index, label in enumerate(classes):
        columns[f"probability_{label}"] = pa.array(probabilities[:, index])
    table = pa.table(columns)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


app = Starlette(routes=[Route("/predict", predict_arrow, methods=["POST"])])
