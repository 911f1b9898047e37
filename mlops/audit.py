"""The audit log: one JSON line for every change to what serves or what will run.

Promotions (the gate's and by hand), rollbacks (by hand, and a deploy's automatic alias
roll-back), deployments, schedule changes and retrain triggers each append one line to
``<state_dir>/audit.jsonl``: who (``MLOPS_ACTOR``, else the OS user), when, what
(``kind``), why (``reason``) and from which model version and run. Writers append under
a file lock, so concurrent commands never interleave lines. The line is mirrored on the
model version as the MLflow tag ``mlops.audit.<kind>``::

    record(settings, "promote", version="3", reason="checked the recent rows")
    read_audit(settings, limit=5)  # newest first

Secrets never enter it: URL credentials and the configured secrets (tracking URI,
webhook URL, API key) are masked in every value.
"""

from __future__ import annotations

import getpass
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
from filelock import FileLock
from mlflow.exceptions import MlflowException

from mlops.config import Settings

__all__ = ["AUDIT_FILE", "KINDS", "actor", "append_entry", "read_audit", "record"]

AUDIT_FILE = "audit.jsonl"
KINDS = ("gate", "promote", "rollback", "deploy", "deploy_rollback", "schedule", "retrain")
TAG_PREFIX = "mlops.audit."
_MASK = "***"
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
_TAG_LIMIT = 5000  # MLflow's longest tag value


def actor() -> str:
    """Who acts: ``MLOPS_ACTOR`` (a CI job, a scheduler), else the OS user."""
    given = os.environ.get("MLOPS_ACTOR", "").strip()
    if given:
        return given
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def record(
    settings: Settings,
    kind: str,
    *,
    reason: str,
    version: str | None = None,
    run_id: str | None = None,
    **details: Any,
) -> dict[str, Any]:
    """Append one audit line for ``kind`` and mirror it on the model version's tags; returns the entry."""
    if kind not in KINDS:
        raise ValueError(f"unknown audit kind {kind!r}; one of {KINDS}")
    version = None if version is None else str(version)
    if version is not None and run_id is None:
        run_id = _run_id(settings.model.name, version)
    entry = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "by": actor(),
        "kind": kind,
        "model": settings.model.name,
        "version": version,
        "run_id": run_id,
        "reason": reason,
        **details,
    }
    entry = _masked(entry, _secrets(settings))
    append_entry(settings.state_dir / AUDIT_FILE, entry)
    _tag(settings.model.name, version, kind, entry)
    return entry


def append_entry(path: Path, entry: dict[str, Any]) -> None:
    """Append ``entry`` as one line, under a lock beside the file (concurrent writers never interleave)."""
    line = json.dumps(entry, default=str, ensure_ascii=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock", timeout=30), path.open("a", encoding="utf-8") as log:
        log.write(line)
        log.flush()
        os.fsync(log.fileno())


def read_audit(settings: Settings, limit: int | None = None, kinds: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """The audit entries, newest first (at most ``limit``, only ``kinds`` if given)."""
    path = settings.state_dir / AUDIT_FILE
    if not path.is_file():
        return []
    entries = []
    for line in reversed(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        entry = json.loads(line)
        if kinds is None or entry.get("kind") in kinds:
            entries.append(entry)
        if limit is not None and len(entries) >= limit:
            break
    return entries


def _tag(name: str, version: str | None, kind: str, entry: dict[str, Any]) -> None:
    """The latest event of each kind, ``mlops.audit.<kind>`` = its JSON line, on the version
    (or, for an event of no version such as a schedule change, on the registered model if there is one)."""
    client, key = mlflow.MlflowClient(), TAG_PREFIX + kind
    value = json.dumps(entry, default=str, ensure_ascii=False)[:_TAG_LIMIT]
    if version is not None:
        client.set_model_version_tag(name, version, key, value)
        return
    try:
        client.set_registered_model_tag(name, key, value)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":  # no model registered yet: the log line is the record
            raise


def _run_id(name: str, version: str) -> str | None:
    try:
        return mlflow.MlflowClient().get_model_version(name, version).run_id or None
    except MlflowException:
        return None


def _secrets(settings: Settings) -> list[str]:
    """The configured secret values, longest first (a secret holding another is masked whole)."""
    values = [settings.tracking_uri, settings.alerts.webhook_url]
    secrets = [value.get_secret_value() for value in values if value is not None]
    secrets.append(os.environ.get(settings.serving.api_key_env, ""))
    return sorted((secret for secret in secrets if len(secret) >= 4), key=len, reverse=True)


def _masked(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, dict):
        return {key: _masked(item, secrets) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(item, secrets) for item in value]
    if not isinstance(value, str):
        return value
    for secret in secrets:
        value = value.replace(secret, _MASK)
    return _URL_CREDENTIALS.sub(rf"\g<scheme>{_MASK}@", value)
