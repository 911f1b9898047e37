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
    """Drift figures, report paths, the shadow comparison and the retraining it triggered, if any."""
    console = console or Console()
    drift = outcome.drift
    console.print(drift.summary())
    console.print(f"  drift report: {drift.report_path}")
    console.print(f"  drift summary: {outcome.summary_path}")
    if getattr(outcome, "labels", None) is not None:
        console.print(f"  labels: {outcome.labels.summary()}")
    for name, value in getattr(outcome, "quality", {}).items():
        console.print(f"  quality on labeled rows: {name}={value:.4f}")
    if getattr(outcome, "shadow", None) is not None:
        for line in outcome.shadow.summary().splitlines():
            console.print(f"  {line}")
    if getattr(outcome, "mlflow_run_id", None):
        console.print(f"  recorded as MLflow run {outcome.mlflow_run_id}")
    if outcome.retrain is not None:
        reasons = "; ".join(getattr(outcome.decision, "triggers", ()) or ()) or "drift"
        console.print(f"[bold]Retraining triggered ({reasons}):[/bold]")
        print_training(outcome.retrain, console)
    elif getattr(outcome, "decision", None) is not None:
        console.print(outcome.decision.explain())


def print_demo(summary: Any, console: Console | None = None) -> None:
    """The closing table of ``mlops demo``: what changed, on what evidence, and what the client saw."""
    # Piped output gets room for whole lines rather than an 80-column guess.
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title="mlops demo", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    training, monitoring, metric = summary.training, summary.monitoring, summary.metric
    retrain = monitoring.retrain if monitoring is not None else None
    if retrain is not None:
        table.add_row("outcome", _demo_outcome(summary, retrain))
    table.add_row("champion", f"v{summary.served_version} (training run {training.registered.run_id}), "
                  f"served at {summary.endpoint_url} (stopped)")
    answers = summary.answers
    shifted = sum(1 for answer in answers if answer.shifted)
    table.add_row("traffic", f"{len(answers)} requests ({len(answers) - shifted} like the training data, then "
                  f"{shifted} {summary.traffic_after}), {summary.refused_records} refused by the contract (422), "
                  f"{summary.failed_requests} failed requests")
    table.add_row("labels", f"{summary.labels_accepted} stored through POST /labels, {summary.labels_refused} refused")
    if monitoring is not None:
        drift = monitoring.drift
        table.add_row("drift", f"{len(drift.drifted_columns)}/{len(drift.columns)} columns drifted "
                      f"({drift.drift_share:.0%}): {', '.join(drift.drifted_columns[:4])}"
                      + (", …" if len(drift.drifted_columns) > 4 else ""))
        labeled = monitoring.labels.labeled_rows if monitoring.labels is not None else 0
        quality = ", ".join(f"{name} {value:.3f}" for name, value in monitoring.quality.items())
        table.add_row("quality (labeled window)", f"{quality or 'not measured'} on {labeled} labeled rows")
    if retrain is not None:
        decision = retrain.decision
        verdict = ("promoted to champion" if decision.promoted
                   else f"waits for approval (mlops promote {retrain.registered.version})" if decision.waiting
                   else "kept as challenger")
        table.add_row("retrained", f"v{retrain.registered.version} (run {retrain.registered.run_id}): {verdict}")
        if decision.recent_rows and decision.recent_champion_score is not None:
            table.add_row("recent data (gate)", f"{metric} v{decision.champion_version} {decision.recent_champion_score:.3f} "
                          f"→ v{decision.challenger_version} {decision.recent_challenger_score:.3f} on the "
                          f"{decision.recent_rows} newest labeled rows (never trained on)")
        table.add_row("gate", decision.reason)
    elif monitoring is not None and monitoring.decision is not None:
        table.add_row("retrained", monitoring.decision.explain())
    live = summary.live_accuracy()
    if live:
        table.add_row("live accuracy (client)", " → ".join(
            f"v{version} {accuracy:.3f} on {count} answers ({summary.traffic_after})"
            for version, (accuracy, count) in live.items()))
    spans = summary.versions_over_time()
    if spans:
        table.add_row("versions serving", " → ".join(
            f"v{version} {_clock(first)}–{_clock(last)} ({count} answers)" for version, first, last, count in spans))
    if summary.swap is not None:
        swap = summary.swap
        table.add_row("swap", f"v{swap.from_version} → v{swap.to_version} in {swap.finished - swap.started:.1f} s: "
                      f"{swap.answered} requests answered during the swap, {swap.failed} failed")
    if monitoring is not None and monitoring.drift.report_path:
        table.add_row("drift report", str(monitoring.drift.report_path))
    table.add_row("validation report", str(training.validation_report))
    table.add_row("MLflow store", summary.tracking_uri)
    table.add_row("MLflow UI", "mlops ui  →  http://127.0.0.1:5000")
    table.add_row("stages", ", ".join(f"{name} {seconds:.1f}s" for name, seconds in summary.stage_seconds.items()))
    for note in summary.notes:
        table.add_row("note", note)
    console.print(table)


def _demo_outcome(summary: Any, retrain: Any) -> str:
    """The one line that matters: did the loop replace the champion, and did any client notice."""
    decision = retrain.decision
    if decision.promoted and summary.swap is not None:
        return (f"[green]v{decision.challenger_version} replaced v{summary.served_version}[/green]: retrained on "
                f"the labeled traffic, better on the recent data, serving with {summary.failed_requests} failed requests")
    if decision.promoted:
        return f"v{decision.challenger_version} promoted to champion (no swap recorded)"
    return f"[yellow]v{retrain.registered.version} not promoted[/yellow]: {decision.reason}"


def _clock(timestamp: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(timestamp).strftime("%H:%M:%S")


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
