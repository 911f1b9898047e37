"""The swap proxy: a small HTTP reverse proxy that gives a deployment one stable address.

``mlops deploy`` runs it under uvicorn on ``serving.port`` and points it at one BentoML
process at a time. Traffic moves when the deployer rewrites the upstream file (an atomic
rename); the proxy notices on its next request, so requests already forwarded finish on
the old process while new ones go to the new one. ``GET /-/proxy`` reports the upstream
and the requests in flight per upstream, which is how the deployer knows when the old
process is drained. Every other path is forwarded as is (``/predict``, ``/readyz``,
``/metrics``…). With ``replicas`` in the upstream file (``serving.instances`` > 1) requests
are spread round robin over the instances, and a request whose connection fails (a
killed instance) is sent again to the next one. Bodies are small (the service refuses large ones with 413), so
requests and responses are buffered rather than streamed.

**Shadow mode.** When the upstream file also names a ``shadow`` server (``mlops deploy
--shadow VERSION``), every ``/predict`` (and ``/arrow/predict``) the champion answered
with 200 is copied to it *after* the client has its answer: the request id and the raw
body go into a bounded queue (never parsed here), and one background task sends the
queued JSON copies in batches to ``/shadow/predict`` (:mod:`mlops.service.shadow`), the batch
body composed by byte concatenation; Arrow copies go one by one to ``/shadow/arrow``.
Batches are large because the shadow's cost is mostly one model call per batch, and every
CPU millisecond it takes is one the clients' requests compete for. A full queue drops
copies (counted), a shadow that fails or is slow only loses copies: clients never wait
for it. ``GET /-/proxy`` reports the shadow's sent, dropped, failed
and refused copies. The shadow has the service's API-key guard; the proxy sends the key
in the variable ``serving.api_key_env`` names, from its own environment.

Its settings (the upstream file, ``serving.max_request_bytes``, ``serving.api_key_env``)
arrive as one value, :class:`mlops.service.settings.ProxySettings`, in the variable
``MLOPS_PROXY_SETTINGS`` (what :func:`mlops.service.settings.proxy_settings` builds and
``mlops deploy`` passes). Run by hand::

    MLOPS_PROXY_SETTINGS='{"upstream_file": ".mlops/deploy/upstream.json", "max_request_bytes": 33554432, \\
        "api_key_env": "MLOPS_API_KEY"}' python -m uvicorn --factory mlops.proxy:create_app --port 3000
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter, deque
from pathlib import Path
from typing import Any

import aiohttp

from mlops.service.asgi import SMOKE_TEST_HEADER, Receive, Scope, Send, read_limited_body
from mlops.service.settings import ProxySettings

__all__ = [
    "SHADOW_ARROW_PATH",
    "SHADOW_PATH",
    "STATUS_PATH",
    "SwapProxy",
    "create_app",
    "write_upstream",
]

STATUS_PATH = "/-/proxy"
SHADOW_PATH = "/shadow/predict"  # JSON copies, batched (mlops/service/shadow.py)
SHADOW_ARROW_PATH = "/shadow/arrow"  # Arrow copies, one per request: they are bulk already
# Connection-level headers are the proxy's own business on each side (RFC 9110 §7.6.1).
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "host"}
)
_DROP_RESPONSE = _HOP_BY_HOP | {"content-length", "content-encoding"}
# Only the deployer, talking to a backend directly, may keep requests out of the log.
_DROP_REQUEST = _HOP_BY_HOP | {"content-length", SMOKE_TEST_HEADER}
# The client paths whose answered requests the shadow gets a copy of, and the copy's kind.
_SHADOWED = {"/predict": "json", "/arrow/predict": "arrow"}
_BATCH_OPEN, _BATCH_SEP, _BATCH_CLOSE = b'{"requests":[', b",", b"]}"
_Copy = tuple[str, str, bytes, float]  # kind ("json" or "arrow"), request id, raw body, loop time queued


class _TooLarge(Exception):
    pass


def write_upstream(path: Path, url: str | None, shadow: str | None = None, replicas: list[str] | None = None) -> None:
    """Point the proxy at ``url`` and ``replicas`` (None: answer 503) and copies at ``shadow``, with an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"upstream": url, "replicas": replicas or [], "shadow": shadow}), encoding="utf-8")
    os.replace(temporary, path)


