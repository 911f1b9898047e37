"""``mlops status``: one screen of what runs where, for a person or (``--json``) a script.

Each part is read from where its tool keeps it: the deployment's state file and server
logs, the MLflow registry, the newest monitoring summary, the Prefect server's
schedules. A part that cannot be read says why on the screen instead of failing the
whole command.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException

from mlops import deployment, orchestration, tracking
from mlops.config import Settings
from mlops.prediction_log import read_prediction_log
from mlops.schedules import list_schedules

__all__ = ["AliasStatus", "MonitoringStatus", "ProjectStatus", "ServingStatus", "project_status"]

ALIASES = ("champion", "challenger", "previous")
WINDOW_SECONDS = 3600  # "the last hour" of traffic
# The guard's line for a refused request: "2026-12-02T01:07:05+0000 [INFO] ... POST /predict refused 422: ..."
_REFUSED_LINE = re.compile(rb"^(\S+) .* refused (\d{3}):")


@dataclass(frozen=True)
class ServingStatus:
    """The running deployment: what it serves, since when, whether it is healthy, its last hour of traffic."""

    model: str
    version: str
    alias: str
    url: str
    since: str
    healthy: bool
    ready: bool
    answered_last_hour: int  # records answered (the prediction log)
    refused_last_hour: dict[str, int] = field(default_factory=dict)  # HTTP status -> requests refused


@dataclass(frozen=True)
class AliasStatus:
    """One alias of the registered model and the version it names, with that version's gate decision."""

    alias: str
    version: str
    gate: str
    trigger: str
    created: str


@dataclass(frozen=True)
class MonitoringStatus:
    """The newest monitoring check: drift, quality and what it decided."""

    at: str
    drift_share: float | None
    threshold: float | None
    drifted_columns: list[str]
    quality: dict[str, float]
    retrain: bool
    reasons: list[str]
    report: str | None
    refused_requests: int | None = None  # refused at serving (422) while the window was logged


@dataclass(frozen=True)
class ProjectStatus:
    """Everything ``mlops status`` shows; ``problems`` names each part that could not be read and why."""

    model: str
    serving: ServingStatus | None
    aliases: list[AliasStatus]
    monitoring: MonitoringStatus | None
    schedules: list[dict[str, str]] | None  # None: no schedule server runs for this state folder
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def project_status(settings: Settings) -> ProjectStatus:
    """Read every part of the status; none of them changes anything."""
    problems: list[str] = []
    return ProjectStatus(
        model=settings.model.name,
        serving=_serving(settings),
        aliases=_aliases(settings, problems),
        monitoring=_monitoring(settings, problems),
        schedules=_schedules(settings, problems),
        problems=problems,
    )


def _serving(settings: Settings) -> ServingStatus | None:
    status = deployment.deployment_status(settings)
    if status.state is None:
        return None
    state = status.state
    since = time.time() - WINDOW_SECONDS
    return ServingStatus(
        model=state.model_name, version=str(state.backend.version), alias=state.alias, url=state.url,
        since=state.deployed_at, healthy=status.healthy, ready=status.ready,
        answered_last_hour=_answered_since(settings.predictions_dir, since),
        refused_last_hour=_refused_since(sorted((settings.state_dir / "logs").glob("serve-*.log*")), since),
    )  # fmt: skip


def _answered_since(folder: Path, since: float) -> int:
    """Records answered since ``since`` (epoch seconds), from the prediction log files written since then."""
    recent = [path for path in folder.glob("predictions-*") if path.stat().st_mtime >= since]
    if not recent:
        return 0

    frame = read_prediction_log(folder)
    if frame.empty or "timestamp" not in frame:
        return 0

    stamps = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce")
    return int((stamps >= pd.Timestamp(since, unit="s", tz="UTC")).sum())


def _refused_since(logs: list[Path], since: float) -> dict[str, int]:
    """Requests refused since ``since``, by HTTP status, from the guard's lines in the model servers' logs.

    Every server of the hour counts (a swap replaces the server, and with it the log file);
    a file last written before ``since`` is not read.
    """
    counts: dict[str, int] = {}
    for path in logs:
        try:
            if path.stat().st_mtime < since:
                continue
            with path.open("rb") as handle:
                lines = handle.readlines()
        except OSError:
            continue
        for line in lines:
            match = _REFUSED_LINE.match(line)
            if match is None:
                continue
            try:
                at = datetime.strptime(match.group(1).decode(), "%Y-%m-%dT%H:%M:%S%z").timestamp()
            except ValueError:
                continue
            if at >= since:
                status = match.group(2).decode()
                counts[status] = counts.get(status, 0) + 1
    return dict(sorted(counts.items()))


def _aliases(settings: Settings, problems: list[str]) -> list[AliasStatus]:
    try:
        versions = tracking.list_versions(settings.model.name)
    except MlflowException as exc:
        problems.append(f"registry: cannot be read ({exc.message.splitlines()[0]}); is the tracking server up? Try `mlops doctor`.")
        return []
    named = []
    for alias in ALIASES:
        for version in versions:
            if alias in version.aliases:
                tags = version.tags
                named.append(AliasStatus(alias, version.version, tags.get("mlops.gate.decision", ""), tags.get("mlops.trigger", ""), version.created))
    return named


def _monitoring(settings: Settings, problems: list[str]) -> MonitoringStatus | None:
    summaries = sorted(settings.reports_dir.glob("drift-*.json"), key=lambda path: path.stat().st_mtime)
    if not summaries:
        return None
    newest = summaries[-1]
    try:
        summary = json.loads(newest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        problems.append(f"monitoring: {newest} cannot be read ({exc}); run `mlops monitor` again.")
        return None
    decision = summary.get("decision") or {}
    reasons = list(decision.get("triggers") or [])
    if decision.get("blocked_by"):
        reasons.append(f"blocked: {decision['blocked_by']}")
    return MonitoringStatus(
        at=datetime.fromtimestamp(newest.stat().st_mtime).astimezone().isoformat(timespec="seconds"),
        drift_share=summary.get("drift_share"), threshold=summary.get("threshold"),
        drifted_columns=list(summary.get("drifted_columns") or []), quality=dict(summary.get("quality") or {}),
        retrain=bool(decision.get("retrain")), reasons=reasons, report=summary.get("report_path"),
        refused_requests=(summary.get("refused") or {}).get("requests"),
    )  # fmt: skip


def _schedules(settings: Settings, problems: list[str]) -> list[dict[str, str]] | None:
    api_url = settings.prefect_api_url
    if not api_url:
        server = orchestration.find_local_server(settings)
        if server is None:
            return None
        api_url = server.api_url
    try:
        with orchestration.using_api(api_url):
            return list_schedules()
    except Exception as exc:  # noqa: BLE001 — any failure of the Prefect client: shown, the rest still printed
        problems.append(f"schedules: the Prefect server at {api_url} cannot be read ({type(exc).__name__}); is it up?")
        return None
