"""The shadow routes: copies of the champion's requests, scored and logged by a challenger.

In shadow mode (``mlops deploy --shadow VERSION``) the swap proxy sends this service a
copy of every request the champion answered (:mod:`mlops.proxy`), after the client has
its answer. Mounted on the service at ``/shadow``:

* ``POST /shadow/predict`` takes a batch of JSON requests as the proxy composes it,
  ``{"requests": [{"request_id": "…", "body": {"records": [...]}}, ...]}``; every
  request's records are checked, then all of them are scored in one model call, and each
  request's predictions are logged under its own request id with the records' positions,
  so they join the champion's log on ``(request_id, record)``;
* ``POST /shadow/arrow`` takes one Arrow IPC body (a copy of an ``/arrow/predict``
  request) with its request id in ``x-request-id``.

Both answer ``{"scored": requests, "records": n, "refused": requests}``: a request the
check refuses (the challenger's contract or signature may differ from the champion's) is
skipped and counted, never fails the others. Nothing goes back to a client, so the answer
carries no predictions. The API-key guard and the body limit (:mod:`mlops.service.guard`) apply
as on every scoring path.
"""

from __future__ import annotations

import json
from typing import Any

import bentoml
import orjson
import pandas as pd
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mlops.request_check import Checked, RequestRefused

__all__ = ["app", "predict_arrow_copy", "predict_copies"]

_MAX_REQUEST_ID = 64


async def predict_copies(request: Request) -> Response:
    """Score a batch of JSON request copies in one model call; log each under its request id."""
    service = bentoml.get_current_service()
    copies = _parse_batch(await request.body())
    if copies is None:
        return JSONResponse({"error": 'The body must be {"requests": [{"request_id": ..., "body": {...}}, ...]}.'}, 400)
    checked, refused, merged = _check_all(service, copies)
    if merged is None:
        return JSONResponse({"scored": 0, "records": 0, "refused": refused})
    labels, _ = await service.batcher.score(merged)  # one call, in the model's thread
    start = 0
    for request_id, frame in checked:
        end = start + len(frame)
        service.log_predictions(frame, labels[start:end], request_id)
        start = end
    return JSONResponse({"scored": len(checked), "records": len(merged), "refused": refused})


async def predict_arrow_copy(request: Request) -> Response:
    """Score one Arrow IPC request copy; log it under the ``x-request-id`` it came with."""
    service = bentoml.get_current_service()
    request_id = _request_id(request.headers.get("x-request-id"))
    if request_id is None:
        return JSONResponse({"error": "An Arrow copy needs its champion's x-request-id header."}, 400)
    try:
        checked = service.check.arrow(await request.body())
    except RequestRefused:
        return JSONResponse({"scored": 0, "records": 0, "refused": 1})
    service.count_warnings(checked.warnings)
    labels, _ = await service.batcher.score(checked.frame)
    service.log_predictions(checked.frame, labels, request_id)
    return JSONResponse({"scored": 1, "records": len(checked.frame), "refused": 0})


def _parse_batch(body: bytes) -> list[Any] | None:
    """The batch's list of copies, or None when it is not the proxy's shape."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:  # what orjson refuses but Python's parser reads (integers past 64 bits, NaN)
            payload = json.loads(body)
        except ValueError:
            return None
    copies = payload.get("requests") if isinstance(payload, dict) else None
    return copies if isinstance(copies, list) else None


def _check_all(service: Any, copies: list[Any]) -> tuple[list[tuple[str, Any]], int, Any]:
    """``(request_id, frame)`` of every copy the check accepts, how many it refused, and all their rows in one frame.

    All records are checked in one pass first (one frame, the cost of a single request);
    only when that pass refuses something is each copy checked alone, to skip just the bad ones.
    """
    valid = [
        (request_id, copy["body"]["records"])
        for copy in copies
        if isinstance(copy, dict) and (request_id := _request_id(copy.get("request_id"))) is not None
        and isinstance(copy.get("body"), dict) and isinstance(copy["body"].get("records"), list)
        and copy["body"]["records"]
    ]
    refused = len(copies) - len(valid)
    records = [record for _, rows in valid for record in rows]
    try:
        whole: Checked | None = service.check.records(records) if records else None
    except RequestRefused:
        whole = None
    if whole is not None:
        service.count_warnings(whole.warnings)
        frame, start, checked = whole.frame, 0, []
        for request_id, rows in valid:  # views, not copies: the log reads rows, not the index
            checked.append((request_id, frame[start : start + len(rows)]))
            start += len(rows)
        return checked, refused, frame
    checked = []
    for request_id, rows in valid:
        try:
            one = service.check.records(rows)
        except RequestRefused:
            refused += 1
            continue
        service.count_warnings(one.warnings)
        checked.append((request_id, one.frame))
    return checked, refused, _concat([frame for _, frame in checked]) if checked else None


def _concat(frames: list[Any]) -> Any:
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _request_id(given: Any) -> str | None:
    """The champion's request id when it is a sane token (what the service hands out), else None."""
    if isinstance(given, str) and 0 < len(given) <= _MAX_REQUEST_ID and given.replace("-", "").replace("_", "").isalnum():
        return given
    return None


app = Starlette(
    routes=[
        Route("/predict", predict_copies, methods=["POST"]),
        Route("/arrow", predict_arrow_copy, methods=["POST"]),
    ]
)