def create_app() -> SwapProxy:
    """The uvicorn factory: the settings come from ``MLOPS_PROXY_SETTINGS``, parsed once (one line if they are bad)."""
    return SwapProxy(ProxySettings.from_environment_or_exit())


class SwapProxy:
    """An ASGI app forwarding each request to the upstream named in the settings' ``upstream_file``.

    ``shadow_*`` bound what shadow mode may hold and send: at most ``shadow_queue``
    copies and ``shadow_queue_bytes`` bytes wait; a batch is sent when
    ``shadow_batch`` copies wait or ``shadow_linger`` seconds after its first one
    (200 ms: 4x fewer model calls in the shadow than 50 ms, measured to matter at 8 clients).
    """

    def __init__(
        self,
        settings: ProxySettings,
        *,
        shadow_queue: int = 2_000,
        shadow_queue_bytes: int = 64 * 1024 * 1024,
        shadow_batch: int = 256,
        shadow_linger: float = 0.2,
    ) -> None:
        self.upstream_file = settings.upstream_file
        self.upstream: str | None = None
        self.upstreams: list[str] = []  # the upstream, then its replicas: the instances requests are spread over
        self._next = 0
        self._failed_at: dict[str, float] = {}  # an instance whose connection failed lately is tried last
        self.shadow: str | None = None
        self.in_flight: Counter[str] = Counter()
        self.max_bytes = settings.max_request_bytes
        self._stamp: tuple[int, int] | None = None
        self._sessions: dict[str, Any] = {}
        self._copies = _ShadowCopies(
            shadow_queue, shadow_queue_bytes, shadow_batch, shadow_linger, self.max_bytes, _auth_headers(settings.api_key_env)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":
            return
        self._refresh()
        if scope["path"] == STATUS_PATH:
            status = {
                "pid": os.getpid(),  # the deployer's proof that this proxy is the one it started
                "upstream": self.upstream,
                "upstreams": self.upstreams,
                "in_flight": {k: v for k, v in self.in_flight.items() if v},
                "shadow": self._copies.status(),
            }
            return await _answer(send, 200, status)
        if not self.upstreams:
            return await _answer(send, 503, {"error": "No model version is deployed yet; run `mlops deploy`."})
        order = self._order()
        # Counted before the first await, so the deployer never stops a process that
        # a request has already been routed to.
        self.in_flight[order[0]] += 1
        try:
            await self._forward(order, scope, receive, send)
        finally:
            self.in_flight[order[0]] -= 1
            await self._retire(order[0])

    def _order(self) -> list[str]:
        """The instances to try, round robin; those whose connection failed in the last second go last."""
        self._next = (self._next + 1) % len(self.upstreams)
        turn = self.upstreams[self._next :] + self.upstreams[: self._next]
        now = asyncio.get_running_loop().time()
        recent = {url for url, when in self._failed_at.items() if now - when < 1.0}
        return [url for url in turn if url not in recent] + [url for url in turn if url in recent]

    async def _forward(self, order: list[str], scope: Scope, receive: Receive, send: Send) -> None:
        # Bounded before it is buffered: one huge body must not take the endpoint down.
        limit = self.max_bytes
        try:
            body = await _read_body(receive, limit, scope)
        except _TooLarge:
            await _answer(send, 413, {"error": f"Request body over {limit} bytes; send smaller batches."})
            return
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        headers = [(k, v) for k, v in headers if k.lower() not in _DROP_REQUEST]
        path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        if scope["query_string"]:
            path += "?" + scope["query_string"].decode("latin-1")
        # A connection that fails (a killed instance, a stale pooled connection, an answer cut off)
        # is tried again on the next instance, and once more on the same one when it is alone:
        # the client never sees it.
        attempts = order + order[:1] if len(order) == 1 else order
        for index, upstream in enumerate(attempts):
            if index:
                self.in_flight[upstream] += 1
            try:
                session = self._session(upstream)
                async with session.request(scope["method"], upstream + path, headers=headers, data=body) as response:
                    content = await response.read()
                    kept = [(k, v) for k, v in response.headers.items() if k.lower() not in _DROP_RESPONSE]
                    status = response.status
                    request_id = response.headers.get("x-request-id")
                break
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:  # cut mid-answer too
                self._failed_at[upstream] = asyncio.get_running_loop().time()
                if index == len(attempts) - 1:
                    return await _answer(send, 502, {"error": f"The model server at {upstream} failed: {exc!r}"})
            except aiohttp.ClientError as exc:
                return await _answer(send, 502, {"error": f"The model server at {upstream} failed: {exc!r}"})
            finally:
                if index:
                    self.in_flight[upstream] -= 1
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in kept]
        raw.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": content})
        # After the client has its answer: the copy costs it nothing but a queue append.
        kind = _SHADOWED.get(scope["path"])
        shadowed = self.shadow is not None and kind and status == 200 and request_id and scope["method"] == "POST"
        if kind and request_id and shadowed and not any(name.lower() == "content-encoding" for name, _ in headers):  # raw JSON or Arrow only
            self._copies.put(kind, request_id, body)

    def _refresh(self) -> None:
        # A stat per request (microseconds) is what makes the swap take effect at once.
        try:
            stat = self.upstream_file.stat()
        except FileNotFoundError:
            self.upstream, self.upstreams, self._stamp = None, [], None
            self._set_shadow(None)
            return
        stamp = (stat.st_mtime_ns, stat.st_ino)
        if stamp != self._stamp:
            self._stamp = stamp
            pointed = json.loads(self.upstream_file.read_text(encoding="utf-8"))
            self.upstream = pointed["upstream"]
            self.upstreams = [url for url in [self.upstream, *pointed.get("replicas", [])] if url]
            self._set_shadow(pointed.get("shadow"))  # files written before shadow mode have no key

    def _set_shadow(self, url: str | None) -> None:
        if url != self.shadow:
            self.shadow = url
            self._copies.point_at(url)

    def _session(self, upstream: str) -> Any:
        if upstream not in self._sessions:
            connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=30)
            timeout = aiohttp.ClientTimeout(total=300)
            self._sessions[upstream] = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)
        return self._sessions[upstream]

    async def _retire(self, upstream: str) -> None:
        """Close a replaced upstream's connections once its last request is answered."""
        if upstream not in self.upstreams and not self.in_flight[upstream] and upstream in self._sessions:
            await self._sessions.pop(upstream).close()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for session in self._sessions.values():
                    await session.close()
                await self._copies.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


