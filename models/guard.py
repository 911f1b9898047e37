"""An ASGI middleware in front of the prediction endpoints: API key and body size.

Both checks run before BentoML parses the body, so a refused request costs nothing:

* the API key, when the variable named by ``MLOPS_API_KEY_ENV`` (default
  ``MLOPS_API_KEY``) is set, is required on every path but health, metrics and
  documentation (``OPEN_PATHS``), as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``,
  compared in constant time (401 otherwise);
* a body over ``MLOPS_MAX_REQUEST_BYTES`` is refused with 413, whether it announces its
  length or arrives chunked.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mlops.proxy import read_limited_body

__all__ = ["OPEN_PATHS", "RequestGuard"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Open by design: probes and scrapers carry no key. Everything else needs it.
OPEN_PATHS = frozenset({"/", "/readyz", "/livez", "/healthz", "/metrics", "/docs", "/docs.json", "/schema.json"})
_OPEN_PREFIXES = ("/static_content/", "/assets/")
_DEFAULT_MAX_BYTES = 32 * 1024 * 1024


class RequestGuard:
    """Refuse unauthenticated (401) or oversized (413) requests to the predict endpoints."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app
        key = os.environ.get(os.environ.get("MLOPS_API_KEY_ENV", "MLOPS_API_KEY"), "")
        self.api_key = key.encode() or None
        self.max_bytes = int(os.environ.get("MLOPS_MAX_REQUEST_BYTES", _DEFAULT_MAX_BYTES))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or scope["path"].startswith(_OPEN_PREFIXES):
            return await self.app(scope, receive, send)
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
