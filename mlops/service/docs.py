"""``GET /docs.json``, the OpenAPI document with every feature, and ``GET /docs``, its Swagger page.

BentoML generates the document from the endpoints' Python types, where a record is
any object. This middleware serves BentoML's document with the served model's own
parts put in: the request check's schema of one record (each feature's type, range,
categories, nullability, and an example record that passes the check), the label
type of the answers, the body of ``POST /labels`` (request ids, records and labels of
that type), the Arrow endpoint and the 4xx answers. ``/docs`` is BentoML's Swagger
page, which loads ``./docs.json``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mlops.request_check import ARROW_STREAM, RequestCheck

__all__ = ["OpenAPIDocs", "openapi_document"]

logger = logging.getLogger("mlops.serving")

Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_ERROR = {"$ref": "#/components/schemas/Error"}
_ERRORS = {
    "400": 'The body is not JSON {"records": [...]} (or not an Arrow IPC stream), or a record is not an object.',
    "401": "An API key is required (when the server has one): 'Authorization: Bearer KEY' or 'X-API-Key: KEY'.",
    "413": "The body is over serving.max_request_bytes; split it into smaller requests.",
    "422": "No records, or a record the model cannot score: the message names each column and up to three records.",
}
_LABEL_ERRORS = {
    **_ERRORS,
    "400": 'The body is not JSON {"labels": [{"request_id": ..., "record": 0, "label": ...}, ...]}, '
    "a label is not an object, or there are more labels than one request takes (split them).",
    "404": "The server has no data contract to check labels against.",
    "422": "Not one label could be stored (an empty list, request ids no prediction has, labels of another "
    "type or class): the message gives the counts and each problem.",
}
_PREDICT_PATHS = ("/predict", "/predict_batched")


class OpenAPIDocs:
    """Serve ``/docs.json`` (BentoML's document with the model's schemas) and ``/docs`` (Swagger)."""

    def __init__(self, app: Callable[..., Awaitable[None]], service: Any) -> None:
        self.app = app
        self.service = service  # the bentoml.Service, whose openapi_spec BentoML builds
        self._document: bytes | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            if scope["path"] == "/docs.json":
                return await self._send_document(send)
            if scope["path"] == "/docs":  # BentoML's index page is the Swagger UI
                scope = {**scope, "path": "/", "raw_path": b"/"}
        await self.app(scope, receive, send)

    async def _send_document(self, send: Send) -> None:
        import bentoml

        if self._document is None:  # the model never changes in this process
            spec = self.service.openapi_spec.asdict()
            try:
                served = bentoml.get_current_service()
                spec = openapi_document(spec, served.check, served.classes)
            except Exception:  # the document must still be served, if only as BentoML made it
                logger.exception("Could not add the model's schemas to the OpenAPI document.")
            self._document = json.dumps(spec).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(self._document)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self._document})


def openapi_document(spec: dict[str, Any], check: RequestCheck, classes: list[Any] | None) -> dict[str, Any]:
    """BentoML's OpenAPI ``spec`` with the records' schema, the label type and the 4xx answers."""
    spec = json.loads(json.dumps(spec))  # a copy, with the status codes as JSON has them (strings)
    record = check.json_schema()
    records = {
        "type": "array",
        "title": "Records",
        "minItems": 1,
        "items": record,
        "description": "The records to score. Missing keys of nullable features count as null.",
    }
    example = {"records": [record["example"]]}
    for path in _PREDICT_PATHS:
        operation = spec.get("paths", {}).get(path, {}).get("post")
        if operation is None:
            continue
        content = operation["requestBody"]["content"]["application/json"]
        body = _resolved(spec, content["schema"])
        body.setdefault("properties", {})["records"] = records
        body["required"] = ["records"]
        content["example"] = example
        _label_answers(spec, operation["responses"]["200"]["content"]["application/json"]["schema"], classes)
        operation["responses"].update(_error_responses())
    labels = spec.get("paths", {}).get("/labels", {}).get("post")
    if labels is not None:
        _labels_body(spec, labels, classes)
    spec.setdefault("paths", {})["/arrow/predict"] = _arrow_path(check, classes)
    spec.setdefault("components", {}).setdefault("schemas", {})["Error"] = {
        "type": "object",
        "title": "Error",
        "required": ["error"],
        "properties": {"error": {"type": "string", "description": "What is wrong and how to fix it."}},
    }
    return spec


def _resolved(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The schema a ``$ref`` points at (the same dict, so edits land in the document)."""
    ref = schema.get("$ref")
    if not ref:
        return schema
    return spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]


