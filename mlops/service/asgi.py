"""What the swap proxy and the service's middlewares share: the ASGI types, the bounded body read, the smoke-test header.

Standard library only: the proxy (:mod:`mlops.proxy`) is on every request's path and the
watchdog restarts it within a second; it imports this module, never the guard or a tool.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["SMOKE_TEST_HEADER", "App", "Message", "Receive", "Scope", "Send", "read_limited_body"]

# The deployer's smoke test sends it to a backend directly: answered, not logged (reference rows would
# hide drift). The proxy drops it from outside clients.
SMOKE_TEST_HEADER = "x-mlops-smoke-test"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


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
