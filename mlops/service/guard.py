"""An ASGI middleware in front of the prediction endpoints: API key, body size, client errors.

These checks run before BentoML parses the body, so a refused request costs next to nothing:

* the API key, when the variable ``serving.api_key_env`` names is set, is required on
  every path but health, metrics and documentation (``OPEN_PATHS``), as
  ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``, compared in constant time (401 otherwise);
* a body over ``serving.max_request_bytes`` is refused with 413, whether it announces its
  length or arrives chunked;
* on the JSON endpoints (``JSON_PATHS``), a body that is not ``application/json`` is
  refused with 415 (BentoML would parse a multipart or form body as something else),
  and a JSON body holding more objects, nesting or values than the limits
  (:class:`mlops.request_check.BodyLimits`: ``serving.max_records``,
  ``serving.max_json_depth``, ``serving.max_json_values``) with 413, before it is parsed.

Every limit comes from the service's settings (:class:`mlops.service.settings.ServiceSettings`),
handed to the guard when the service adds it.

Every client error (4xx) on those paths leaves as ``{"error": "..."}`` and is logged
once, at INFO, in one line: BentoML answers its own 4xx as ``[{"error": ...}]`` (or
pydantic's details) and logs each at ERROR with a traceback, which
:func:`quiet_client_errors` turns off; a ``refused`` callback, when given, is told each
one (the service counts its 422s by column in ``/metrics``). :func:`rotate_logs` keeps the server log to a
size (``serving.log_max_bytes``, ``serving.log_backups``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import logging.handlers
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bentoml.exceptions import BentoMLException
from pydantic import ValidationError

from mlops.logs import JsonLineFormatter, log_fields
from mlops.request_check import BodyLimits, RequestRefused
from mlops.service.asgi import SMOKE_TEST_HEADER, App, Message, Receive, Scope, Send, read_limited_body

if TYPE_CHECKING:
    from mlops.service.settings import ServiceSettings

__all__ = [
    "JSON_PATHS", "LABELS_PER_REQUEST", "OPEN_PATHS", "SMOKE_TEST_HEADER", "RequestGuard", "body_limits",
    "quiet_client_errors", "rotate_logs",
]  # fmt: skip

logger = logging.getLogger("mlops.serving")

Refused = Callable[[str, int, str], None]

# Open by design: probes and scrapers carry no key. Everything else needs it.
OPEN_PATHS = frozenset({"/", "/readyz", "/livez", "/healthz", "/metrics", "/docs", "/docs.json", "/schema.json"})
_OPEN_PREFIXES = ("/static_content/", "/assets/")
# The endpoints whose body BentoML parses as JSON, and what each takes (a list of objects).
JSON_PATHS = {"/predict": "records", "/predict_batched": "records", "/labels": "labels"}
LABELS_PER_REQUEST = 100_000  # POST /labels: more is split, or sent as a file (mlops labels add)
_INLINE_CHECK_BYTES = 1024 * 1024  # a smaller body is counted in about a millisecond, on the loop
_JSON_TYPES = ("application/json", "text/json")  # and application/*+json; no content type is JSON to BentoML
# BentoML's log_exception() logs every refused request here, with its traceback.
_BENTOML_ERROR_LOGGER = "bentoml._internal.server.http_app"
_MAX_LOGGED_CHARS = 300


class RequestGuard:
    """Refuse unauthenticated (401) or oversized (413) requests; answer and log client errors alike."""

    def __init__(self, app: App, settings: ServiceSettings, refused: Refused | None = None) -> None:
        self.app = app
        self.refused = refused  # told (path, status, message) of every client error, for /metrics
        key = os.environ.get(settings.api_key_env, "")  # a secret: its variable is named, never passed
        self.api_key = key.encode() or None
        self.max_bytes = settings.max_request_bytes
        self.limits = {path: body_limits(settings, what) for path, what in JSON_PATHS.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or scope["path"].startswith(_OPEN_PREFIXES):
            return await self.app(scope, receive, send)
        send = _client_errors(scope, send, self.refused)
        headers = {name.decode("latin-1").lower(): value for name, value in scope["headers"]}
        if self.api_key and not self._authorized(headers):
            return await _refuse(send, 401, "A valid API key is required: send 'Authorization: Bearer KEY'.")
        length = headers.get("content-length")
        if length is not None and not (length.isdigit() and int(length) <= self.max_bytes):
            return await _refuse(send, 413 if length.isdigit() else 400, self._too_large(length))
        limits = self.limits.get(scope["path"]) if scope.get("method") == "POST" else None
        if limits is not None and not _is_json(headers.get("content-type")):
            message = f"The body must be JSON: send it with 'Content-Type: application/json' (not {_shown(headers)})."
            return await _refuse(send, 415, message)
        if length is None or limits is not None:
            body = await read_limited_body(receive, self.max_bytes)
            if body is None:
                return await _refuse(send, 413, self._too_large())
            if limits is not None:
                try:  # a large body's count takes up to a second: in a thread, the loop answers others meanwhile
                    await asyncio.to_thread(limits.check, body) if len(body) > _INLINE_CHECK_BYTES else limits.check(body)
                except RequestRefused as exc:
                    return await _refuse(send, exc.status, str(exc))
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    def _authorized(self, headers: dict[str, bytes]) -> bool:
        given = headers.get("x-api-key") or headers.get("authorization", b"").removeprefix(b"Bearer ")
        return hmac.compare_digest(given, self.api_key or b"")

    def _too_large(self, length: bytes | None = None) -> str:
        if length is not None and not length.isdigit():
            return f"The Content-Length header is not a number of bytes: {length[:20].decode('latin-1')!r}."
        return f"The request body is over {self.max_bytes} bytes; split it into smaller requests."


def body_limits(settings: ServiceSettings, what: str = "records") -> BodyLimits:
    """The limits a JSON body of ``what`` (records or labels) is checked against.

    ``serving.max_records`` records, or :data:`LABELS_PER_REQUEST` labels.
    """
    return BodyLimits(
        max_items=LABELS_PER_REQUEST if what == "labels" else settings.max_records,
        max_depth=settings.max_json_depth,
        max_values=settings.max_json_values,
        what=what,
    )


def _is_json(content_type: bytes | None) -> bool:
    if content_type is None:
        return True
    media = content_type.split(b";")[0].strip().lower().decode("latin-1")
    return media in _JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))


def _shown(headers: dict[str, bytes]) -> str:
    return repr(headers.get("content-type", b"").decode("latin-1")[:60])


def quiet_client_errors() -> None:
    """Stop BentoML logging refused requests (4xx) at ERROR with a traceback; the guard logs them.

    BentoML's endpoint wrapper logs every exception it answers, 422s included, with
    ~30 lines of traceback. Server errors (5xx) keep their traceback. Call it in the
    worker, after BentoML configured logging (its root logger only shows warnings).
    """
    logger.setLevel(logging.INFO)
    target = logging.getLogger(_BENTOML_ERROR_LOGGER)
    if _drop_client_error not in target.filters:
        target.addFilter(_drop_client_error)


def rotate_logs(settings: ServiceSettings, **fields: str) -> Path | None:
    """Send this worker's logs (BentoML's, uvicorn's, ours, the access log) to a size-rotated file.

    :func:`mlops.serving.start_server` points the server's output at
    ``state/logs/serve-PORT.log``, which nothing would ever cut: a fuzzer's refused
    requests grew one to 63 MB in 13 minutes. Called once the service has started
    (start-up errors stay in that file for ``start_server`` to read), this writes
    every handler's lines to the same file through one
    ``RotatingFileHandler`` (``serving.log_max_bytes``, ``serving.log_backups``) and the
    worker's own stdout and stderr after them. With ``logs.format: json``
    (the settings' ``log_format``) every handler writes JSON lines (:mod:`mlops.logs`) carrying
    ``fields`` (the model version) and the request id a line is about. The file, or None
    when the output is not a file (a terminal).
    """
    try:
        path = Path(os.readlink("/proc/self/fd/1"))
    except OSError:
        return None
    if not path.is_file():
        return None
    target = _RotatingLog(path, maxBytes=settings.log_max_bytes, backupCount=settings.log_backups, encoding="utf-8")
    logging.captureWarnings(True)  # warnings.warn prints to stderr otherwise
    formatter = JsonLineFormatter(**fields) if settings.log_format == "json" else None
    named = logging.root.manager.loggerDict.values()
    loggers = [logging.getLogger(), *(item for item in named if isinstance(item, logging.Logger))]
    for each in loggers:
        for handler in list(each.handlers):
            if type(handler) is logging.StreamHandler and getattr(handler.stream, "name", None) in ("<stdout>", "<stderr>"):
                each.removeHandler(handler)
                each.addHandler(_Into(target, handler, formatter))
    target.point_output_here()
    return path


class _RotatingLog(logging.handlers.RotatingFileHandler):
    """The rotated file; the worker's stdout and stderr follow it to each new file."""

    def point_output_here(self) -> None:
        if self.stream is None:
            self.stream = self._open()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd in (1, 2):
            os.dup2(self.stream.fileno(), fd)

    def doRollover(self) -> None:  # noqa: N802 (logging's naming)
        super().doRollover()
        self.point_output_here()


class _Into(logging.Handler):
    """One former console handler: its level, filters and format, written into the rotated file."""

    def __init__(self, target: _RotatingLog, former: logging.Handler, formatter: logging.Formatter | None = None) -> None:
        super().__init__(former.level)
        self.target, self.filters, self.formatter = target, list(former.filters), formatter or former.formatter

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = logging.makeLogRecord({"msg": self.format(record), "levelno": record.levelno})
        except Exception:
            self.handleError(record)
            return
        self.target.handle(line)


def _header(scope: Scope, name: bytes) -> str | None:
    """A request header's value (the client's own request id, say), cut short; None when absent."""
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value[:128].decode("latin-1")
    return None


def _drop_client_error(record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, ValidationError):
        return False  # answered 400
    return not (isinstance(error, BentoMLException) and 400 <= int(error.error_code) < 500)


def _client_errors(scope: Scope, send: Send, refused: Refused | None = None) -> Send:
    """``send``, but a 4xx answer is rewritten as ``{"error": message}``, logged in one line and told to ``refused``."""
    held: dict[str, Any] = {}

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
            held["start"], held["body"] = message, b""
            return
        if "start" not in held or message["type"] != "http.response.body":
            return await send(message)
        held["body"] += message.get("body", b"")
        if message.get("more_body", False):
            return
        start = held.pop("start")
        text = _error_text(held.pop("body"), scope["path"])
        with log_fields(request_id=_header(scope, b"x-request-id")):  # the client's id, not BentoML's trace
            logger.info("%s %s refused %d: %s", scope.get("method"), scope["path"], start["status"], text[:_MAX_LOGGED_CHARS])
        if refused is not None:
            try:
                refused(scope["path"], start["status"], text)
            except Exception:  # a metric must never cost the client its answer
                logger.exception("Could not count a refused request.")
        body = json.dumps({"error": text}).encode()
        headers = [(name, value) for name, value in start.get("headers", []) if name.lower() not in _BODY_HEADERS]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return wrapped


_BODY_HEADERS = (b"content-type", b"content-length")


# What each JSON endpoint takes, named when BentoML refuses a body before our code sees it.
_SHAPES = {"/labels": '{"labels": [{"request_id": "…", "record": 0, "label": …}, ...]}'}
_RECORDS_SHAPE = '{"records": [{...}, ...]}'


def _error_text(body: bytes, path: str = "/predict") -> str:
    """The message of any error body BentoML or we produce: ``{"error"}``, ``[{"error"}]`` or pydantic's details."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip() or "The request was refused."
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, dict):
        return str(data)
    details = data.get("detail")
    if isinstance(details, list) and details:  # BentoML's answer to a body pydantic refused
        shown = "; ".join(_detail(item) for item in details[:3])
        return f"The body must be JSON {_SHAPES.get(path, _RECORDS_SHAPE)}: {shown}."
    return str(data.get("error", data))


def _detail(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    where = ".".join(str(part) for part in item.get("loc", ()))
    return f"{where}: {item.get('msg', '')}" if where else str(item.get("msg", ""))


def _replay(body: bytes, original: Receive) -> Receive:
    """Hand the buffered body to the app, then pass on the server's own messages."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return await original()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