def _label_schema(classes: list[Any] | None) -> dict[str, Any]:
    if classes is None:
        return {"type": "number", "description": "The predicted value."}
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string"}
    kind = kinds.get(type(classes[0]), "string") if classes else "string"
    return {"type": kind, "enum": list(classes), "description": "A class label, as in the training data."}


def _label_answers(spec: dict[str, Any], schema: dict[str, Any], classes: list[Any] | None) -> None:
    """Type the answers' labels: the user's classes (classification) or numbers (regression)."""
    schema = _resolved(spec, schema)
    if schema.get("type") == "array" and "items" in schema:
        schema = _resolved(spec, schema["items"])
    properties = schema.get("properties", {})
    label = _label_schema(classes)
    if "predictions" in properties:
        properties["predictions"] = {"type": "array", "items": label, "title": "Predictions"}
    if "prediction" in properties:
        properties["prediction"] = {**label, "title": "Prediction"}
    note = "null for a regression model" if classes is None else "in the order of each row of probabilities"
    if "classes" in properties:
        properties["classes"] = {"type": "array", "items": label, "nullable": True, "title": "Classes", "description": note}
    if "probabilities" in properties:
        properties["probabilities"]["nullable"] = True
        properties["probabilities"]["description"] = "Class probabilities, in the order of classes; null for regression."


def _labels_body(spec: dict[str, Any], operation: dict[str, Any], classes: list[Any] | None) -> None:
    """``POST /labels``: each label a request id /predict answered, a record and a value of the answers' type."""
    content = operation["requestBody"]["content"]["application/json"]
    body = _resolved(spec, content["schema"])
    label = {**_label_schema(classes), "description": "The true label; a key named like the target works too."}
    item = {
        "type": "object",
        "required": ["request_id", "label"],
        "properties": {
            "request_id": {"type": "string", "description": "The request_id the prediction's answer carried."},
            "record": {"type": "integer", "minimum": 0, "default": 0, "description": "The record's position in it."},
            "label": label,
        },
    }
    body.setdefault("properties", {})["labels"] = {"type": "array", "title": "Labels", "minItems": 1, "items": item}
    body["required"] = ["labels"]
    example = classes[0] if classes else 1.5
    content["example"] = {"labels": [{"request_id": "3f2a9c0e5d7b4a1f8e6c2b9d0a7f5e31", "record": 0, "label": example}]}
    operation["responses"].update(_error_responses(_LABEL_ERRORS))


def _error_responses(texts: dict[str, str] = _ERRORS) -> dict[str, Any]:
    return {
        status: {"description": text, "content": {"application/json": {"schema": dict(_ERROR)}}}
        for status, text in sorted(texts.items())
    }


def _arrow_path(check: RequestCheck, classes: list[Any] | None) -> dict[str, Any]:
    columns = ", ".join(check.names)
    answer = "prediction" + ("" if classes is None else ", " + ", ".join(f"probability_{label}" for label in classes))
    return {
        "post": {
            "tags": ["Service APIs"],
            "summary": "Score an Arrow IPC stream (columnar bulk scoring)",
            "description": (
                f"One column per feature ({columns}); the same checks as /predict. Answers an Arrow IPC stream "
                f"with the columns {answer}, and the model in the x-model-name / x-model-version headers."
            ),
            "operationId": "arrow_predict",
            "requestBody": {"content": {ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}}}},
            "responses": {
                "200": {
                    "description": "The predictions as an Arrow IPC stream.",
                    "content": {ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}}},
                },
                **_error_responses(),
            },
        }
    }
