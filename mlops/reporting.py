"""Human-readable summaries of what the flows did, for the terminal.

Takes the flows' outcome objects by their named fields (duck-typed), so the
library never imports ``flows``.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["print_demo", "print_monitoring", "print_schedules", "print_training", "print_versions"]


def print_training(outcome: Any, console: Console | None = None) -> None:
    """Registered version, holdout metrics and the gate's decision."""
    console = console or Console()
    registered, decision = outcome.registered, outcome.decision
    verdict = (
        "[green]promoted to champion[/green]" if decision.promoted
        else f"[yellow]waits for approval (mlops promote {registered.version})[/yellow]" if decision.waiting
        else "[yellow]kept as challenger[/yellow]"
    )
    console.print(f"Registered [bold]{registered.name}[/bold] v{registered.version} (run {registered.run_id}): {verdict}")
    console.print(f"  gate: {decision.reason}")
    console.print("  holdout: " + ", ".join(f"{name}={value:.4f}" for name, value in registered.metrics.items()))
    console.print(f"  validation report: {outcome.validation_report}")


def print_monitoring(outcome: Any, console: Console | None = None) -> None:
    """Drift figures, report paths and the retraining it triggered, if any."""
    console = console or Console()
    drift = outcome.drift
    console.print(drift.summary())
    console.print(f"  drift report: {drift.report_path}")
    console.print(f"  drift summary: {outcome.summary_path}")
    if getattr(outcome, "labels", None) is not None:
        console.print(f"  labels: {outcome.labels.summary()}")
    for name, value in getattr(outcome, "quality", {}).items():
        console.print(f"  quality on labeled rows: {name}={value:.4f}")
    if getattr(outcome, "mlflow_run_id", None):
        console.print(f"  recorded as MLflow run {outcome.mlflow_run_id}")
    if outcome.retrain is not None:
        reasons = "; ".join(getattr(outcome.decision, "triggers", ()) or ()) or "drift"
        console.print(f"[bold]Retraining triggered ({reasons}):[/bold]")
        print_training(outcome.retrain, console)
    elif getattr(outcome, "decision", None) is not None:
        console.print(outcome.decision.explain())


def print_demo(summary: Any, console: Console | None = None) -> None:
    """The closing table of ``mlops demo``."""
    # Piped output gets room for whole lines rather than an 80-column guess.
    console = console or Console(width=None if sys.stdout.isatty() else 140)
    table = Table(title="mlops demo", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    training = summary.training
    table.add_row("training run", f"{training.registered.run_id} → v{training.registered.version}")
    table.add_row("champion served", f"v{summary.served_version} at {summary.endpoint_url} (stopped)")
    table.add_row(
        "requests",
        f"{summary.records_sent} records sent, {summary.rejected_records} rejected by the contract (422), "
        f"{summary.failed_requests} failed requests",
    )
    monitoring = summary.monitoring
    drift = monitoring.drift
    table.add_row("drift", f"{len(drift.drifted_columns)}/{len(drift.columns)} columns drifted ({drift.drift_share:.0%})")
    table.add_row("drift report", str(drift.report_path))
    if monitoring.retrain is not None:
        retrain = monitoring.retrain
        decision = (
            "promoted to champion" if retrain.decision.promoted
            else f"waits for approval (mlops promote {retrain.registered.version})" if retrain.decision.waiting
            else "kept as challenger"
        )
        table.add_row("retrained", f"v{retrain.registered.version} (run {retrain.registered.run_id}): {decision}")
        table.add_row("gate", retrain.decision.reason)
    else:
        decision = getattr(monitoring, "decision", None)
        table.add_row("retrained", decision.explain() if decision is not None else "no")
    table.add_row("validation report", str(training.validation_report))
    table.add_row("MLflow store", summary.tracking_uri)
    table.add_row("MLflow UI", "mlops ui  →  http://127.0.0.1:5000")
    table.add_row("stages", ", ".join(f"{name} {seconds:.1f}s" for name, seconds in summary.stage_seconds.items()))
    console.print(table)


def print_schedules(rows: list[dict[str, str]], console: Console | None = None) -> None:
    """The scheduled deployments and their next runs."""
    console = console or Console()
    if not rows:
        console.print("No schedules yet. Start them with `mlops schedule`.")
        return
    table = Table(title="Schedules")
    for column in ("deployment", "schedule", "paused", "next run (UTC)"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["deployment"], row["schedule"], row["paused"], row["next_run"])
    console.print(table)


def print_versions(name: str, versions: Any, metric: str, console: Console | None = None) -> None:
    """``mlops compare``: one row per registered version, newest first."""
    # Piped output gets room for every column rather than an 80-column guess.
    console = console or Console(width=None if sys.stdout.isatty() else 200)
    metric_names = list(dict.fromkeys(m for version in versions for m in version.metrics))
    table = Table(title=f"{name}: registered versions (primary metric: {metric})")
    for column in ("version", "aliases", *metric_names, "trigger", "gate", "created"):
        table.add_column(column, style="bold" if column == metric else None, no_wrap=True)
    for version in versions:
        metrics = [f"{version.metrics[m]:.4f}" if m in version.metrics else "" for m in metric_names]
        gate = version.tags.get("mlops.gate.decision", "")
        table.add_row(
            version.version, ", ".join(version.aliases), *metrics,
            version.tags.get("mlops.trigger", ""), gate, version.created,
        )
    console.print(table)
