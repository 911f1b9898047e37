"""The whole loop on the bundled data, as ``mlops demo`` runs it.

validate + train + register (training flow) → import the champion into BentoML
and serve it → send real HTTP requests, the shifted batch included → measure
drift on the logged predictions (monitoring flow) → retrain (child flow run)
→ stop the server. Works on a clean state folder and on an existing one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console

from flows.monitoring import MonitoringOutcome, monitoring_flow
from flows.training import TrainingOutcome, training_flow
from mlops import data, serving
from mlops.config import Settings
from mlops.prediction_log import read_prediction_log

__all__ = ["DemoSummary", "run_demo"]

REFERENCE_REQUESTS = 20  # unshifted rows sent before the shifted batch


@dataclass
class DemoSummary:
    """Everything the demo produced, for the closing summary."""

    training: TrainingOutcome | None = None
    served_version: str | None = None
    endpoint_url: str | None = None
    records_sent: int = 0
    rejected_records: int = 0
    failed_requests: int = 0
    monitoring: MonitoringOutcome | None = None
    tracking_uri: str = ""
    stage_seconds: dict[str, float] = field(default_factory=dict)


def run_demo(settings: Settings, console: Console | None = None) -> DemoSummary:
    """Run the loop end to end and return what it produced; the server is always stopped."""
    console = console or Console(stderr=True)
    # A showcase retrains on every run: lift the cooldown and daily cap the policy
    # would otherwise apply to a second run on the same state folder.
    settings = settings.model_copy(
        update={"monitoring": settings.monitoring.model_copy(update={"cooldown_minutes": 0, "max_retrains_per_day": 10**6})}
    )
    summary = DemoSummary(tracking_uri=settings.tracking_uri_shown)
    with _stage(summary, console, "validate + train + register"):
        summary.training = training_flow(settings)
    with _stage(summary, console, "package + serve"):
        summary.served_version = serving.resolve_alias(settings.model.name, settings.serving.alias)
        tag = serving.import_model(settings.model.name, summary.served_version)
        server = serving.start_server(settings, tag, port=serving.free_port())
    try:
        summary.endpoint_url = server.url
        with _stage(summary, console, "send traffic"):
            summary.records_sent, summary.rejected_records, summary.failed_requests = _send_traffic(settings, server.url)
        with _stage(summary, console, "monitor + retrain"):
            summary.monitoring = monitoring_flow(settings)
    finally:
        server.stop()
    _save_stage_times(settings, summary)
    return summary


def _save_stage_times(settings: Settings, summary: DemoSummary) -> None:
    """Stage timings as JSON beside the reports, for benchmarks and dashboards."""
    path = settings.reports_dir / "demo-stages.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary.stage_seconds, indent=2) + "\n", encoding="utf-8")


def _send_traffic(settings: Settings, url: str) -> tuple[int, int, int]:
    """POST reference rows, then the shifted batch, one record per request.

    Returns (records sent, records the data contract rejected with 422, failed requests):
    a 422 is the contract working, anything else non-2xx is a failure.
    """
    import httpx

    target = settings.data.target
    reference = data.load_table(settings.data.training).head(REFERENCE_REQUESTS)
    shifted = data.load_table(settings.data.current)
    truth = reference[target].tolist() + (shifted[target].tolist() if target in shifted else [None] * len(shifted))
    records = reference.drop(columns=[target]).to_dict("records") + shifted.drop(columns=[target], errors="ignore").to_dict("records")
    already_logged = len(read_prediction_log(settings.predictions_dir))
    statuses, answered = [], []
    with httpx.Client(base_url=url, timeout=30) as client:
        for record, label in zip(records, truth):
            response = client.post("/predict", json={"records": [record]})
            statuses.append(response.status_code)
            if response.status_code == 200 and label is not None:
                answered.append({"request_id": response.json()["request_id"], "record": 0, "label": label})
    served, rejected = statuses.count(200), statuses.count(422)
    _wait_for_log(settings, already_logged + served)
    _label(settings, answered)
    return len(records), rejected, len(statuses) - served - rejected


def _label(settings: Settings, answered: list[dict]) -> None:
    """The ground truth of the served rows arrives later, into the label store (as POST /labels will)."""
    import pandas as pd

    from mlops import contract, labels

    if answered:
        target = contract.load_contract(settings.data.contract).target_column
        labels.add_labels(pd.DataFrame(answered), settings.labels_dir, target, source="demo")


def _wait_for_log(settings: Settings, rows: int, timeout: float = 15.0) -> None:
    """The endpoint logs asynchronously: give it a moment to flush before monitoring reads."""
    deadline = time.monotonic() + timeout
    while len(read_prediction_log(settings.predictions_dir)) < rows and time.monotonic() < deadline:
        time.sleep(0.2)


@contextmanager
def _stage(summary: DemoSummary, console: Console, name: str) -> Iterator[None]:
    started = time.perf_counter()
    with console.status(f"[bold]{name}[/bold] …"):
        yield
    summary.stage_seconds[name] = time.perf_counter() - started
    console.print(f"[green]✓[/green] {name} ({summary.stage_seconds[name]:.1f} s)")
