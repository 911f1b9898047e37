"""Human-readable summaries of what the flows did, for the terminal.

Takes the flows' outcome objects by their named fields (duck-typed), so the
library never imports ``flows``. :func:`find_reports` lists the reports people open
(drift, validation, model cards) from the file names alone, so ``mlops report``
needs neither MLflow nor pandas.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape as e
from rich.table import Table

__all__ = [
    "ReportFile",
    "find_reports",
    "model_card_of",
    "print_demo",
    "print_monitoring",
    "print_reports",
    "print_schedules",
    "print_training",
    "print_versions",
]


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
    if getattr(outcome, "refused", None) is not None:
        console.print(f"  {outcome.refused.summary()}", style="yellow" if outcome.refused.requests else None)
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


@dataclass(frozen=True)
class ReportFile:
    """One report on disk: what it is about, where, when it was written, and (model cards) the version."""

    kind: str  # drift | validation | model card
    path: Path
    modified: datetime
    version: str | None = None


# The flows' file names (mlops.tasks): drift-*, validation-*, contract-current-* (the current batch's contract check).
_KINDS = (("drift-", "drift"), ("validation-", "validation"), ("contract-current-", "validation"))
_CARD_HEADING = re.compile(r"^#\s+.*\bv(\d+)\s*$")


def find_reports(reports_dir: Path, artifacts_dir: Path | None = None) -> list[ReportFile]:
    """The HTML reports in ``reports_dir`` and the model cards under ``artifacts_dir``, newest first.

    Model cards are the training runs' ``model_card.md`` artifacts (a local MLflow
    artifact store); the version is read from the card's heading (``# name vN``).
    """
    found = [
        ReportFile(kind, path, _modified(path))
        for path in (reports_dir.glob("*.html") if reports_dir.is_dir() else ())
        for kind in [next((kind for prefix, kind in _KINDS if path.name.startswith(prefix)), "report")]
    ]
    if artifacts_dir is not None and artifacts_dir.is_dir():
        found += [ReportFile("model card", path, _modified(path), _card_version(path))
                  for path in artifacts_dir.rglob("model_card.md")]
    return sorted(found, key=lambda report: report.modified, reverse=True)


def model_card_of(reports: list[ReportFile], version: str) -> ReportFile | None:
    """The newest model card of ``version`` among ``reports``."""
    return next((r for r in reports if r.kind == "model card" and r.version == str(version).lstrip("v")), None)


def print_reports(reports: list[ReportFile], console: Console | None = None) -> None:
    """``mlops report``: one row per report, newest first."""
    # Piped output gets room for whole paths rather than an 80-column guess.
    console = console or Console(width=None if sys.stdout.isatty() else 240)
    table = Table(title="Reports, newest first")
    for column in ("written", "kind", "path"):
        table.add_column(column, no_wrap=column != "path", overflow="fold")
    for report in reports:
        kind = f"{report.kind} v{report.version}" if report.version else report.kind
        table.add_row(report.modified.strftime("%Y-%m-%d %H:%M:%S"), kind, str(report.path))
    console.print(table)


def _modified(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime)


def _card_version(path: Path) -> str | None:
    with path.open(encoding="utf-8", errors="replace") as card:
        match = _CARD_HEADING.match(card.readline().strip())
    return match.group(1) if match else None


def print_status(status: Any, console: Console | None = None) -> None:
    """``mlops status``: one grid, a row per part, what needs attention in red."""
    console = console or Console(width=None if sys.stdout.isatty() else 200)
    grid = Table(title=f"{e(status.model)}: status", show_header=False, box=None, padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    serving = status.serving
    if serving is None:
        grid.add_row("serving", "nothing deployed (`mlops deploy`)")
    else:
        health = "[green]healthy[/]" if serving.healthy else ("[yellow]answering, not every part up[/]" if serving.ready else "[red]DOWN[/]")
        refused = ", ".join(f"{count} × {code}" for code, count in serving.refused_last_hour.items()) or "none"
        grid.add_row("serving", f"v{e(serving.version)} ({e(serving.alias)}) at {e(serving.url)} since {e(serving.since)}: {health}")
        grid.add_row("", f"last hour: {serving.answered_last_hour} records answered; refused: {refused}")
    if not status.aliases:
        grid.add_row("registry", "no alias set (`mlops train`)")
    for index, alias in enumerate(status.aliases):
        details = e(" · ".join(part for part in (alias.gate, alias.trigger, f"created {alias.created}") if part))
        grid.add_row("registry" if index == 0 else "", f"{e(alias.alias)} v{e(alias.version)}: {details}")
    monitoring = status.monitoring
    if monitoring is None:
        grid.add_row("monitoring", "no check yet (`mlops monitor`)")
    else:
        share = f"{monitoring.drift_share:.0%} of columns drifted" if monitoring.drift_share is not None else "drift not measured"
        limit = f" (threshold {monitoring.threshold:.0%})" if monitoring.threshold is not None else ""
        columns = e(", ".join(monitoring.drifted_columns[:4])) + (", …" if len(monitoring.drifted_columns) > 4 else "")
        grid.add_row("monitoring", f"{monitoring.at}: {share}{limit}" + (f": {columns}" if columns else ""))
        if monitoring.quality:
            grid.add_row("", ", ".join(f"{name} {value:.3f}" for name, value in monitoring.quality.items()))
        if monitoring.refused_requests:
            grid.add_row("", f"[yellow]{monitoring.refused_requests} requests refused at serving (422)[/] in the window")
        decision = "[yellow]retrain[/]: " + e("; ".join(monitoring.reasons)) if monitoring.retrain else "no retrain"
        grid.add_row("", decision + (f"  report: {e(monitoring.report)}" if monitoring.report else ""))
    if status.schedules is None:
        grid.add_row("schedules", "no schedule server runs (`mlops schedule`)")
    elif not status.schedules:
        grid.add_row("schedules", "the schedule server has no scheduled flow (`mlops schedule`)")
    for index, row in enumerate(status.schedules or []):
        paused = " [yellow](paused)[/]" if row.get("paused") == "True" else ""
        grid.add_row("schedules" if index == 0 else "", f"{e(row['deployment'])}: {e(row['schedule'])}; next {e(row['next_run'])}{paused}")
    for problem in status.problems:
        grid.add_row("[red]problem[/]", e(problem))
    console.print(grid)