class _ShadowCopies:
    """The bounded queue of copies for the shadow and the one task that sends them.

    Copies are ``(kind, request_id, raw body, time queued)``; nothing is parsed. A copy
    waits at most ``linger`` seconds for others to join its batch. One batch is in flight at
    a time, so a slow shadow makes batches larger, then fills the queue, then loses
    copies: it never costs the clients anything.
    """

    def __init__(
        self, max_copies: int, max_bytes: int, batch: int, linger: float, max_request_bytes: int, headers: dict[str, str]
    ) -> None:
        self.max_copies, self.max_bytes, self.batch, self.linger = max_copies, max_bytes, batch, linger
        # A batch must pass the shadow's own body limit (the same as the champion's).
        self.max_batch_bytes = max_request_bytes
        self.url: str | None = None
        self.queue: deque[_Copy] = deque()
        self.queued_bytes = 0
        self.counts: Counter[str] = Counter()
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._full: asyncio.Event | None = None
        self._session: Any = None
        self._headers = headers  # the API key the shadow's guard asks for

    def point_at(self, url: str | None) -> None:
        """A new shadow (or none): queued copies are dropped and the counts start again."""
        self.url = url
        self.queue.clear()
        self.queued_bytes = 0
        self.counts = Counter()
        self.last_error = None

    def put(self, kind: str, request_id: str, body: bytes) -> None:
        """Queue one copy, or count it dropped when the queue (copies or bytes) is full."""
        if len(self.queue) >= self.max_copies or self.queued_bytes + len(body) > self.max_bytes:
            self.counts["dropped"] += 1
            return
        loop = asyncio.get_running_loop()
        self.queue.append((kind, request_id, body, loop.time()))
        self.queued_bytes += len(body)
        wake, full = self._wake, self._full
        if self._task is None or self._task.done() or wake is None or full is None:
            wake, full = self._wake, self._full = asyncio.Event(), asyncio.Event()
            self._task = loop.create_task(self._send_forever())
        wake.set()
        if len(self.queue) >= self.batch:
            full.set()

    def status(self) -> dict[str, Any] | None:
        if self.url is None:
            return None
        counts = {name: self.counts[name] for name in ("sent", "dropped", "failed", "refused")}
        return {"upstream": self.url, "queued": len(self.queue), **counts, "last_error": self.last_error}

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._session is not None:
            await self._session.close()

    async def _send_forever(self) -> None:
        if self._wake is None or self._full is None:
            raise RuntimeError("the shadow sender runs only once put() has started it")
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            waited = loop.time() - self.queue[0][3] if self.queue else 0.0
            if len(self.queue) < self.batch and waited < self.linger:
                try:  # let copies gather: one call scores them all
                    await asyncio.wait_for(self._full.wait(), self.linger - waited)
                except TimeoutError:
                    pass
            url, taken = self.url, self._take()
            self._full.clear()
            if not self.queue:
                self._wake.clear()
            if url is None or not taken:
                continue
            try:
                await self._deliver(url, taken)
            except Exception as exc:  # noqa: BLE001 — the shadow's failures are counted, never raised
                if url == self.url:
                    self.counts["failed"] += len(taken)
                    self.last_error = f"{type(exc).__name__}: {exc}"[:300]

    def _take(self) -> list[_Copy]:
        """The oldest copies: Arrow ones alone, JSON ones up to ``batch`` copies and the body limit."""
        taken: list[_Copy] = []
        size = len(_BATCH_OPEN) + len(_BATCH_CLOSE)
        while self.queue and len(taken) < self.batch:
            copy = self.queue[0]
            kind, request_id, body = copy[:3]
            wrapped = len(body) + len(request_id) + 32
            if taken and (kind == "arrow" or taken[0][0] == "arrow" or size + wrapped > self.max_batch_bytes):
                break
            self.queue.popleft()
            self.queued_bytes -= len(body)
            if kind == "json" and size + wrapped > self.max_batch_bytes:
                self.counts["dropped"] += 1  # too large for the shadow to accept, even alone
                continue
            taken.append(copy)
            size += wrapped
        return taken

    async def _deliver(self, url: str, copies: list[_Copy]) -> None:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=60)
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4), timeout=timeout)
        if copies[0][0] == "arrow":
            _, request_id, body, _ = copies[0]
            headers = {**self._headers, "content-type": "application/vnd.apache.arrow.stream", "x-request-id": request_id}
            path = SHADOW_ARROW_PATH
        else:
            body = _batch_body(copies)
            headers = {**self._headers, "content-type": "application/json"}
            path = SHADOW_PATH
        async with self._session.post(url + path, data=body, headers=headers) as response:
            answer = await response.read()
            if response.status != 200:
                raise _ShadowRefused(f"HTTP {response.status}")
        if url != self.url:  # the shadow changed meanwhile: these counts are the old one's
            return
        refused = int(json.loads(answer).get("refused", 0))
        self.counts["sent"] += len(copies) - refused
        self.counts["refused"] += refused


class _ShadowRefused(Exception):
    pass


def _batch_body(copies: list[_Copy]) -> bytes:
    """``{"requests":[{"request_id":"…","body":<raw body>},…]}`` by concatenation: no JSON parse here."""
    parts = [
        b'{"request_id":' + json.dumps(request_id).encode() + b',"body":' + body + b"}" for _, request_id, body, _ in copies
    ]
    return _BATCH_OPEN + _BATCH_SEP.join(parts) + _BATCH_CLOSE


def _auth_headers(api_key_env: str) -> dict[str, str]:
    """The API key the model servers were started with (in the variable ``api_key_env`` names), if any."""
    key = os.environ.get(api_key_env, "")
    return {"authorization": f"Bearer {key}"} if key else {}


async def _read_body(receive: Receive, limit: int, scope: Scope) -> bytes:
    declared = dict(scope["headers"]).get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    body = await read_limited_body(receive, limit)
    if body is None:
        raise _TooLarge
    return body


async def _answer(send: Send, status: int, payload: object) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
