"""The swap proxy: a small HTTP reverse proxy that gives a deployment one stable address.

``mlops deploy`` runs it under uvicorn on ``serving.port`` and points it at one BentoML
process at a time. Traffic moves when the deployer rewrites the upstream file (an atomic
rename); the proxy notices on its next request, so requests already forwarded finish on
the old process while new ones go to the new one. ``GET /-/proxy`` reports the upstream
and the requests in flight per upstream, which is how the deployer knows when the old
process is drained. Every other path is forwarded as is (``/predict``, ``/readyz``,
``/metrics``…). Bodies are small (the service refuses large ones with 413), so
requests and responses are buffered rather than streamed.

Run by hand::

    MLOPS_PROXY_UPSTREAM_FILE=.mlops/deploy/upstream.json \\
        python -m uvicorn --factory mlops.proxy:create_app --port 3000
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

__all__ = ["SwapProxy", "create_app", "read_limited_body", "write_upstream"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

STATUS_PATH = "/-/proxy"
# Connection-level headers are the proxy's own business on each side (RFC 9110 §7.6.1).
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "host"}
)
_DROP_RESPONSE = _HOP_BY_HOP | {"content-length", "content-encoding"}
# Only the deployer, talking to a backend directly, may keep requests out of the log.
_DROP_REQUEST = _HOP_BY_HOP | {"content-length", "x-mlops-smoke-test"}
_DEFAULT_MAX_BYTES = 32 * 1024 * 1024


class _TooLarge(Exception):
    pass


def write_upstream(path: Path, url: str | None) -> None:
    """Point the proxy at ``url`` (None: answer 503) with an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"upstream": url}), encoding="utf-8")
    os.replace(temporary, path)


def create_app() -> SwapProxy:
    """The uvicorn factory: the upstream file comes from ``MLOPS_PROXY_UPSTREAM_FILE``."""
    return SwapProxy(Path(os.environ["MLOPS_PROXY_UPSTREAM_FILE"]))


class SwapProxy:
    """An ASGI app forwarding each request to the upstream named in ``upstream_file``."""

    def __init__(self, upstream_file: Path) -> None:
        self.upstream_file = upstream_file
        self.upstream: str | None = None
        self.in_flight: Counter[str] = Counter()
        self._stamp: tuple[int, int] | None = None
        self._sessions: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":
            return
        self._refresh()
        if scope["path"] == STATUS_PATH:
            status = {"upstream": self.upstream, "in_flight": {k: v for k, v in self.in_flight.items() if v}}
            return await _answer(send, 200, status)
        upstream = self.upstream
        if upstream is None:
            return await _answer(send, 503, {"error": "No model version is deployed yet; run `mlops deploy`."})
        # Counted before the first await, so the deployer never stops a process that
        # a request has already been routed to.
        self.in_flight[upstream] += 1
        try:
            await self._forward(upstream, scope, receive, send)
        finally:
            self.in_flight[upstream] -= 1
            await self._retire(upstream)

    async def _forward(self, upstream: str, scope: Scope, receive: Receive, send: Send) -> None:
        import aiohttp

        # Bounded before it is buffered: one huge body must not take the endpoint down.
        limit = int(os.environ.get("MLOPS_MAX_REQUEST_BYTES", _DEFAULT_MAX_BYTES))
        try:
            body = await _read_body(receive, limit, scope)
        except _TooLarge:
            await _answer(send, 413, {"error": f"Request body over {limit} bytes; send smaller batches."})
            return
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        headers = [(k, v) for k, v in headers if k.lower() not in _DROP_REQUEST]
        target = upstream + (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        try:
            session = self._session(upstream)
            async with session.request(scope["method"], target, headers=headers, data=body) as response:
                content = await response.read()
                kept = [(k, v) for k, v in response.headers.items() if k.lower() not in _DROP_RESPONSE]
                status = response.status
        except aiohttp.ClientError as exc:
            return await _answer(send, 502, {"error": f"The model server at {upstream} failed: {exc!r}"})
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in kept]
        raw.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": content})

    def _refresh(self) -> None:
        # A stat per request (microseconds) is what makes the swap take effect at once.
        try:
            stat = self.upstream_file.stat()
        except FileNotFoundError:
            self.upstream, self._stamp = None, None
            return
        stamp = (stat.st_mtime_ns, stat.st_ino)
        if stamp != self._stamp:
            self._stamp = stamp
            self.upstream = json.loads(self.upstream_file.read_text(encoding="utf-8"))["upstream"]

    def _session(self, upstream: str) -> Any:
        import aiohttp

        if upstream not in self._sessions:
            connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=30)
            timeout = aiohttp.ClientTimeout(total=300)
            self._sessions[upstream] = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)
        return self._sessions[upstream]

    async def _retire(self, upstream: str) -> None:
        """Close a replaced upstream's connections once its last request is answered."""
        if upstream != self.upstream and not self.in_flight[upstream] and upstream in self._sessions:
            await self._sessions.pop(upstream).close()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for session in self._sessions.values():
                    await session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _read_body(receive: Receive, limit: int, scope: Scope) -> bytes:
    declared = dict(scope["headers"]).get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    body = await read_limited_body(receive, limit)
    if body is None:
        raise _TooLarge
    return body


async def read_limited_body(receive: Receive, limit: int) -> bytes | None:
    """The whole ASGI request body, or None as soon as it passes ``limit`` bytes."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _answer(send: Send, status: int, payload: object) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
