"""``GET /docs.json``, the OpenAPI document with every feature, and ``GET /docs``, its Swagger page.

BentoML generates the document from the endpoints' Python types, where a record is
any object. This middleware serves BentoML's document with the served model's own
parts put in: the request check's schema of one record (each feature's type, range,
categories, nullability, and an example record that passes the check), the label
type of the answers, the body of ``POST /labels`` (request ids, records and labels of
that type), the Arrow endpoint, a summary and description of every endpoint and its
error answers, and the model's name and version as the document's title and version
(BentoML's own says "None" and shows badges fetched from the network).

``/docs`` (and ``/``) is a Swagger page of our own on BentoML's bundled Swagger UI
files: titled with the model, it fetches nothing from the network (BentoML's index page
loads Google Tag Manager, and Swagger UI's validator badge calls validator.swagger.io),
so it works offline.
"""

from __future__ import annotations

import html
import json
import logging
from typing import Any

import bentoml

from mlops.request_check import ARROW_STREAM, RequestCheck
from mlops.service.asgi import App, Receive, Scope, Send

__all__ = ["OpenAPIDocs", "openapi_document", "swagger_page"]

logger = logging.getLogger("mlops.serving")

_ERROR = {"$ref": "#/components/schemas/Error"}
_ERRORS = {
    "400": 'The body is not JSON {"records": [...]} (or not an Arrow IPC stream), or a record is not an object.',
    "401": "An API key is required (when the server has one): 'Authorization: Bearer KEY' or 'X-API-Key: KEY'.",
    "413": "The body is over serving.max_request_bytes, or holds more records (serving.max_records), nesting "
    "(serving.max_json_depth) or values (serving.max_json_values) than one request may: split it.",
    "415": "The body is not sent as JSON: send it with 'Content-Type: application/json'.",
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
_BATCHED_ERRORS = {
    **_ERRORS,
    "503": "BentoML's batching queue would miss serving.batch_max_latency_ms, or the request is too large to batch: "
    "retry later, or send bulk requests to /predict.",
}
_PREDICT_PATHS = ("/predict", "/predict_batched")
# Each endpoint's summary and description (a service method's own docstring wins).
_ENDPOINTS = {
    "/predict": ("Score records (bulk, JSON)",
                 "Any number of records, each an object with the features below. Answers the model's name and "
                 "version, a request_id (labels join on it), one prediction per record and, for a classifier, "
                 "the class probabilities in the order of classes. Concurrent requests share one model call."),
    "/predict_batched": ("Score records, one answer each (adaptive batching)",
                         "The same body as /predict; answers a list with one prediction per record. BentoML merges "
                         "concurrent requests into one model call and waits for more at low load: send bulk to "
                         "/predict."),
    "/labels": ("Send ground-truth labels for answered requests",
                "Each label names the request_id an answer carried and the record's position in its request; "
                "they are stored for monitoring. Refused labels are counted and named in problems."),
    "/readyz": ("Readiness: the model is loaded", "200 once the service can answer, 503 before."),
    "/livez": ("Liveness", "200 while the server process runs."),
    "/healthz": ("Health (as /livez)", "200 while the server process runs."),
    "/metrics": ("Prometheus metrics",
                 "BentoML's request counts and latencies by endpoint and status, and the model's own: "
                 "mlops_model_info, mlops_predictions_total by class (classifiers), mlops_prediction_value "
                 "(regressors), mlops_requests_refused_total by column, mlops_contract_warnings_total and the "
                 "prediction log's mlops_prediction_log_*_total."),
}  # fmt: skip


class OpenAPIDocs:
    """Serve ``/docs.json`` (BentoML's document with the model's schemas) and ``/docs`` (Swagger)."""

    def __init__(self, app: App, service: Any) -> None:
        self.app = app
        self.service = service  # the bentoml.Service, whose openapi_spec BentoML builds
        self._document: bytes | None = None
        self._page: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            if scope["path"] == "/docs.json":
                return await _send(send, self._openapi(), b"application/json")
            if scope["path"] in ("/docs", "/"):  # BentoML's index page loads Google Tag Manager
                return await _send(send, self._swagger_page(), b"text/html; charset=utf-8")
        await self.app(scope, receive, send)

    def _openapi(self) -> bytes:
        if self._document is None:  # the model never changes in this process
            spec = self.service.openapi_spec.asdict()
            try:
                served = bentoml.get_current_service()
                spec = openapi_document(spec, served.check, served.classes, served.model_name, served.model_version)
            except Exception:  # the document must still be served, if only as BentoML made it
                logger.exception("Could not add the model's schemas to the OpenAPI document.")
            self._document = json.dumps(spec).encode()
        return self._document

    def _swagger_page(self) -> bytes:
        if self._page is None:
            try:
                served = bentoml.get_current_service()
                title = f"{served.model_name} {served.model_version}"
            except Exception:  # the page must still be served, titled with the service
                logger.exception("Could not read the served model's name for the docs page.")
                title = str(self.service.name)
            self._page = swagger_page(title).encode()
        return self._page


async def _send(send: Send, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def swagger_page(title: str) -> str:
    """The Swagger UI page on BentoML's bundled files: no tag manager, no validator badge, nothing fetched outside."""
    text = html.escape(title)
    return f"""<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>{text} — API</title>
    <link rel="stylesheet" type="text/css" href="./static_content/swagger-ui.css" />
    <link rel="icon" type="image/png" href="./static_content/favicon-light-32x32.png" sizes="32x32" />
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="./static_content/swagger-ui-bundle.js" charset="UTF-8"></script>
    <script>
      window.onload = function () {{
        window.ui = SwaggerUIBundle({{
          url: "./docs.json", dom_id: "#swagger-ui", deepLinking: true, validatorUrl: null,
          presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout",
        }});
      }};
    </script>
  </body>
</html>
"""


def openapi_document(
    spec: dict[str, Any],
    check: RequestCheck,
    classes: list[Any] | None,
    model_name: str | None = None,
    model_version: str | None = None,
) -> dict[str, Any]:
    """BentoML's OpenAPI ``spec`` with the model's title and version, the records' schema, the label type,
    each endpoint's description and the error answers."""
    spec = json.loads(json.dumps(spec))  # a copy, with the status codes as JSON has them (strings)
    spec["info"] = _info(spec.get("info", {}), check, classes, model_name, model_version)
    for tag in spec.get("tags", []):
        if tag.get("name") == "Service APIs":
            tag["description"] = "The model's endpoints."
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
        operation["requestBody"]["required"] = True  # no body is a 400, not a valid request
        content = operation["requestBody"]["content"]["application/json"]
        body = _resolved(spec, content["schema"])
        body.setdefault("properties", {})["records"] = records
        body["required"] = ["records"]
        content["example"] = example
        _label_answers(spec, operation["responses"]["200"]["content"]["application/json"]["schema"], classes)
        operation["responses"].update(_error_responses(_BATCHED_ERRORS if path == "/predict_batched" else _ERRORS))
    labels = spec.get("paths", {}).get("/labels", {}).get("post")
    if labels is not None:
        _labels_body(spec, labels, classes)
    spec.setdefault("paths", {})["/arrow/predict"] = _arrow_path(check, classes)
    _describe_endpoints(spec)
    spec.setdefault("components", {}).setdefault("schemas", {})["Error"] = {
        "type": "object",
        "title": "Error",
        "required": ["error"],
        "properties": {"error": {"type": "string", "description": "What is wrong and how to fix it."}},
    }
    return spec


def _info(
    info: dict[str, Any], check: RequestCheck, classes: list[Any] | None, name: str | None, version: str | None
) -> dict[str, Any]:
    """The document's title and version: the served model's, in place of BentoML's "None" and its badges."""
    if name is None:
        return {"title": info.get("title", "Predictor"), "version": str(version or "unknown")}
    task = "regressor" if classes is None else f"classifier of {len(classes)} classes: {', '.join(map(str, classes))}"
    description = (
        f"The **{name}** model, registry version **{version}**: a {task}. It takes {len(check.names)} features "
        f"(from {check.source}), listed with their types, ranges and categories in each request body below.\n\n"
        "Score JSON records with `POST /predict` (bulk) or `POST /predict_batched` (one answer per record), "
        "an Arrow IPC stream with `POST /arrow/predict`, and send ground truth later with `POST /labels`. "
        "Every refused request is answered as `{\"error\": \"...\"}` naming what is wrong: 400 (not the "
        "expected shape), 401 (API key), 413 (too large), 415 (not JSON), 422 (values the model cannot score, "
        "by column), 503 (batching endpoint overloaded). `GET /metrics` exports Prometheus metrics."
    )
    return {"title": f"{name} {version}", "version": str(version), "description": description}


def _describe_endpoints(spec: dict[str, Any]) -> None:
    """A summary and description on every endpoint (a docstring BentoML found is kept); /readyz's 503."""
    for path, (summary, description) in _ENDPOINTS.items():
        for operation in spec.get("paths", {}).get(path, {}).values():
            operation["summary"] = summary
            if not operation.get("description") or "Service APIs" not in operation.get("tags", ()):
                operation["description"] = description
    readyz = spec.get("paths", {}).get("/readyz", {}).get("get")
    if readyz is not None:
        readyz.setdefault("responses", {})["503"] = {"description": "The service is not ready yet (the model loads)."}


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
    operation["requestBody"]["required"] = True
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
            "requestBody": {"required": True, "content": {ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}}}},
            "responses": {
                "200": {
                    "description": "The predictions as an Arrow IPC stream.",
                    "content": {ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}}},
                },
                **_error_responses(),
            },
        }
    }
