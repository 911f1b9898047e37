"""An ASGI middleware in front of the prediction endpoints: API key, body size, client errors.

The first two checks run before BentoML parses the body, so a refused request costs nothing:

* the API key, when the variable named by ``MLOPS_API_KEY_ENV`` (default
  ``MLOPS_API_KEY``) is set, is required on every path but health, metrics and
  documentation (``OPEN_PATHS``), as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``,
  compared in constant time (401 otherwise);
* a body over ``MLOPS_MAX_REQUEST_BYTES`` is refused with 413, whether it announces its
  length or arrives chunked.

Every client error (4xx) on those paths leaves as ``{"error": "..."}`` and is logged
once, at INFO, in one line: BentoML answers its own 4xx as ``[{"error": ...}]`` (or
pydantic's details) and logs each at ERROR with a traceback, which
:func:`quiet_client_errors` turns off.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mlops.proxy import read_limited_body

__all__ = ["OPEN_PATHS", "RequestGuard", "quiet_client_errors"]

logger = logging.getLogger("mlops.serving")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Open by design: probes and scrapers carry no key. Everything else needs it.
OPEN_PATHS = frozenset({"/", "/readyz", "/livez", "/healthz", "/metrics", "/docs", "/docs.json", "/schema.json"})
_OPEN_PREFIXES = ("/static_content/", "/assets/")
_DEFAULT_MAX_BYTES = 32 * 1024 * 1024
# BentoML's log_exception() logs every refused request here, with its traceback.
_BENTOML_ERROR_LOGGER = "bentoml._internal.server.http_app"
_MAX_LOGGED_CHARS = 300


class RequestGuard:
    """Refuse unauthenticated (401) or oversized (413) requests; answer and log client errors alike."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app
        key = os.environ.get(os.environ.get("MLOPS_API_KEY_ENV", "MLOPS_API_KEY"), "")
        self.api_key = key.encode() or None
        self.max_bytes = int(os.environ.get("MLOPS_MAX_REQUEST_BYTES", _DEFAULT_MAX_BYTES))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or scope["path"].startswith(_OPEN_PREFIXES):
            return await self.app(scope, receive, send)
        send = _client_errors(scope, send)
        headers = {name.decode("latin-1").lower(): value for name, value in scope["headers"]}
        if self.api_key and not self._authorized(headers):
            return await _refuse(send, 401, "A valid API key is required: send 'Authorization: Bearer KEY'.")
        length = headers.get("content-length")
        if length is not None and int(length) > self.max_bytes:
            return await _refuse(send, 413, self._too_large())
        if length is None:
            body = await read_limited_body(receive, self.max_bytes)
            if body is None:
                return await _refuse(send, 413, self._too_large())
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    def _authorized(self, headers: dict[str, bytes]) -> bool:
        given = headers.get("x-api-key") or headers.get("authorization", b"").removeprefix(b"Bearer ")
        return hmac.compare_digest(given, self.api_key or b"")

    def _too_large(self) -> str:
        return f"The request body is over {self.max_bytes} bytes; split it into smaller requests."


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


def _drop_client_error(record: logging.LogRecord) -> bool:
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError

    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, ValidationError):
        return False  # answered 400
    return not (isinstance(error, BentoMLException) and 400 <= int(error.error_code) < 500)


def _client_errors(scope: Scope, send: Send) -> Send:
    """``send``, but a 4xx answer is rewritten as ``{"error": message}`` and logged in one line."""
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
        logger.info("%s %s refused %d: %s", scope.get("method"), scope["path"], start["status"], text[:_MAX_LOGGED_CHARS])
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
