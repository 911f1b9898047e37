"""Tell someone: drift detected, gate rejected, deployment rolled back, flow failed.

Alerts go to a webhook (a JSON POST, e.g. a chat incoming-webhook or an
on-call tool) and/or a saved Prefect notification block. Sending an alert never
fails the flow that sends it: a receiver that is down is logged and skipped.

Payload::

    {"event": "drift_detected", "message": "…", "details": {…}, "time": "2026-…Z", "source": "mlops"}
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import httpx
from prefect.blocks.core import Block

from mlops.config import ALERT_EVENTS, AlertsConfig
from mlops.environment import redact

__all__ = ["send_alert"]

logger = logging.getLogger(__name__)


def send_alert(config: AlertsConfig, event: str, message: str, details: dict[str, Any] | None = None) -> bool:
    """Deliver one alert to every configured channel; True when at least one accepted it."""
    if event not in ALERT_EVENTS:
        raise ValueError(f"unknown alert event {event!r}; expected one of {', '.join(ALERT_EVENTS)}")
    if event not in config.events:
        return False
    payload = {
        "event": event,
        "message": message,
        "details": details or {},
        "time": datetime.now(UTC).isoformat(),
        "source": "mlops",
    }
    delivered = False
    if config.webhook_url is not None:
        delivered |= _post_webhook(config.webhook_url.get_secret_value(), payload, config.timeout_seconds)
    if config.prefect_block:
        delivered |= _notify_block(config.prefect_block, f"[mlops] {event}: {message}")
    return delivered


def _post_webhook(url: str, payload: dict[str, Any], timeout: float) -> bool:
    try:
        response = httpx.post(url, json=payload, timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        # The URL may hold a token, and httpx's messages quote it: name the host and the status only.
        status = exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else None
        problem = f"HTTP {status}" if status is not None else type(exc).__name__
        logger.warning("Alert %s not delivered to webhook at %s: %s", payload["event"], httpx.URL(url).host, problem)
        return False
    return True


def _notify_block(name: str, body: str) -> bool:
    try:
        block: Any = Block.load(name)  # sync-compatible: a Block when called outside a coroutine
        block.notify(body)
    except Exception as exc:  # any block type, any transport: an alert never fails the flow
        logger.warning("Alert not delivered through Prefect block %r: %s", name, redact(str(exc)))
        return False
    return True
